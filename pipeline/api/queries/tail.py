"""A live tail's SQL: the database's clock, where a resumed stream starts, and each poll's new events.

Called by ``GET /v1/rooms/{room_id}/tail`` after authorization, and by its stream on every poll.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

import asyncpg

from pipeline.api.queries.events import COLUMNS

__all__ = ["database_now", "ingested_at", "tail_batch"]


async def database_now(conn: asyncpg.Connection) -> datetime:
    """The start of the connection's transaction by the database's clock (a tail's first poll starts here)."""
    now: datetime = await conn.fetchval("SELECT now()")
    return now


async def ingested_at(
    conn: asyncpg.Connection, room_id: str, event_id: uuid.UUID, horizon: timedelta
) -> datetime | None:
    """When the room's event was ingested, if it occurred and was ingested within `horizon` of now."""
    ingested: datetime | None = await conn.fetchval(
        """SELECT ingested_at FROM events
            WHERE room_id = $1 AND event_id = $2 AND occurred_at >= now() - $3::interval
              AND ingested_at >= now() - $3::interval""",
        room_id,
        event_id,
        horizon,
    )
    return ingested


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
