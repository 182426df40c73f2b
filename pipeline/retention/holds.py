"""Legal holds: support staff keep a room's logs past retention until the hold is released.

Who calls it: `roomlogs retention hold place|release` (listing, and the maintenance run's `active_rooms`,
read `pipeline.storage.holds` directly).

What a hold does: while a room has an active hold, maintenance copies that room's rows out of each
expired day partition into `held_events` in the same transaction that drops the partition, so every
other room's rows in that partition are still deleted on time. A hold covers rows still stored when it is
placed; rows already dropped are gone (the ledger says when). Releasing a hold puts the room's preserved
rows back under their own class's retention: the next run past it deletes them and writes the ledger.

A hold is a record: it is released (who, when, why), never deleted. A room may have several holds (one
per case); it is held while any of them is active. Dead letters are not covered: they carry no room id
column and are kept only `dead_letter_retention_days` for operators.

This module checks a request and says what is wrong with it; `pipeline.storage.holds` owns the table.
"""

from __future__ import annotations

from datetime import datetime

import asyncpg

from pipeline.retention.exceptions import HoldNotFoundError, InvalidHoldError
from pipeline.storage import holds
from pipeline.storage.holds import Hold

__all__ = ["place_hold", "release_hold"]


def _required(value: str, what: str) -> str:
    value = value.strip()
    if not value:
        raise InvalidHoldError(f"a legal hold needs {what}")
    return value


async def place_hold(
    conn: asyncpg.Connection, room_id: str, *, reason: str, requested_by: str, now: datetime
) -> Hold:
    """Hold a room's logs from now on (until released). Returns the new hold."""
    return await holds.insert_hold(
        conn,
        _required(room_id, "a room id"),
        reason=_required(reason, "a reason"),
        requested_by=_required(requested_by, "the name of who asked for it (--by)"),
        placed_at=now,
    )


async def release_hold(
    conn: asyncpg.Connection, hold_id: int, *, released_by: str, now: datetime, reason: str = ""
) -> Hold:
    """Release an active hold. HoldNotFoundError when there is none with that id, or it is released."""
    hold = await holds.release(
        conn,
        hold_id,
        released_by=_required(released_by, "the name of who releases it (--by)"),
        now=now,
        reason=reason.strip() or None,
    )
    if hold is None:
        exists = await holds.released_at(conn, hold_id)
        if exists is None:
            raise HoldNotFoundError(f"no legal hold {hold_id}")
        raise HoldNotFoundError(f"legal hold {hold_id} was already released at {exists:%Y-%m-%d %H:%M:%S %Z}")
    return hold
