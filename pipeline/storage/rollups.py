"""Room activity rollups (migration 0016): exact counts PostgreSQL keeps from the rows it stores; read here.

- `room_hours`: per retention class, UTC hour, room and event type: events stored, gift credits.
- `room_day_actors`: per retention class, UTC day, room, event type and actor: events, gift credits sent,
  the UTC hours with at least one (a bitmask), first and last event time, the display name of the last.

Who writes them: nobody in Python. Statement-level triggers on `events` add exactly the rows each statement
stored (the writer's COPY or INSERT ... ON CONFLICT DO NOTHING; so replays and duplicates add nothing, and
a rolled-back savepoint or batch takes its additions with it) and take out the rows an authorized deletion
or erasure deleted. `create_log_partition()` makes a day's rollup tables with its `events` partition;
retention detaches and drops them with that day (`day_partitions`, pipeline.retention.enforce).

Who reads them: the API's calendar (`days`) and insights, once authorized for the room; the detectors.
Every function reads one room over whole UTC days, first..last inclusive, through the rooms' indexes: a
month of the busiest room is a few thousand rollup rows, not its hundreds of thousands of events. A room
whose retention class changed has rows under each class; the functions sum over classes.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta

import asyncpg

from pipeline.storage.partitions import day_start

__all__ = [
    "ROLLUP_TABLES",
    "actor_days",
    "day_partitions",
    "distinct_actors",
    "hourly",
    "top_actors",
    "type_counts",
]

#: The rollup tables, each partitioned like `events`: <table>_<class>, then <table>_<class>_pYYYYMMDD.
ROLLUP_TABLES = ("room_hours", "room_day_actors")

_TYPE_COUNTS_SQL = """
SELECT (hour AT TIME ZONE 'UTC')::date AS day, event_type AS type, sum(events)::bigint AS n
  FROM room_hours
 WHERE room_id = $1 AND hour >= $2 AND hour < $3
 GROUP BY 1, 2 ORDER BY 1, 2
"""
_HOURLY_SQL = """
SELECT hour, event_type AS type, sum(events)::bigint AS n, sum(credits)::bigint AS credits
  FROM room_hours
 WHERE room_id = $1 AND hour >= $2 AND hour < $3
 GROUP BY 1, 2 ORDER BY 1, 2
"""
# Days of `days` the room spent under more than one retention class (for that type): rare, from room_hours.
_MIXED_DAYS_SQL = """
SELECT (hour AT TIME ZONE 'UTC')::date AS day
  FROM room_hours
 WHERE room_id = $1 AND hour >= $2 AND hour < $3 AND event_type = $4
 GROUP BY 1 HAVING count(DISTINCT retention_class) > 1
"""
# A day's top `limit` from the index (room, day, type, events DESC, actor), for days under one class.
_TOP_SQL = """
SELECT d.day, t.actor_id, t.events AS n, t.display_name
  FROM unnest($2::date[]) AS d(day)
 CROSS JOIN LATERAL (
       SELECT actor_id, events, display_name FROM room_day_actors
        WHERE room_id = $1 AND day = d.day AND event_type = $3
        ORDER BY events DESC, actor_id LIMIT $4) AS t
"""
# The same for days the room spent under more than one class: an actor's rows of each class summed first.
_TOP_SUMMED_SQL = """
SELECT day, actor_id, n, display_name FROM (
    SELECT day, actor_id, sum(events)::bigint AS n,
           (array_agg(display_name ORDER BY last_at DESC, last_event_id DESC))[1] AS display_name,
           row_number() OVER (PARTITION BY day ORDER BY sum(events) DESC, actor_id) AS rank
      FROM room_day_actors
     WHERE room_id = $1 AND day = ANY($2::date[]) AND event_type = $3
     GROUP BY day, actor_id
) AS ranked WHERE rank <= $4
"""
# One actor's rows: an index probe per (day, type) of the primary key (room, day, type, actor, class).
_ACTOR_DAYS_SQL = """
SELECT day, event_type AS type, sum(events)::bigint AS n, min(first_at) AS first_at, max(last_at) AS last_at,
       (array_agg(display_name ORDER BY last_at DESC, last_event_id DESC))[1] AS display_name
  FROM room_day_actors
 WHERE room_id = $1 AND day = ANY($2::date[]) AND event_type = ANY($3::text[]) AND actor_id = $4
 GROUP BY 1, 2 ORDER BY 1, 2
