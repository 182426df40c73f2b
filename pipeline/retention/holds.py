"""Legal holds: support staff keep a room's logs past retention until the hold is released.

Who calls it: `roomlogs retention hold place|release|list`, and the maintenance run (`active_rooms`).

What a hold does: while a room has an active hold, maintenance copies that room's rows out of each
expired day partition into `held_events` in the same transaction that drops the partition, so every
other room's rows in that partition are still deleted on time. A hold covers rows still stored when it is
placed; rows already dropped are gone (the ledger says when). Releasing a hold puts the room's preserved
rows back under their own class's retention: the next run past it deletes them and writes the ledger.

A hold is a record: it is released (who, when, why), never deleted. A room may have several holds (one
per case); it is held while any of them is active. Dead letters are not covered: they carry no room id
column and are kept only `dead_letter_retention_days` for operators.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg

from pipeline.retention.exceptions import HoldNotFoundError, InvalidHoldError

__all__ = ["Hold", "active_rooms", "list_holds", "place_hold", "release_hold"]

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


def _required(value: str, what: str) -> str:
    value = value.strip()
    if not value:
        raise InvalidHoldError(f"a legal hold needs {what}")
    return value


async def place_hold(
    conn: asyncpg.Connection, room_id: str, *, reason: str, requested_by: str, now: datetime
) -> Hold:
    """Hold a room's logs from now on (until released). Returns the new hold."""
    row = await conn.fetchrow(
        f"""INSERT INTO legal_holds (room_id, reason, requested_by, placed_at)
            VALUES ($1, $2, $3, $4) RETURNING {_COLUMNS}""",
        _required(room_id, "a room id"),
        _required(reason, "a reason"),
        _required(requested_by, "the name of who asked for it (--by)"),
        now,
    )
    assert row is not None
    return _hold(row)


async def release_hold(
    conn: asyncpg.Connection, hold_id: int, *, released_by: str, now: datetime, reason: str = ""
) -> Hold:
    """Release an active hold. HoldNotFoundError when there is none with that id, or it is released."""
    row = await conn.fetchrow(
        f"""UPDATE legal_holds
               SET released_at = greatest($3, placed_at), released_by = $2, release_reason = $4
             WHERE hold_id = $1 AND released_at IS NULL
         RETURNING {_COLUMNS}""",
        hold_id,
        _required(released_by, "the name of who releases it (--by)"),
        now,
        reason.strip() or None,
    )
    if row is None:
        exists = await conn.fetchval("SELECT released_at FROM legal_holds WHERE hold_id = $1", hold_id)
        if exists is None:
            raise HoldNotFoundError(f"no legal hold {hold_id}")
        raise HoldNotFoundError(f"legal hold {hold_id} was already released at {exists:%Y-%m-%d %H:%M:%S %Z}")
    return _hold(row)


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
    """Rooms with at least one active hold."""
    rows = await conn.fetch(
        "SELECT DISTINCT room_id FROM legal_holds WHERE released_at IS NULL ORDER BY room_id"
    )
    return [r["room_id"] for r in rows]
