"""The access log a room's owner reads: ``GET /v1/rooms/{room_id}/access-log``'s SQL.

The API's role cannot read `access_audit`; `api_room_access_log` (migrations 0007, 0018), a SECURITY
DEFINER function, re-checks the caller's basis and returns this room's rows only, newest first, filtered by
who read, what they did and how it ended, optionally without one reader's rows (the owner's own reads).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg

__all__ = ["AccessLogFilter", "room_access_log"]

_ACCESS_LOG_SQL = """SELECT audit_id, at, subject, identity_type, basis, staff_reason, action, outcome,
                            row_count, detail
                       FROM api_room_access_log($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"""


@dataclass(frozen=True, slots=True)
class AccessLogFilter:
    """Which rows of the access log: each None for any."""

    subject: str | None = None
    action: str | None = None
    outcome: str | None = None
    #: leave this reader's rows out (the console folds the owner's own reads away)
    exclude_subject: str | None = None


async def room_access_log(
    conn: asyncpg.Connection,
    room_id: str,
    subject: str,
    identity_type: str,
    basis: str,
    staff_reason: str | None,
    before: tuple[datetime | None, int | None],
    limit: int,
    where: AccessLogFilter = AccessLogFilter(),
) -> list[asyncpg.Record]:
    """Up to `limit` of the room's audit rows matching `where` before `before` (at, audit_id), newest
    first."""
    return list(
        await conn.fetch(
            _ACCESS_LOG_SQL,
            room_id,
            subject,
            identity_type,
            basis,
            staff_reason,
            *before,
            limit,
            where.subject,
            where.action,
            where.outcome,
            where.exclude_subject,
        )
    )
