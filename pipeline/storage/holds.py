"""Legal holds (table `legal_holds`): the one module that reads and writes them.

Who calls it: `pipeline.retention.holds` (placing, releasing and listing holds, after checking the
request), retention's maintenance run (which rooms are held while it drops a partition; how many holds are
active, for the gauges) and its plan (`ACTIVE_HOLD_ON`, in the query over preserved rows). The query API
reads a room's hold only through `api_room_retention_state()` (migration 0007), its role's one window on
this table.

A hold is active until it is released; it is released (who, when, why), never deleted.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg

__all__ = [
    "ACTIVE_HOLD_ON",
    "TABLE",
    "Hold",
    "active_rooms",
    "count_active",
    "insert_hold",
    "list_holds",
    "lock_shared",
    "release",
    "released_at",
]

TABLE = "legal_holds"
#: SQL condition "the room in column {room} has an active hold" (format it with the column).
ACTIVE_HOLD_ON = "EXISTS (SELECT 1 FROM legal_holds l WHERE l.room_id = {room} AND l.released_at IS NULL)"

_COLUMNS = "hold_id, room_id, reason, requested_by, placed_at, released_at, released_by, release_reason"


@dataclass(frozen=True, slots=True)
class Hold:
    hold_id: int
    room_id: str
    reason: str
    requested_by: str
    placed_at: datetime
    released_at: datetime | None
    released_by: str | None
    release_reason: str | None

    @property
    def active(self) -> bool:
        return self.released_at is None


def _hold(r: asyncpg.Record) -> Hold:
    return Hold(
        r["hold_id"],
        r["room_id"],
        r["reason"],
        r["requested_by"],
        r["placed_at"],
        r["released_at"],
        r["released_by"],
        r["release_reason"],
    )


async def insert_hold(
    conn: asyncpg.Connection, room_id: str, *, reason: str, requested_by: str, placed_at: datetime
) -> Hold:
    row = await conn.fetchrow(
        f"""INSERT INTO legal_holds (room_id, reason, requested_by, placed_at)
            VALUES ($1, $2, $3, $4) RETURNING {_COLUMNS}""",
        room_id,
        reason,
        requested_by,
        placed_at,
    )
    assert row is not None
    return _hold(row)


async def release(
    conn: asyncpg.Connection, hold_id: int, *, released_by: str, now: datetime, reason: str | None
) -> Hold | None:
    """Release hold `hold_id` if it is active (never before it was placed); None when it is not."""
    row = await conn.fetchrow(
        f"""UPDATE legal_holds
               SET released_at = greatest($3, placed_at), released_by = $2, release_reason = $4
             WHERE hold_id = $1 AND released_at IS NULL
         RETURNING {_COLUMNS}""",
        hold_id,
        released_by,
        now,
        reason,
    )
    return None if row is None else _hold(row)


async def released_at(conn: asyncpg.Connection, hold_id: int) -> datetime | None:
    """When hold `hold_id` was released; None when it is active or does not exist."""
    at: datetime | None = await conn.fetchval(
        "SELECT released_at FROM legal_holds WHERE hold_id = $1", hold_id
    )
    return at


async def list_holds(
    conn: asyncpg.Connection, *, include_released: bool = False, room_id: str | None = None
) -> list[Hold]:
    rows = await conn.fetch(
        f"""SELECT {_COLUMNS} FROM legal_holds
             WHERE ($1 OR released_at IS NULL) AND ($2::text IS NULL OR room_id = $2)
             ORDER BY placed_at, hold_id""",
        include_released,
        room_id,
    )
    return [_hold(r) for r in rows]


async def active_rooms(conn: asyncpg.Connection) -> list[str]:
    """Rooms with at least one active hold, in order."""
    rows = await conn.fetch(
        "SELECT DISTINCT room_id FROM legal_holds WHERE released_at IS NULL ORDER BY room_id"
    )
    return [r["room_id"] for r in rows]


async def count_active(conn: asyncpg.Connection) -> int:
    """How many holds are active (a room may have several)."""
    return int(await conn.fetchval("SELECT count(*) FROM legal_holds WHERE released_at IS NULL"))


async def lock_shared(conn: asyncpg.Connection) -> None:
    """LOCK legal_holds SHARE until the transaction ends: a hold being placed right now either committed
    before (and is seen) or waits until after (and covers what is still stored then)."""
    await conn.execute("LOCK TABLE legal_holds IN SHARE MODE")
