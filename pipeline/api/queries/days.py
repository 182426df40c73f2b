"""A room's UTC days: events per day and type, read from the rollups (`pipeline.storage.rollups`).

Called by ``GET /v1/rooms/{room_id}/days`` after authorization. The rollups are exact and kept by
PostgreSQL in each batch's own transaction, so every request reads them afresh: a late event, an erasure,
a room deletion or a dropped day shows at once, and a busy room's month is a few thousand rollup rows
instead of its hundreds of thousands of events.
"""

from __future__ import annotations

from datetime import date

import asyncpg

from pipeline.storage import rollups

__all__ = ["day_counts", "type_counts"]


async def type_counts(
    conn: asyncpg.Connection, room_id: str, first: date, last: date
) -> list[asyncpg.Record]:
    """(day, type, n) for each UTC day in first..last (inclusive) with activity in the room."""
    return await rollups.type_counts(conn, room_id, first, last)


async def day_counts(
    conn: asyncpg.Connection, room_id: str, first: date, last: date
) -> dict[date, dict[str, int]]:
    """{day: {type: events}} for each UTC day in first..last (inclusive) with activity in the room."""
    out: dict[date, dict[str, int]] = {}
    for r in await type_counts(conn, room_id, first, last):
        out.setdefault(r["day"], {})[r["type"]] = int(r["n"])
    return out
