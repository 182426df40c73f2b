"""Authorized deletions, as the ingest side must honour them: a replay never brings deleted logs back.

When an owner or support staff deletes a room's logs, or staff erase one user's chat text, the API records
the request in `deletion_requests` (through the SECURITY DEFINER functions of migrations 0003/0004). Kafka
still holds those events; a replay (a room server resending, a consumer group reset) would write them again.
Every event that happened at or before the request is skipped: the room's events, or the user's chat.

"At once, on every worker": each ingest transaction takes the deletion lock *shared* before it writes, and
the deletion functions take it *exclusive*. A deletion therefore waits for the batches in flight, and every
batch written after it sees its request: the writer compares `max(seq)` with what it last loaded and
re-reads the requests inside its own transaction when it moved. No timer, no window.

A database restored from a backup under a running worker has lost the requests made after the backup (they
come back from the deletions topic, pipeline/ingest/deletion_log.py). Requests are never deleted, so a
request this worker loaded that the database no longer has means just that: `hold_and_refresh` raises
`DeletionsLostError` (the batch writes nothing) and the ingest service re-applies them before it writes on.

Memory: one entry per room deleted and per user erased (the latest request time of each).
"""

from __future__ import annotations

import uuid
from datetime import datetime

import asyncpg

from pipeline.errors import RoomlogsError
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


class DeletionsLostError(RoomlogsError):
    """The database no longer has a deletion request this worker loaded: it was restored from a backup (or
    replaced) under the worker. Nothing of the batch was written; the requests must be re-applied from the
    deletions topic before ingest writes on."""

    retriable = True

    def __init__(self, seq: int, request_id: uuid.UUID | None) -> None:
        self.seq = seq
        self.request_id = request_id
        what = (
            f"deletion request {request_id} (seq {seq}), which this worker loaded"
            if seq > 0
            else "some of the deletion requests this worker relayed to the deletions topic"
        )
        super().__init__(f"the database no longer has {what}: restored from a backup under it?")


#: max(seq); whether the request last loaded ($1 seq, $2 id) is still there (by the unique seq index); how
#: many of the requests this worker relayed ($3) are
_REFRESH_SQL = """
SELECT (SELECT coalesce(max(seq), 0) FROM deletion_requests) AS seq,
       $1::bigint <= 0
       OR EXISTS (SELECT 1 FROM deletion_requests WHERE seq = $1 AND ($2::uuid IS NULL OR request_id = $2))
       AS kept,
       (SELECT count(*) FROM deletion_requests WHERE request_id = ANY($3::uuid[])) AS relayed"""
#: the requests this worker relayed that it keeps checking for (the newest): a restore loses the newest first
RELAYED_CHECKED = 1_000


class Deletions:
    """The latest deletion request per room and per erased user, and the `seq` they were read at."""

    def __init__(self) -> None:
        self.rooms: dict[str, datetime] = {}
        self.users: dict[str, datetime] = {}
        #: max(deletion_requests.seq) when last loaded (-1: never)
        self.seq = -1
        #: the request_id of that request (None: none)
        self.last_id: uuid.UUID | None = None
        #: requests this worker's relay put on the deletions topic (the newest RELAYED_CHECKED): they were
        #: committed, so a database without them lost them, even if no batch loaded them in between
        self.relayed: dict[uuid.UUID, None] = {}

    def saw_relayed(self, request_ids: list[uuid.UUID]) -> None:
        for request_id in request_ids:
            self.relayed[request_id] = None
        while len(self.relayed) > RELAYED_CHECKED:
            del self.relayed[next(iter(self.relayed))]

    def forget_relayed(self, request_ids: set[uuid.UUID]) -> None:
        for request_id in request_ids:
            self.relayed.pop(request_id, None)

    async def load(self, conn: asyncpg.Connection) -> None:
        rows = await conn.fetch(
            """SELECT kind, coalesce(room_id, user_id) AS subject, max(requested_at) AS until, max(seq) AS seq
                 FROM deletion_requests GROUP BY 1, 2"""
        )
        self.rooms = {r["subject"]: r["until"] for r in rows if r["kind"] == "room_logs"}
        self.users = {r["subject"]: r["until"] for r in rows if r["kind"] == "user_chat_erasure"}
        self.seq = max((r["seq"] for r in rows), default=0)
        # by seq, whatever committed since: requests are never deleted, so that one is there (None: the
        # database lost it meanwhile, which the next check finds)
        self.last_id = await conn.fetchval(
            "SELECT request_id FROM deletion_requests WHERE seq = $1", self.seq
        )

    async def lost(self, conn: asyncpg.Connection) -> bool:
        """Whether the database lacks a request this worker loaded or relayed (restored under it). Read
        outside any batch (no lock): the deletions relay asks it every round, so that an idle worker, with
        no batch to find it, re-applies them too."""
        relayed = list(self.relayed)
        now = await conn.fetchrow(_REFRESH_SQL, self.seq, self.last_id, relayed)
        return not now["kept"] or now["relayed"] < len(relayed)

    async def hold_and_refresh(self, conn: asyncpg.Connection) -> bool:
        """Inside a write transaction: block deletions until commit, and catch up with any made before.

        Returns True when new requests were loaded (the caller must re-check what it is about to write).
        Raises DeletionsLostError when the request last loaded is gone (a database restored under us).
        """
        await conn.execute(_LOCK_SHARED)
        relayed = list(self.relayed)
        now = await conn.fetchrow(_REFRESH_SQL, self.seq, self.last_id, relayed)
        if not now["kept"]:
            raise DeletionsLostError(self.seq, self.last_id)
        if now["relayed"] < len(relayed):
            raise DeletionsLostError(-1, None)
        if now["seq"] == self.seq:
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
