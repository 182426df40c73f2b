"""How long a room's logs are kept: ``GET /v1/rooms/{room_id}/retention``'s SQL.

The retention classes are `pipeline.storage.classes`' (the table's owner); the room's legal hold and the
last maintenance run come from `api_room_retention_state` (migration 0007), as the API's role cannot
read the holds.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg

from pipeline.storage.classes import retention_days

__all__ = ["deletion_requests", "oldest_event", "retention_days", "retention_state", "room_class"]


async def room_class(conn: asyncpg.Connection, room_id: str) -> asyncpg.Record | None:
    """The room's privacy and retention class (None: a room the pipeline has not seen)."""
    return await conn.fetchrow("SELECT privacy, retention_class FROM rooms WHERE room_id = $1", room_id)


async def oldest_event(conn: asyncpg.Connection, room_id: str, retention_class: str) -> datetime | None:
    """When the room's oldest stored event written under `retention_class` occurred."""
    oldest: datetime | None = await conn.fetchval(
        "SELECT min(occurred_at) FROM events WHERE room_id = $1 AND retention_class = $2",
        room_id,
        retention_class,
    )
    return oldest


async def retention_state(conn: asyncpg.Connection, room_id: str) -> asyncpg.Record:
    """(held, last_maintenance_at): whether a legal hold keeps the room's rows, when maintenance last ran."""
    state = await conn.fetchrow("SELECT held, last_maintenance_at FROM api_room_retention_state($1)", room_id)
    assert state is not None
    return state


async def deletion_requests(conn: asyncpg.Connection, room_id: str) -> list[dict[str, Any]]:
    """The room's last 50 deletion requests, newest first."""
    return [
        dict(r.items())
        for r in await conn.fetch(
            """SELECT requested_at, requested_by, identity_type, basis, reason, rows_deleted
                 FROM deletion_requests WHERE room_id = $1 ORDER BY requested_at DESC LIMIT 50""",
            room_id,
        )
    ]
