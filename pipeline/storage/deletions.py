"""Authorized deletions, as the ingest side must honour them: a replay never brings deleted logs back.

When an owner or support staff deletes a room's logs, or staff erase one user's chat text, the API records
the request in `deletion_requests` (through the SECURITY DEFINER functions of migrations 0003/0004). Kafka
still holds those events; a replay (a room server resending, a consumer group reset) would write them again.
Every event that happened at or before the request is skipped: the room's events, or the user's chat.

"At once, on every worker": each ingest transaction takes the deletion lock *shared* before it writes, and
the deletion functions take it *exclusive*. A deletion therefore waits for the batches in flight, and every
batch written after it sees its request: the writer compares `max(seq)` with what it last loaded and
re-reads the requests inside its own transaction when it moved. No timer, no window.

Memory: one entry per room deleted and per user erased (the latest request time of each).
"""

from __future__ import annotations

from datetime import datetime

import asyncpg

from pipeline.events.contract import EventType

ROOM_DELETED = "room_deleted"
USER_ERASED = "user_erased"
_CHAT = EventType.CHAT_MESSAGE.value

#: Same expression as in the deletion functions (0004_replay_safe_state.sql): one lock per schema. Every
#: ingest transaction holds it shared; a deletion takes it exclusive: once it holds it, no batch begun
#: earlier is in flight. (The sealing run has a lock of its own: pipeline.storage.seals.SEAL_LOCK.)
_LOCK_SHARED = (
    "SELECT pg_advisory_xact_lock_shared(hashtextextended(current_schema() || ':roomlogs.deletions', 0))"
)


class Deletions:
    """The latest deletion request per room and per erased user, and the `seq` they were read at."""

    def __init__(self) -> None:
        self.rooms: dict[str, datetime] = {}
        self.users: dict[str, datetime] = {}
        #: max(deletion_requests.seq) when last loaded (-1: never)
        self.seq = -1

    async def load(self, conn: asyncpg.Connection) -> None:
        rows = await conn.fetch(
            """SELECT kind, coalesce(room_id, user_id) AS subject, max(requested_at) AS until, max(seq) AS seq
                 FROM deletion_requests GROUP BY 1, 2"""
        )
        self.rooms = {r["subject"]: r["until"] for r in rows if r["kind"] == "room_logs"}
        self.users = {r["subject"]: r["until"] for r in rows if r["kind"] == "user_chat_erasure"}
        self.seq = max((r["seq"] for r in rows), default=0)

    async def hold_and_refresh(self, conn: asyncpg.Connection) -> bool:
        """Inside a write transaction: block deletions until commit, and catch up with any made before.

        Returns True when new requests were loaded (the caller must re-check what it is about to write).
        """
        await conn.execute(_LOCK_SHARED)
        seq = await conn.fetchval("SELECT coalesce(max(seq), 0) FROM deletion_requests")
        if seq == self.seq:
            return False
        await self.load(conn)
        return True

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
