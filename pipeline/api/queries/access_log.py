"""The access log a room's owner reads: ``GET /v1/rooms/{room_id}/access-log``'s SQL.

The API's role cannot read `access_audit`; `api_room_access_log` (migration 0007), a SECURITY DEFINER
function, re-checks the caller's basis and returns this room's rows only, newest first.
"""

from __future__ import annotations

from datetime import datetime

import asyncpg

__all__ = ["room_access_log"]

_ACCESS_LOG_SQL = """SELECT audit_id, at, subject, identity_type, basis, staff_reason, action, outcome,
                            row_count, detail
                       FROM api_room_access_log($1, $2, $3, $4, $5, $6, $7, $8)"""


async def room_access_log(
    conn: asyncpg.Connection,
    room_id: str,
    subject: str,
    identity_type: str,
    basis: str,
    staff_reason: str | None,
    before: tuple[datetime | None, int | None],
    limit: int,
) -> list[asyncpg.Record]:
    """Up to `limit` of the room's audit rows before `before` (at, audit_id), newest first."""
    return list(
        await conn.fetch(
            _ACCESS_LOG_SQL, room_id, subject, identity_type, basis, staff_reason, *before, limit
        )
    )
