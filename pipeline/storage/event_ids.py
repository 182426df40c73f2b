"""The event-id registry (`event_ids`): an event id is stored at most once, whatever its copies carry.

The `events` key is (retention class, event time, event id), as a partitioned table's key must include the
partition columns; it cannot see a copy re-delivered after its room changed class, or a copy with another
timestamp. Every id the writer stores is registered here first, in the batch's transaction, with the
content fingerprint of the copy stored; a later copy is a duplicate (same fingerprint: skipped and counted)
or a conflicting duplicate (dead-lettered by the caller).

Who calls it: the batch writer (`register`), and maintenance (`prune`: ids whose event time is older than
the longest retention, which no replay can bring back anyway because every class's horizon refuses them).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg
import orjson

from pipeline.events.reasons import Reason
from pipeline.storage.batch import (
    ROW_ACTOR_ID,
    ROW_BODY,
    ROW_EVENT_ID,
    ROW_EVENT_TYPE,
    ROW_OCCURRED_AT,
    ROW_OFFSET,
    ROW_PARTITION,
    ROW_PAYLOAD,
    ROW_ROOM_ID,
    ROW_TARGET_ID,
    DeadLetter,
)

_STAGING = "roomlogs_event_ids_staging"


@dataclass(slots=True)
class Registration:
    """Positions (into the sequence given to `register`) by outcome."""

    new: list[int] = field(default_factory=list)
    duplicates: list[int] = field(default_factory=list)
    #: position -> event time of the copy stored earlier
    conflicts: dict[int, datetime] = field(default_factory=dict)


async def register(conn: asyncpg.Connection, entries: Sequence[tuple[str, datetime, bytes]]) -> Registration:
    """Register (event_id, occurred_at, digest) entries inside the caller's transaction.

    Ids must be unique within `entries` (the batch builder sees to it). Fast path: a binary COPY straight
    into the registry. When an id is already there, a savepoint undoes that and the slow path sorts the
    entries with one round trip per step.
    """
    out = Registration()
    if not entries:
        return out
    try:
        async with conn.transaction():
            await conn.copy_records_to_table(
                "event_ids", records=entries, columns=("event_id", "occurred_at", "digest")
            )
    except asyncpg.UniqueViolationError:
        pass
    else:
        out.new = list(range(len(entries)))
        return out
    await conn.execute(
        f"""CREATE TEMP TABLE IF NOT EXISTS {_STAGING}
            (pos integer, event_id uuid, occurred_at timestamptz, digest bytea) ON COMMIT DELETE ROWS"""
    )
    await conn.execute(f"TRUNCATE {_STAGING}")
    await conn.copy_records_to_table(
        _STAGING,
        records=[(i, *e) for i, e in enumerate(entries)],
        columns=("pos", "event_id", "occurred_at", "digest"),
    )
    inserted = await conn.fetch(
        f"""WITH ins AS (
                INSERT INTO event_ids (event_id, occurred_at, digest)
                SELECT event_id, occurred_at, digest FROM {_STAGING}
                ON CONFLICT (event_id) DO NOTHING
                RETURNING event_id)
            SELECT s.pos FROM {_STAGING} s JOIN ins USING (event_id)"""
    )
    out.new = sorted(r["pos"] for r in inserted)
    fresh = set(out.new)
    # a new statement, a new snapshot: it sees ids another transaction committed while we waited on them
    known = await conn.fetch(
        f"""SELECT s.pos, (e.digest = s.digest OR e.digest = ''::bytea) AS same, e.occurred_at
              FROM {_STAGING} s JOIN event_ids e USING (event_id)
             WHERE s.pos <> ALL($1::int[])""",
        list(fresh),
    )
    for r in known:
        if r["same"]:
            out.duplicates.append(r["pos"])
        else:
            out.conflicts[r["pos"]] = r["occurred_at"]
    # an id neither inserted nor found was pruned meanwhile: older than every horizon, so not stored
    placed = fresh | set(out.conflicts) | {r["pos"] for r in known}
    out.duplicates.extend(i for i in range(len(entries)) if i not in placed)
    out.duplicates.sort()
    return out


async def stored_copies(
    conn: asyncpg.Connection, event_ids: Sequence[str]
) -> dict[str, tuple[bytes, datetime]]:
    """{event id: (digest, event time)} of the registered copies among `event_ids`."""
    rows = await conn.fetch(
        "SELECT event_id::text AS id, digest, occurred_at FROM event_ids WHERE event_id = ANY($1::uuid[])",
        list(event_ids),
    )
    return {r["id"]: (r["digest"], r["occurred_at"]) for r in rows}


def same_content(stored_digest: bytes, digest: bytes) -> bool:
    """An empty stored digest (an event stored before fingerprints existed) matches any copy."""
    return stored_digest == digest or not stored_digest


async def forget(conn: asyncpg.Connection, event_ids: Sequence[str]) -> None:
    """Un-register ids whose rows PostgreSQL refused in this transaction (a valid copy may come later)."""
    if event_ids:
        await conn.execute("DELETE FROM event_ids WHERE event_id = ANY($1::uuid[])", list(event_ids))


async def prune(conn: asyncpg.Connection, before: datetime, *, chunk_rows: int = 50_000) -> int:
    """Delete registry entries of events that happened before `before`, in chunks; return how many."""
    total = 0
    while True:
        status = await conn.execute(
            """DELETE FROM event_ids WHERE ctid = ANY (ARRAY(
                   SELECT ctid FROM event_ids WHERE occurred_at < $1 LIMIT $2))""",
            before,
            chunk_rows,
        )
        n = int(status.rsplit(" ", 1)[-1])
        total += n
        if n < chunk_rows:
            return total


def conflicting_copy(
    row: tuple[Any, ...], received_at: datetime, topic: str, stored_occurred_at: datetime | None
) -> DeadLetter:
    """The dead letter of a copy (an `events` row, EVENT_COLUMNS order) of a stored event with other content.

    It keeps the copy's normalized form: allowlisted and masked like a stored event.
    """
    event_id, occurred_at = row[ROW_EVENT_ID], row[ROW_OCCURRED_AT]
    content = orjson.dumps(
        {
            "event_id": event_id,
            "type": row[ROW_EVENT_TYPE],
            "room_id": row[ROW_ROOM_ID],
            "occurred_at": occurred_at,
            "actor_id": row[ROW_ACTOR_ID],
            "target_id": row[ROW_TARGET_ID],
            "body": row[ROW_BODY],
            "payload": orjson.Fragment(row[ROW_PAYLOAD]),
        }
    )
    if stored_occurred_at is None:  # its first copy in the batch was not stored (expired or deleted)
        detail = f"event {event_id} came twice in one batch with different content; neither was stored"
    else:
        detail = (
            f"event {event_id} was stored before with other content (stored copy occurred_at "
            f"{stored_occurred_at.isoformat()}, this copy {occurred_at.isoformat()}); the stored copy stands"
        )
    return DeadLetter(
        received_at,
        Reason.CONFLICTING_DUPLICATE.value,
        detail,
        topic,
        row[ROW_PARTITION],
        row[ROW_OFFSET],
        content,
        None,
        None,
    )
