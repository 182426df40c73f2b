"""Rooms and their people as the API reads them: a user's roles in a room (every access decision), the
rooms a user owns or moderates (``GET /v1/me/rooms``, and reads across rooms).

`rooms` and `room_moderators` are kept current by the ingest worker from room.permissions_changed events
and read afresh on every request: a revoked moderator loses access at once.
"""

from __future__ import annotations

from datetime import datetime

import asyncpg

__all__ = ["ROOMS_OF_USER_SQL", "RoomRoles", "my_rooms", "room_roles"]

#: Rooms a user may read through their own roles (a subquery for queries across rooms; `{p}` is the
#: placeholder of the user id).
ROOMS_OF_USER_SQL = (
    "SELECT room_id FROM rooms WHERE owner_id = {p} "
    "UNION SELECT room_id FROM room_moderators WHERE user_id = {p}"
)
#: (is the owner, is a moderator)
RoomRoles = tuple[bool, bool]

_ROOM_ROLES_SQL = """
SELECT coalesce((SELECT owner_id = $2 FROM rooms WHERE room_id = $1), false) AS is_owner,
       EXISTS (SELECT 1 FROM room_moderators WHERE room_id = $1 AND user_id = $2) AS is_moderator
"""
_MY_ROOMS_SQL = """
WITH mine AS (
    SELECT room_id, 'owner' AS role FROM rooms WHERE owner_id = $1
    UNION
    SELECT m.room_id, 'moderator' FROM room_moderators m WHERE m.user_id = $1
      AND NOT EXISTS (SELECT 1 FROM rooms r WHERE r.room_id = m.room_id AND r.owner_id = $1)
)
SELECT mine.room_id, mine.role, r.privacy, r.retention_class,
       (SELECT max(e.occurred_at) FROM events e
         WHERE e.room_id = mine.room_id AND e.occurred_at >= $2) AS last_activity
  FROM mine LEFT JOIN rooms r USING (room_id)
 ORDER BY mine.role DESC, mine.room_id
 LIMIT $3
"""


async def room_roles(conn: asyncpg.Connection, room_id: str, user_id: str) -> RoomRoles:
    """Whether the user owns the room, and whether they moderate it, now."""
    roles = await conn.fetchrow(_ROOM_ROLES_SQL, room_id, user_id)
    assert roles is not None
    return bool(roles["is_owner"]), bool(roles["is_moderator"])


async def my_rooms(
    conn: asyncpg.Connection, user_id: str, active_since: datetime, limit: int
) -> list[asyncpg.Record]:
    """The rooms the user owns or moderates (owned first), each with its last activity since
    `active_since` (older activity is not looked for: it keeps the query to recent partitions)."""
    return list(await conn.fetch(_MY_ROOMS_SQL, user_id, active_since, limit))
