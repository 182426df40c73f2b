"""The event-id registry (`event_ids`): an event id is stored at most once, whatever its copies carry.

The `events` key is (retention class, event time, event id), as a partitioned table's key must include the
partition columns; it cannot see a copy re-delivered after its room changed class, or a copy with another
timestamp. Every id the writer stores is registered here first, in the batch's transaction, with the event
time of the copy stored. A later copy of a registered id is compared with the stored row (`settle`): the
same content is a duplicate (skipped and counted), other content a conflicting duplicate (dead-lettered by
the caller). The usual path costs one binary COPY of (id, time) per batch; comparing happens only for ids
seen before.

"Content" is what the normalizer keeps of an event: event time, room, type, actor, target, text and
payload; not its retention class, Kafka coordinates or the JSON spelling it arrived in.

Who calls it: the batch writer (`register`, `settle`), and maintenance (`prune`: ids whose event time is
older than the longest retention, which no replay can bring back because every class's horizon refuses
them).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg
import orjson

from pipeline.events.deadletter import fingerprint
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
    #: position -> event time of the copy registered earlier
    known: dict[int, datetime] = field(default_factory=dict)


async def register(conn: asyncpg.Connection, entries: Sequence[tuple[str, datetime]]) -> Registration:
    """Register (event_id, occurred_at) entries inside the caller's transaction.

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
                "event_ids", records=entries, columns=("event_id", "occurred_at")
            )
    except asyncpg.UniqueViolationError:
        pass
    else:
        out.new = list(range(len(entries)))
        return out
    await conn.execute(
        f"""CREATE TEMP TABLE IF NOT EXISTS {_STAGING}
            (pos integer, event_id uuid, occurred_at timestamptz) ON COMMIT DELETE ROWS"""
    )
    await conn.execute(f"TRUNCATE {_STAGING}")
    await conn.copy_records_to_table(
        _STAGING, records=[(i, *e) for i, e in enumerate(entries)], columns=("pos", "event_id", "occurred_at")
    )
    inserted = await conn.fetch(
        f"""WITH ins AS (
                INSERT INTO event_ids (event_id, occurred_at)
                SELECT event_id, occurred_at FROM {_STAGING}
                ON CONFLICT (event_id) DO NOTHING
                RETURNING event_id)
            SELECT s.pos FROM {_STAGING} s JOIN ins USING (event_id)"""
    )
    out.new = sorted(r["pos"] for r in inserted)
    fresh = set(out.new)
    # a new statement, a new snapshot: it sees ids another transaction committed while we waited on them
    known = await conn.fetch(
        f"""SELECT s.pos, e.occurred_at FROM {_STAGING} s JOIN event_ids e USING (event_id)
             WHERE s.pos <> ALL($1::int[])""",
        list(fresh),
    )
    out.known = {r["pos"]: r["occurred_at"] for r in known}
    return out


async def stored_times(conn: asyncpg.Connection, event_ids: Sequence[str]) -> dict[str, datetime]:
    """{event id: event time of the registered copy} for those of `event_ids` that are registered."""
    rows = await conn.fetch(
        "SELECT event_id::text AS id, occurred_at FROM event_ids WHERE event_id = ANY($1::uuid[])",
        list(event_ids),
    )
    return {r["id"]: r["occurred_at"] for r in rows}


#: A conflicting copy: its `events` row, the registered copy's event time, and what differs (`_CONTENT` names)
Conflict = tuple[tuple[Any, ...], datetime | None, tuple[str, ...]]


async def settle(
    conn: asyncpg.Connection, copies: Sequence[tuple[tuple[Any, ...], datetime | None]]
) -> tuple[list[tuple[Any, ...]], list[Conflict]]:
    """Sort copies of registered ids (an `events` row each, with the registered copy's event time) into
    (duplicates, conflicts).

    A copy is a duplicate when the stored row (found by the copy's room, the registered time and the id,
    through the room index) has the same content. Not finding it means another room or time, a conflict,
    unless the id is registered with no row left (retention or an authorized deletion removed it; the
    caller refuses those copies before this), which also counts as a duplicate: the event was stored once.
    """
    lookup = [(row[ROW_ROOM_ID], row[ROW_EVENT_ID], at) for row, at in copies if at is not None]
    stored: dict[tuple[str, str], tuple[Any, ...]] = {}
    gone: set[str] = set()
    if lookup:
        rows = await conn.fetch(
            """SELECT s.event_id::text AS id, s.room_id, s.occurred_at, s.event_type, s.actor_id,
                      s.target_id, s.body, s.payload
                 FROM unnest($1::text[], $2::uuid[], $3::timestamptz[]) AS k(room_id, event_id, occurred_at)
                 JOIN stored_events s
                   ON s.room_id = k.room_id AND s.occurred_at = k.occurred_at AND s.event_id = k.event_id""",
            [k[0] for k in lookup],
            [k[1] for k in lookup],
            [k[2] for k in lookup],
        )
        stored = {
            (r["room_id"], r["id"]): (
                r["occurred_at"],
                r["event_type"],
                r["actor_id"],
                r["target_id"],
                r["body"],
                r["payload"],
            )
            for r in rows
        }
        gone = await _registered_without_row(conn, [k for k in lookup if (k[0], k[1]) not in stored])
    duplicates: list[tuple[Any, ...]] = []
    conflicts: list[Conflict] = []
    for row, at in copies:
        held = stored.get((row[ROW_ROOM_ID], row[ROW_EVENT_ID])) if at is not None else None
        if held is None:
            if at is not None and row[ROW_EVENT_ID] in gone:
                duplicates.append(row)  # no row left in any room: removed by retention or a deletion since
            elif at == row[ROW_OCCURRED_AT]:  # the stored copy is in another room; the rest is not compared
                conflicts.append((row, at, ("room_id (the rest not compared)",)))
            else:
                conflicts.append((row, at, ("room_id", "occurred_at (the rest not compared)")))
            continue
        content = _content(row)
        if held == content:
            duplicates.append(row)
        else:
            conflicts.append(
                (row, at, tuple(n for n, a, b in zip(_CONTENT, held, content, strict=True) if a != b))
            )
    return duplicates, conflicts


