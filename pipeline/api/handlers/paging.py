"""Pages of events: the order, size and cursor a request asks for, and the page it gets back.

Shared by the paginated reads (`events.list_events`, `moderation.moderation_history`): a page holds at
most `limit` events, and `next_cursor` (signed, bound to the query and the caller) fetches the next one.
"""

from __future__ import annotations

from typing import Any

import asyncpg

from pipeline.api.context import Call
from pipeline.api.params import TimeRange
from pipeline.api.queries.events import event_json
from pipeline.api.security.access import Grant

__all__ = ["ORDERS", "finish_page", "page_of_events", "page_request"]

#: `order` of a page: newest first unless asked
ORDERS = ("desc", "asc")


def page_request(call: Call) -> tuple[str, int, str | None]:
    """(order, limit, cursor) of the request."""
    p = call.params
    order = p.choice("order", ORDERS, "desc")
    limit = p.integer(
        "limit", default=call.settings.default_page_size, low=1, high=call.settings.max_page_size
    )
    assert limit is not None
    return order, limit, p.cursor()


async def finish_page(
    call: Call,
    conn: asyncpg.Connection,
    grant: Grant,
    asked: dict[str, Any],
    rng: TimeRange,
    rows: list[asyncpg.Record],
    limit: int,
    bound: str,
) -> tuple[list[asyncpg.Record], str | None]:
    """The page (`rows` holds up to `limit` + 1) and the cursor of the next one; the read audited."""
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        last = rows[-1]
        position = (last["occurred_at"], last["event_id"])
        next_cursor = call.state.cursors.encode(bound, position, (rng.since, rng.until))
    await call.audit(
        conn,
        call.entry(grant=grant, filters={**asked, **rng.as_dict()}, row_count=len(rows)),
    )
    return rows, next_cursor


def page_of_events(
    call: Call,
    about: dict[str, Any],
    rng: TimeRange,
    rows: list[asyncpg.Record],
    next_cursor: str | None,
    **more: Any,
) -> dict[str, Any]:
    """The answer: what the page is `about` (a room or user), its range, `more`, its events, the cursor."""
    call.state.metrics.rows.labels(call.route).inc(len(rows))
    return {
        **about,
        "since": rng.since,
        "until": rng.until,
        **more,
        "events": [event_json(r) for r in rows],
        "next_cursor": next_cursor,
    }