"""
_DISTINCT_SQL = """
SELECT (day::timestamp + h * interval '1 hour') AT TIME ZONE 'UTC' AS hour, count(DISTINCT actor_id)::int AS n
  FROM room_day_actors, generate_series(0, 23) AS h
 WHERE room_id = $1 AND day BETWEEN $2 AND $3 AND event_type = $4 AND hours & (1 << h) <> 0
 GROUP BY 1 ORDER BY 1
"""


def day_partitions(retention_class: str, day: date) -> list[tuple[str, str, str]]:
    """(rollup table, its class's table, the day's partition) of each rollup table, for a class's UTC day."""
    return [(t, f"{t}_{retention_class}", f"{t}_{retention_class}_p{day:%Y%m%d}") for t in ROLLUP_TABLES]


def _bounds(first: date, last: date) -> tuple[datetime, datetime]:
    return day_start(first), day_start(last) + timedelta(days=1)


async def type_counts(
    conn: asyncpg.Connection, room_id: str, first: date, last: date
) -> list[asyncpg.Record]:
    """(day, type, n): events per UTC day and type, for each day in first..last with activity."""
    return list(await conn.fetch(_TYPE_COUNTS_SQL, room_id, *_bounds(first, last)))


async def hourly(conn: asyncpg.Connection, room_id: str, first: date, last: date) -> list[asyncpg.Record]:
    """(hour, type, n, credits): events and gift credits (gift.sent; 0 for other types) per UTC hour and
    type, for each hour in first..last with activity."""
    return list(await conn.fetch(_HOURLY_SQL, room_id, *_bounds(first, last)))


async def top_actors(
    conn: asyncpg.Connection, room_id: str, days: list[date], event_type: str, limit: int
) -> list[asyncpg.Record]:
    """(day, actor_id, n, display_name): each of `days`' `limit` actors with the most events of
    `event_type` (ties by actor id), with the display name of their last such event that day.

    Each day's top is read from the index alone, except on a day the room spent under more than one
    retention class: there an actor's rows of each class are summed before ranking."""
    if not days:
        return []
    mixed = {
        r["day"]
        for r in await conn.fetch(_MIXED_DAYS_SQL, room_id, *_bounds(min(days), max(days)), event_type)
    }
    single = [d for d in days if d not in mixed]
    rows = list(await conn.fetch(_TOP_SQL, room_id, single, event_type, limit)) if single else []
    if mixed:
        rows += await conn.fetch(_TOP_SUMMED_SQL, room_id, sorted(mixed & set(days)), event_type, limit)
    return rows


async def distinct_actors(
    conn: asyncpg.Connection, room_id: str, first: date, last: date, event_type: str
) -> dict[datetime, int]:
    """{UTC hour: distinct actors with at least one `event_type` event in it} (users entering, for
    `user.entered`), for each hour in first..last with any."""
    rows = await conn.fetch(_DISTINCT_SQL, room_id, first, last, event_type)
    return {r["hour"]: int(r["n"]) for r in rows}


async def actor_days(
    conn: asyncpg.Connection, room_id: str, actor_id: str, first: date, last: date, types: list[str]
) -> list[asyncpg.Record]:
    """(day, type, n, first_at, last_at, display_name): the actor's events of each of `types` per UTC day in
    first..last with any, their first and last time that day and the display name of the last.

    What one user did in a room (their record) and where their events lie (the windows that page them):
    a few index probes per day, however busy the room."""
    days = [first + timedelta(days=i) for i in range((last - first).days + 1)]
    if not days or not types:
        return []
    return list(await conn.fetch(_ACTOR_DAYS_SQL, room_id, days, sorted(types), actor_id))
