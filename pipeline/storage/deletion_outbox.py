"""The deletion outbox (`deletion_outbox`, migration 0013) and re-applying sealed deletion requests.

Every row of `deletion_requests` (an owner deleting a room's logs, staff erasing a user's chat) is queued
here by a trigger, in the deletion's own transaction, as canonical JSON with a seal (HMAC-SHA256 with a key
only the schema's owner reads). pipeline/ingest/deletion_log.py relays the queue to the deletions topic and
reads the topic back at start; `reapply` hands each record to `reapply_deletion_request()`, which verifies
the seal, so the worker's role re-applies genuine requests and can forge none. `requeue_missing` queues
again what a topic that lost its records (a broker started empty, the topic recreated) does not hold.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum

import asyncpg


class Outcome(StrEnum):
    """What `reapply_deletion_request()` did with one record (see migration 0013)."""

    #: the database did not have the request (restored from a backup taken before it): applied now
    REAPPLIED = "reapplied"
    #: the request is in deletion_requests already: nothing done
    PRESENT = "present"
    #: sealed with another database's key, or not sealed: nothing done
    OTHER_KEY = "other_key"
    #: the seal does not verify (forged or altered): nothing done
    BAD_SEAL = "bad_seal"


@dataclass(frozen=True, slots=True)
class SealedRequest:
    outbox_id: int
    request_id: uuid.UUID
    #: canonical JSON of the request, exactly as sealed (UTF-8 on the topic)
    message: str
    #: "<key id>:<hex of HMAC-SHA256>"
    seal: str


#: One relay at a time per schema. Not FOR UPDATE SKIP LOCKED, as the dead-letter outbox: row locks need
#: UPDATE on the table, which the worker's role has no business holding here (deletions are rare: one
#: relay is plenty, the others skip their round).
_RELAY_LOCK = (
    "SELECT pg_try_advisory_xact_lock(hashtextextended(current_schema() || ':roomlogs.deletion_relay', 0))"
)


async def claim(conn: asyncpg.Connection, limit: int) -> list[SealedRequest] | None:
    """Inside a transaction: up to `limit` queued requests, oldest first; None while another relay is at
    work (it holds them until its transaction ends)."""
    if not await conn.fetchval(_RELAY_LOCK):
        return None
    rows = await conn.fetch(
        "SELECT outbox_id, request_id, message, seal FROM deletion_outbox ORDER BY outbox_id LIMIT $1", limit
    )
    return [SealedRequest(r["outbox_id"], r["request_id"], r["message"], r["seal"]) for r in rows]


async def done(conn: asyncpg.Connection, outbox_ids: Sequence[int]) -> None:
    if outbox_ids:
        await conn.execute(
            "DELETE FROM deletion_outbox WHERE outbox_id = ANY($1::bigint[])", list(outbox_ids)
        )


async def pending(conn: asyncpg.Connection) -> int:
    return int(await conn.fetchval("SELECT count(*) FROM deletion_outbox"))


async def requeue_missing(conn: asyncpg.Connection, on_topic: Iterable[uuid.UUID]) -> int:
    """Queue again, for the relay, every deletion request the topic does not hold (`on_topic`: the request
    ids read from it) and that is not queued already (migration 0021); how many were queued."""
    return int(await conn.fetchval("SELECT requeue_deletion_requests($1::uuid[])", list(on_topic)))


async def reapply(conn: asyncpg.Connection, message: str, seal: str) -> tuple[Outcome, int]:
    """Re-apply one request read back from the topic: (what was done, rows deleted now).

    Text PostgreSQL cannot take (a NUL character) cannot be a message the database sealed: BAD_SEAL.
    """
    try:
        row = await conn.fetchrow(
            "SELECT outcome, deleted_now FROM reapply_deletion_request($1, $2)", message, seal
        )
    except asyncpg.DataError:  # SQLSTATE class 22, before the function verified anything
        return Outcome.BAD_SEAL, 0
    assert row is not None  # the function always returns one row
    return Outcome(row["outcome"]), int(row["deleted_now"])
