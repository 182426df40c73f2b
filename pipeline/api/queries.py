"""The API's SQL: every value travels as a parameter; the SQL text only varies by which filters are present.

Called by the route handlers after authorization. Queries are keyset-paginated on (occurred_at, event_id)
and always bounded by a time range, so each one is an index range scan over a few day partitions
(`events_room_time`; `events_target_time` and `events_moderator_time` for a user's moderation history).
Chat text search filters a room's range with ILIKE: no index of its own (see migration 0003).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import asyncpg

from pipeline.api.access import ROOMS_OF_USER_SQL, Position
from pipeline.api.params import MODERATION_TYPE_VALUES, EventFilters, TimeRange, like_pattern

COLUMNS = (
    "event_id, occurred_at, room_id, event_type AS type, schema_version, actor_id, target_id, body, payload, "
    "retention_class, ingested_at"
)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
#: Keys of an event as the API returns it, in order.
EVENT_KEYS = (
    "event_id",
    "occurred_at",
    "room_id",
    "type",
    "schema_version",
    "actor_id",
    "target_id",
    "body",
    "payload",
    "retention_class",
    "ingested_at",
)


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


def _range(q: Sql, rng: TimeRange, order: str, after: Position | None) -> None:
    q.where.append(f"occurred_at >= {q.param(rng.since)}")
    q.where.append(f"occurred_at < {q.param(rng.until)}")
    if after is not None:
        moment, event_id = after
        ts, eid = q.param(moment), q.param(event_id)
        if order == "desc":
            q.where.append(f"occurred_at <= {ts} AND (occurred_at, event_id) < ({ts}, {eid})")
        else:
            q.where.append(f"occurred_at >= {ts} AND (occurred_at, event_id) > ({ts}, {eid})")


def _filters(q: Sql, filters: EventFilters) -> None:
    if filters.types:
        q.where.append(f"event_type = ANY({q.param(list(filters.types))}::text[])")
    if filters.actor is not None:
        q.where.append(f"actor_id = {q.param(filters.actor)}")
    if filters.target is not None:
        q.where.append(f"target_id = {q.param(filters.target)}")
    if filters.text is not None:
        q.where.append(f"body ILIKE {q.param(like_pattern(filters.text))}")


def _ordered(q: Sql, order: str, limit: int | None) -> str:
    direction = "DESC" if order == "desc" else "ASC"
    sql = (
        f"SELECT {COLUMNS} FROM events WHERE {q.clause()} "
        f"ORDER BY occurred_at {direction}, event_id {direction}"
    )
    if limit is not None:
        sql += f" LIMIT {q.param(limit)}"
    return sql


def room_events_sql(
    room_id: str, rng: TimeRange, filters: EventFilters, order: str, after: Position | None, limit: int | None
) -> tuple[str, list[Any]]:
    q = Sql()
    q.where.append(f"room_id = {q.param(room_id)}")
    _range(q, rng, order, after)
    _filters(q, filters)
    return _ordered(q, order, limit), q.args


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
    sql, args = room_events_sql(room_id, rng, filters, order, after, limit + 1)
    if filters.text is None:
        return list(await conn.fetch(sql, *args))
    # A text search is planned for its own pattern (not a cached generic plan), so the planner weighs the
    # pattern's selectivity instead of reusing a plan made for "any pattern".
    async with conn.transaction(readonly=True):
        await conn.execute("SET LOCAL plan_cache_mode = force_custom_plan")
        return list(await conn.fetch(sql, *args))


async def count_capped(
    conn: asyncpg.Connection, room_id: str, rng: TimeRange, filters: EventFilters, cap: int
) -> int:
    """How many events match, counting no further than `cap` + 1."""
    q = Sql()
    q.where.append(f"room_id = {q.param(room_id)}")
    _range(q, rng, "asc", None)
    _filters(q, filters)
    sql = f"SELECT count(*) FROM (SELECT 1 FROM events WHERE {q.clause()} LIMIT {q.param(cap + 1)}) AS capped"
    return int(await conn.fetchval(sql, *q.args))


async def stream_room_events(
    conn: asyncpg.Connection,
    room_id: str,
    rng: TimeRange,
    filters: EventFilters,
    order: str,
    limit: int | None,
    *,
    prefetch: int = 2_000,
) -> AsyncIterator[asyncpg.Record]:
    """Every matching event through a server-side cursor; the caller holds a transaction open."""
    sql, args = room_events_sql(room_id, rng, filters, order, None, limit)
    async for record in conn.cursor(sql, *args, prefetch=prefetch):
        yield record


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


async def day_counts(conn: asyncpg.Connection, room_id: str, first: date, last: date) -> list[asyncpg.Record]:
    """(day, type, count) for each UTC day in first..last (inclusive) with activity in the room."""
    since = datetime(first.year, first.month, first.day, tzinfo=UTC)
    until = datetime(last.year, last.month, last.day, tzinfo=UTC) + timedelta(days=1)
    return list(
        await conn.fetch(
            """SELECT (occurred_at AT TIME ZONE 'UTC')::date AS day, event_type AS type, count(*) AS n
                 FROM events
                WHERE room_id = $1 AND occurred_at >= $2 AND occurred_at < $3
                GROUP BY 1, 2 ORDER BY 1, 2""",
            room_id,
            since,
            until,
        )
    )


async def moderation_history(
    conn: asyncpg.Connection,
    user_id: str,
    role: str,
    rng: TimeRange,
    types: Sequence[str],
    restrict_to_rooms_of: str | None,
    order: str,
    after: Position | None,
    limit: int,
) -> list[asyncpg.Record]:
    """Moderation events about (`role` target), by (actor) or either (any) the user, `limit` + 1 at most.

    `restrict_to_rooms_of`: only rooms this user owns or moderates (None: every room).
    """
    q = Sql()
    u = q.param(user_id)
    q.where.append(
        {"target": f"target_id = {u}", "actor": f"actor_id = {u}"}.get(
            role, f"(target_id = {u} OR actor_id = {u})"
        )
    )
    q.where.append(f"event_type = ANY({q.param(list(types or MODERATION_TYPE_VALUES))}::text[])")
    # repeats the predicate of the partial index events_moderator_time (actor_id, occurred_at), so the
    # planner can use it for role=actor
    q.where.append("event_type LIKE 'moderation.%'")
    _range(q, rng, order, after)
    if restrict_to_rooms_of is not None:
        q.where.append(f"room_id IN ({ROOMS_OF_USER_SQL.format(p=q.param(restrict_to_rooms_of))})")
    return list(await conn.fetch(_ordered(q, order, limit + 1), *q.args))


async def tail_batch(
    conn: asyncpg.Connection,
    room_id: str,
    occurred_since: datetime,
    after: tuple[datetime, uuid.UUID],
    limit: int,
) -> list[asyncpg.Record]:
    """The room's events ingested after `after` (ingested_at, event_id), occurred since `occurred_since`."""
    return list(
        await conn.fetch(
            f"""SELECT {COLUMNS} FROM events
                 WHERE room_id = $1 AND occurred_at >= $2 AND (ingested_at, event_id) > ($3, $4)
                 ORDER BY ingested_at, event_id LIMIT $5""",
            room_id,
            occurred_since,
            after[0],
            after[1],
            limit,
        )
    )


def event_json(record: asyncpg.Record) -> dict[str, Any]:
    """An event as the API returns it (orjson serializes the datetimes and the UUID)."""
    return dict(record.items())
