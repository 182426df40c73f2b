"""What the rollups (migration 0016) must hold: a GROUP BY over the rows stored in `events`, written here
independently of the migration's triggers, compared with the rollup tables as they are."""

from __future__ import annotations

from typing import Any

import asyncpg

_CREDITS = "CASE WHEN event_type = 'gift.sent' THEN coalesce((payload->>'credits')::bigint, 0) ELSE 0 END"

ROOM_HOURS_FROM_ROWS = f"""
SELECT retention_class, date_trunc('hour', occurred_at, 'UTC') AS hour, room_id, event_type,
       count(*) AS events, sum({_CREDITS}) AS credits
  FROM events GROUP BY 1, 2, 3, 4
"""
ROOM_HOURS = "SELECT retention_class, hour, room_id, event_type, events, credits FROM room_hours"

ROOM_DAY_ACTORS_FROM_ROWS = f"""
SELECT retention_class, (occurred_at AT TIME ZONE 'UTC')::date AS day, room_id, event_type, actor_id,
       count(*) AS events, sum({_CREDITS}) AS credits,
       bit_or(1 << extract(hour FROM occurred_at AT TIME ZONE 'UTC')::int) AS hours,
       min(occurred_at) AS first_at, max(occurred_at) AS last_at,
       (array_agg(event_id ORDER BY occurred_at DESC, event_id DESC))[1] AS last_event_id,
       (array_agg(payload->'actor'->>'display_name' ORDER BY occurred_at DESC, event_id DESC))[1]
           AS display_name
  FROM events WHERE actor_id IS NOT NULL GROUP BY 1, 2, 3, 4, 5
"""
Rows = list[tuple[Any, ...]]

ROOM_DAY_ACTORS = """
SELECT retention_class, day, room_id, event_type, actor_id, events, credits, hours, first_at, last_at,
       last_event_id, display_name
  FROM room_day_actors
"""


async def _rows(conn: asyncpg.Connection, sql: str) -> Rows:
    return sorted((tuple(r) for r in await conn.fetch(sql)), key=repr)


async def rollups_and_rows(
    conn: asyncpg.Connection,
) -> tuple[
    tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]], tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]
]:
    """((room_hours, the same from the rows), (room_day_actors, the same from the rows)), each sorted."""
    return (
        (await _rows(conn, ROOM_HOURS), await _rows(conn, ROOM_HOURS_FROM_ROWS)),
        (await _rows(conn, ROOM_DAY_ACTORS), await _rows(conn, ROOM_DAY_ACTORS_FROM_ROWS)),
    )


async def assert_rollups_match_rows(conn: asyncpg.Connection) -> None:
    (hours, hours_expected), (actors, actors_expected) = await rollups_and_rows(conn)
    assert hours == hours_expected, "room_hours is a GROUP BY over the stored rows"
    assert actors == actors_expected, "room_day_actors is a GROUP BY over the stored rows"
