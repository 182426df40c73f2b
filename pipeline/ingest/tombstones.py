"""Authorized deletions the ingest must respect: a replay must not bring deleted logs back.

When an owner or support staff deletes a room's logs, or staff erase one user's chat text, the API records
the request in `deletion_requests`. Kafka still holds those events; a replay from an old offset (or a
consumer group reset) would otherwise write them again. The worker keeps the latest request time per room
and per erased user (a small, bounded set: one entry per request subject) and skips events that happened
at or before it: the room's events, or the user's chat messages. Refreshed with the retention classes,
so a deletion is honoured by every worker within that interval.
"""

from __future__ import annotations

from datetime import datetime

import asyncpg

from pipeline.events.contract import EventType

ROOM_DELETED = "room_deleted"
USER_ERASED = "user_erased"
_CHAT = EventType.CHAT_MESSAGE.value


class Tombstones:
    def __init__(self) -> None:
        self.rooms: dict[str, datetime] = {}
        self.users: dict[str, datetime] = {}

    async def load(self, conn: asyncpg.Connection) -> None:
        rows = await conn.fetch(
            """SELECT kind, coalesce(room_id, user_id) AS subject, max(requested_at) AS until
                 FROM deletion_requests GROUP BY 1, 2"""
        )
        self.rooms = {r["subject"]: r["until"] for r in rows if r["kind"] == "room_logs"}
        self.users = {r["subject"]: r["until"] for r in rows if r["kind"] == "user_chat_erasure"}

    def covers(
        self, room_id: str, event_type: str, actor_id: str | None, occurred_at: datetime
    ) -> str | None:
        """The reason this event must stay deleted, or None."""
        until = self.rooms.get(room_id)
        if until is not None and occurred_at <= until:
            return ROOM_DELETED
        if event_type == _CHAT and actor_id is not None:
            until = self.users.get(actor_id)
            if until is not None and occurred_at <= until:
                return USER_ERASED
        return None

    def __bool__(self) -> bool:
        return bool(self.rooms or self.users)