async def _registered_without_row(
    conn: asyncpg.Connection, missing: Sequence[tuple[str, str, datetime]]
) -> set[str]:
    """Ids among `missing` (not found in their copy's room) that have no stored row in any room."""
    if not missing:
        return set()
    rows = await conn.fetch(
        """SELECT k.event_id::text AS id
             FROM unnest($1::uuid[], $2::timestamptz[]) AS k(event_id, occurred_at)
            WHERE NOT EXISTS (SELECT 1 FROM stored_events s
                               WHERE s.occurred_at = k.occurred_at AND s.event_id = k.event_id)""",
        [m[1] for m in missing],
        [m[2] for m in missing],
    )
    return {r["id"] for r in rows}


#: The names of `_content`'s fields, as the contract names them (what a conflict's dead letter says differs)
_CONTENT = ("occurred_at", "type", "actor", "target", "text", "the rest of the event (data, actor's details)")


def _content(row: tuple[Any, ...]) -> tuple[Any, ...]:
    """What a copy (an `events` row) is compared on, in the shape the stored row is read in."""
    return (
        row[ROW_OCCURRED_AT],
        row[ROW_EVENT_TYPE],
        row[ROW_ACTOR_ID],
        row[ROW_TARGET_ID],
        row[ROW_BODY],
        orjson.loads(row[ROW_PAYLOAD]),
    )


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
    row: tuple[Any, ...],
    received_at: datetime,
    topic: str,
    stored_occurred_at: datetime | None,
    raw: bytes | None,
    differs: Sequence[str] = (),
) -> DeadLetter:
    """The dead letter of a copy (an `events` row, EVENT_COLUMNS order) of a stored event with other content;
    `differs` names what differs from the stored copy (the detail says it, for the producer to find).

    It keeps the copy's normalized form (allowlisted and masked like a stored event) and the fingerprint of
    `raw`, the record's value as received (None: not at hand), so the copy that lost can be matched to its
    record: by its producer, and by a replay reading it back from Kafka.
    """
    event_id, occurred_at = row[ROW_EVENT_ID], row[ROW_OCCURRED_AT]
    if stored_occurred_at is None:  # its first copy in the batch was not stored (expired or deleted)
        detail = f"event {event_id} came twice in one batch with different content; neither was stored"
    else:
        what = f"other {', '.join(differs)}" if differs else "other content"
        detail = (
            f"event {event_id} was stored before with {what} than this copy (stored copy occurred_at "
            f"{stored_occurred_at.isoformat()}, this copy {occurred_at.isoformat()}); the stored copy stands"
        )
    return set_aside(row, Reason.CONFLICTING_DUPLICATE, detail, received_at, topic, raw)


def set_aside(
    row: tuple[Any, ...], reason: Reason, detail: str, received_at: datetime, topic: str, raw: bytes | None
) -> DeadLetter:
    """The dead letter of a valid event the writer does not store (an `events` row, EVENT_COLUMNS order):
    its normalized form, allowlisted and masked like a stored event, and the fingerprint of `raw`."""
    content = orjson.dumps(
        {
            "event_id": row[ROW_EVENT_ID],
            "type": row[ROW_EVENT_TYPE],
            "room_id": row[ROW_ROOM_ID],
            "occurred_at": row[ROW_OCCURRED_AT],
            "actor_id": row[ROW_ACTOR_ID],
            "target_id": row[ROW_TARGET_ID],
            "body": row[ROW_BODY],
            "payload": orjson.Fragment(row[ROW_PAYLOAD]),
        }
    )
    return DeadLetter(
        received_at,
        reason.value,
        detail,
        topic,
        row[ROW_PARTITION],
        row[ROW_OFFSET],
        content,
        *fingerprint(raw),
    )
