"""A room's events: a page of them, one of them, and one in its context.

- ``GET /v1/rooms/{room_id}/events``: the events of a time range, filtered, cursor-paged;
- ``GET /v1/rooms/{room_id}/events/{event_id}``: one event of the room;
- ``GET /v1/rooms/{room_id}/events/{event_id}/context``: the event and the events just before and after
  it in the room (a reported message in its conversation), under the same grant and audit as any read.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import asyncpg
from starlette.responses import Response

from pipeline.api.context import Call, JSONResponse
from pipeline.api.errors import InvalidParameter, NotFound
from pipeline.api.handlers.paging import finish_page, page_of_events, page_request
from pipeline.api.params import resolve_range
from pipeline.api.queries.events import event_json, events_around, one_event, room_events
from pipeline.api.security.access import Action
from pipeline.api.security.cursors import binding

__all__ = ["CONTEXT_MAX", "event_context", "get_event", "list_events"]

_DEFAULT_SPAN = timedelta(days=1)
_CONTEXT_DEFAULT = 10
#: Most events an event's context shows on either side.
CONTEXT_MAX = 50


async def list_events(call: Call) -> Response:
    """GET /v1/rooms/{room_id}/events"""
    room_id = call.path("room_id")
    p = call.params
    explicit = p.explicit_range()
    filters = p.filters()
    order, limit, cursor = page_request(call)
    p.done()
    s = call.settings
    bound = binding("events", room_id, filters.as_dict(), order, call.identity.caller_key)
    asked: dict[str, Any] = {**filters.as_dict(), "order": order, "limit": limit, "page": cursor is not None}
    async with call.connection() as conn:
        grant = await call.authorize_room(conn, room_id, Action.READ, asked)
        after, from_cursor = call.state.cursors.decode(cursor, bound) if cursor else (None, None)
        rng = resolve_range(
            explicit, from_cursor, call.params.now, default=_DEFAULT_SPAN, max_days=s.max_range_days
        )
        rows = await room_events(conn, room_id, rng, filters, order, after, limit)
        rows, next_cursor = await finish_page(call, conn, grant, asked, rng, rows, limit, bound)
    return JSONResponse(page_of_events(call, {"room_id": room_id}, rng, rows, next_cursor))


async def get_event(call: Call) -> Response:
    """GET /v1/rooms/{room_id}/events/{event_id}"""
    room_id = call.path("room_id")
    event_id = _event_id(call)
    call.params.done()
    asked = {"event_id": str(event_id)}
    async with call.connection() as conn:
        grant = await call.authorize_room(conn, room_id, Action.READ, asked)
        row = await one_event(conn, room_id, event_id)
        if row is None:
            raise NotFound("no such event in this room")
        await call.audit(conn, call.entry(grant=grant, filters=asked, row_count=1))
    call.state.metrics.rows.labels(call.route).inc()
    return JSONResponse(event_json(row))


async def event_context(call: Call) -> Response:
    """GET /v1/rooms/{room_id}/events/{event_id}/context"""
    room_id = call.path("room_id")
    event_id = _event_id(call)
    p = call.params
    before = p.integer("before", default=_CONTEXT_DEFAULT, low=0, high=CONTEXT_MAX)
    after = p.integer("after", default=_CONTEXT_DEFAULT, low=0, high=CONTEXT_MAX)
    p.done()
    assert before is not None and after is not None
    asked: dict[str, Any] = {"event_id": str(event_id), "before": before, "after": after}
    async with call.connection() as conn:
        grant = await call.authorize_room(conn, room_id, Action.READ, asked)
        event = await one_event(conn, room_id, event_id)
        earlier: list[asyncpg.Record] = []
        later: list[asyncpg.Record] = []
        if event is not None:
            earlier = await events_around(conn, room_id, event, "<", before)
            later = await events_around(conn, room_id, event, ">", after)
        rows = (0 if event is None else 1) + len(earlier) + len(later)
        await call.audit(conn, call.entry(grant=grant, filters=asked, row_count=rows))
    if event is None:
        raise NotFound("no such event in this room")
    call.state.metrics.rows.labels(call.route).inc(rows)
    return JSONResponse(
        {
            "room_id": room_id,
            "event": event_json(event),
            "before": [event_json(r) for r in reversed(earlier)],
            "after": [event_json(r) for r in later],
        }
    )


def _event_id(call: Call) -> uuid.UUID:
    raw = str(call.request.path_params["event_id"])
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise InvalidParameter("event_id must be a UUID", details={"parameter": "event_id"}) from None
