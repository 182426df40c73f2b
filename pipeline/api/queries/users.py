"""One user's record in a room: ``GET /v1/rooms/{room_id}/users/{user_id}`` and ``.../events``'s SQL.

Called by the route handlers after authorization on the room. What the user did comes from the rollups
(`pipeline.storage.rollups.actor_days`: exact, a few index probes per day); what was done to them (warned,
muted, kicked, banned, gifts and permission changes they received) from the events that name them as
target, through `events_target_time` (target_id, occurred_at), the index a user's moderation history
reads.

A user's own events are paged without an index of their own (one on (room_id, actor_id, occurred_at)
would cost every ingested row a third index entry): the rollups say on which days the user acted and
between which times, so a page reads `events_room_time` only inside those windows, newest day first, and
stops when it is full. A user who spoke once in a busy day reads that moment, not the day.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime

import asyncpg

from pipeline.api.params import TimeRange
from pipeline.api.queries.events import Position, Sql, keyset, ordered_select
from pipeline.storage import rollups

__all__ = ["Window", "actor_days", "actor_events", "actor_windows", "received", "target_events"]

_RECEIVED_SQL = """
SELECT event_type AS type, count(*)::bigint AS n, min(occurred_at) AS first_at, max(occurred_at) AS last_at
  FROM events
 WHERE target_id = $2 AND occurred_at >= $3 AND occurred_at < $4 AND room_id = $1
 GROUP BY 1 ORDER BY 1
"""


@dataclass(frozen=True, slots=True)
class Window:
    """Where a user's events of one UTC day lie: first_at..last_at, both inclusive."""

    first_at: datetime
    last_at: datetime


async def actor_days(
    conn: asyncpg.Connection, room_id: str, user_id: str, first: date, last: date, types: list[str]
) -> list[asyncpg.Record]:
    """(day, type, n, first_at, last_at, display_name) of what the user did in first..last."""
    return await rollups.actor_days(conn, room_id, user_id, first, last, types)


async def received(
    conn: asyncpg.Connection, room_id: str, user_id: str, since: datetime, until: datetime
) -> list[asyncpg.Record]:
    """(type, n, first_at, last_at) of the room's events in since..until whose target is the user."""
    return list(await conn.fetch(_RECEIVED_SQL, room_id, user_id, since, until))


async def actor_windows(
    conn: asyncpg.Connection, room_id: str, user_id: str, rng: TimeRange, types: list[str]
) -> list[Window]:
    """The user's windows within the range, one per UTC day with any of their events of `types`, in day
    order, clipped to the range."""
    first, last = rng.since.date(), rng.until.date()
    out: list[Window] = []
    by_day: dict[date, Window] = {}
    for r in await rollups.actor_days(conn, room_id, user_id, first, last, types):
        w = by_day.get(r["day"])
        lo, hi = r["first_at"], r["last_at"]
        by_day[r["day"]] = Window(lo, hi) if w is None else Window(min(w.first_at, lo), max(w.last_at, hi))
    for day in sorted(by_day):
        w = by_day[day]
        if w.last_at < rng.since or w.first_at >= rng.until:
            continue
        out.append(Window(max(w.first_at, rng.since), w.last_at))
    return out


async def actor_events(
    conn: asyncpg.Connection,
    room_id: str,
    user_id: str,
    rng: TimeRange,
    types: list[str],
    order: str,
    after: Position | None,
    limit: int,
) -> list[asyncpg.Record]:
    """Up to `limit` + 1 of the user's events of `types` in the range, in `order`, after `after`: read
    window by window (`actor_windows`) until the page is full."""
    windows = await actor_windows(conn, room_id, user_id, rng, types)
    if order == "desc":
        windows.reverse()
    rows: list[asyncpg.Record] = []
    for w in windows:
        if after is not None and (w.first_at > after[0] if order == "desc" else w.last_at < after[0]):
            continue  # wholly on the side of the cursor already read
        q = Sql()
        q.where.append(f"room_id = {q.param(room_id)}")
        q.where.append(f"occurred_at >= {q.param(w.first_at)}")
        q.where.append(f"occurred_at <= {q.param(w.last_at)}")
        q.where.append(f"occurred_at < {q.param(rng.until)}")
        q.where.append(f"actor_id = {q.param(user_id)}")
        q.where.append(f"event_type = ANY({q.param(types)}::text[])")
        keyset(q, order, after)
        rows += await conn.fetch(ordered_select(q, order, limit + 1 - len(rows)), *q.args)
        if len(rows) > limit:
            break
    return rows


async def target_events(
    conn: asyncpg.Connection,
    room_id: str,
    user_id: str,
    rng: TimeRange,
    types: list[str],
    order: str,
    after: Position | None,
    limit: int,
) -> list[asyncpg.Record]:
    """Up to `limit` + 1 of the room's events of `types` in the range whose target is the user."""
    q = Sql()
    q.where.append(f"target_id = {q.param(user_id)}")
    q.where.append(f"occurred_at >= {q.param(rng.since)}")
    q.where.append(f"occurred_at < {q.param(rng.until)}")
    q.where.append(f"room_id = {q.param(room_id)}")
    q.where.append(f"event_type = ANY({q.param(types)}::text[])")
    keyset(q, order, after)
    return list(await conn.fetch(ordered_select(q, order, limit + 1), *q.args))
