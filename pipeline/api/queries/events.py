"""A room's events as the API reads them: a page, one event, an event's context; and the query builder the
other reads of the events table (`export`, `moderation`) share.

Called by the route handlers after authorization. Chat text search filters a room's range with ILIKE: no
index of its own (see migration 0003).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from pipeline.api.params import EventFilters, TimeRange, like_pattern

__all__ = [
    "COLUMNS",
    "CONTEXT_SPAN",
    "Position",
    "Sql",
    "event_json",
    "events_around",
    "keyset",
    "one_event",
    "ordered_select",
    "room_events",
    "room_query",
    "uuid7_window",
    "within",
]

COLUMNS = (
    "event_id, occurred_at, room_id, event_type AS type, schema_version, actor_id, target_id, body, payload, "
    "retention_class, ingested_at"
)
#: Where a page ends: (occurred_at, event_id) of its last event (a cursor carries it).
Position = tuple[datetime, uuid.UUID]
#: How far around an event its context is looked for (a conversation, not a day).
CONTEXT_SPAN = timedelta(hours=6)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(slots=True)
class Sql:
    """A WHERE clause under construction: `param()` adds a value and returns its placeholder."""

    where: list[str] = field(default_factory=list)
    args: list[Any] = field(default_factory=list)

    def param(self, value: Any) -> str:
        self.args.append(value)
        return f"${len(self.args)}"

    def clause(self) -> str:
        return " AND ".join(self.where)


def within(q: Sql, rng: TimeRange, order: str, after: Position | None) -> None:
    """The time range, and the keyset condition of the page after `after` in `order`."""
    q.where.append(f"occurred_at >= {q.param(rng.since)}")
    q.where.append(f"occurred_at < {q.param(rng.until)}")
    keyset(q, order, after)


def keyset(q: Sql, order: str, after: Position | None) -> None:
    """The condition of the page after `after` (a page's last event) in `order`; nothing for a first page."""
    if after is not None:
        moment, event_id = after
        ts, eid = q.param(moment), q.param(event_id)
        if order == "desc":
            q.where.append(f"occurred_at <= {ts} AND (occurred_at, event_id) < ({ts}, {eid})")
        else:
            q.where.append(f"occurred_at >= {ts} AND (occurred_at, event_id) > ({ts}, {eid})")


def room_query(
    room_id: str, rng: TimeRange, filters: EventFilters, order: str, after: Position | None
) -> Sql:
    """The room's events in the range that match the filters (after `after` in `order`)."""
    q = Sql()
    q.where.append(f"room_id = {q.param(room_id)}")
    within(q, rng, order, after)
    if filters.types:
        q.where.append(f"event_type = ANY({q.param(list(filters.types))}::text[])")
    if filters.actor is not None:
        q.where.append(f"actor_id = {q.param(filters.actor)}")
    if filters.target is not None:
        q.where.append(f"target_id = {q.param(filters.target)}")
    if filters.text is not None:
        q.where.append(f"body ILIKE {q.param(like_pattern(filters.text))}")
    return q


def ordered_select(q: Sql, order: str, limit: int | None) -> str:
    direction = "DESC" if order == "desc" else "ASC"
    sql = (
        f"SELECT {COLUMNS} FROM events WHERE {q.clause()} "
        f"ORDER BY occurred_at {direction}, event_id {direction}"
    )
    if limit is not None:
        sql += f" LIMIT {q.param(limit)}"
    return sql


async def room_events(
    conn: asyncpg.Connection,
    room_id: str,
    rng: TimeRange,
    filters: EventFilters,
    order: str,
    after: Position | None,
    limit: int,
) -> list[asyncpg.Record]:
    """Up to `limit` + 1 events (the extra one tells the caller there is a next page)."""
    q = room_query(room_id, rng, filters, order, after)
    sql = ordered_select(q, order, limit + 1)
    if filters.text is None:
        return list(await conn.fetch(sql, *q.args))
    # A text search is planned for its own pattern (not a cached generic plan), so the planner weighs the
    # pattern's selectivity instead of reusing a plan made for "any pattern".
    async with conn.transaction(readonly=True):
        await conn.execute("SET LOCAL plan_cache_mode = force_custom_plan")
        return list(await conn.fetch(sql, *q.args))


async def one_event(conn: asyncpg.Connection, room_id: str, event_id: uuid.UUID) -> asyncpg.Record | None:
    """The event, if it belongs to the room. A UUIDv7 id carries its time: look around it first."""
    sql = f"SELECT {COLUMNS} FROM events WHERE room_id = $1 AND event_id = $2"
    near = uuid7_window(event_id)
    if near is not None:
        found = await conn.fetchrow(
            sql + " AND occurred_at >= $3 AND occurred_at < $4 LIMIT 1", room_id, event_id, *near
        )
        if found is not None:
            return found
    return await conn.fetchrow(sql + " LIMIT 1", room_id, event_id)


def uuid7_window(event_id: uuid.UUID) -> tuple[datetime, datetime] | None:
    """A day either side of the time a UUIDv7 carries; None for other versions and for times a datetime
    cannot hold (a v7 time runs to the year 10889, a datetime to 9999)."""
    if event_id.version != 7:
        return None
    try:
        stamped = _EPOCH + timedelta(milliseconds=event_id.int >> 80)
        return stamped - timedelta(days=1), stamped + timedelta(days=1)
    except OverflowError:
        return None


async def events_around(
    conn: asyncpg.Connection, room_id: str, event: asyncpg.Record, side: str, limit: int
) -> list[asyncpg.Record]:
    """Up to `limit` events of the room just before (`<`) or after (`>`) `event`, nearest first, within
    `CONTEXT_SPAN` of it."""
    if limit == 0:
        return []
    moment, event_id = event["occurred_at"], event["event_id"]
    if side == "<":
        bound, direction = "occurred_at >= $4 AND occurred_at <= $2", "DESC"
        edge = moment - CONTEXT_SPAN
    else:
        bound, direction = "occurred_at <= $4 AND occurred_at >= $2", "ASC"
        edge = moment + CONTEXT_SPAN
    sql = (
        f"SELECT {COLUMNS} FROM events WHERE room_id = $1 AND {bound} "
        f"AND (occurred_at, event_id) {side} ($2, $3) "
        f"ORDER BY occurred_at {direction}, event_id {direction} LIMIT $5"
    )
    return list(await conn.fetch(sql, room_id, moment, event_id, edge, limit))


def event_json(record: asyncpg.Record) -> dict[str, Any]:
    """An event as the API returns it (orjson serializes the datetimes and the UUID)."""
    return dict(record.items())
