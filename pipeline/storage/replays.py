"""The record of dead-letter replays (`dead_letter_replays`, migrations 0009 and 0012): append-only, one row
per dead letter per replay, and at most one row per source record saying its event is in the logs.

Who calls it: `pipeline.ingest.replay`, inside the transaction that writes the replayed event (so the row and
the event commit together), and `roomlogs dead-letters list|show` (what became of a letter).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

import asyncpg

from pipeline.storage.dead_letters import Source, StoredDeadLetter

__all__ = ["Outcome", "Replay", "lock_source", "of_letters", "record", "succeeded"]


class Outcome(StrEnum):
    """What came of replaying one dead letter (the CHECK constraint of `dead_letter_replays.outcome`)."""

    #: the event is in the logs now
    STORED = "stored"
    #: its event was in the logs already, with the same content (a producer resent it fixed, say)
    DUPLICATE = "duplicate"
    #: an earlier replay stored it (or found it stored): nothing done
    ALREADY_REPLAYED = "already_replayed"
    #: the contract still refuses the record
    STILL_INVALID = "still_invalid"
    #: older than its room's retention (or its day was dropped): never stored again
    EXPIRED = "expired"
    #: an authorized deletion covers it
    DELETED = "deleted"
    #: its event id is stored with other content
    CONFLICTING_DUPLICATE = "conflicting_duplicate"
    #: PostgreSQL refused the row
    REJECTED = "rejected"
    #: Kafka no longer holds the record
    NOT_IN_KAFKA = "not_in_kafka"
    #: the record Kafka now holds at those coordinates is another one (its SHA-256 or size differ from the
    #: letter's): the topic was deleted and recreated, or the coordinates moved; nothing stored (0012)
    SOURCE_CHANGED = "source_changed"
    #: the letter kept no SHA-256 of what was received, so the record read back cannot be shown to be the
    #: one set aside: not replayed (0012)
    NO_FINGERPRINT = "no_fingerprint"
    #: its UTC day is closed and sealed: the seal says the day's events are those it covers
    DAY_SEALED = "day_sealed"

    @property
    def in_the_logs(self) -> bool:
        return self in (Outcome.STORED, Outcome.DUPLICATE, Outcome.ALREADY_REPLAYED)


_SUCCESS = [Outcome.STORED.value, Outcome.DUPLICATE.value]
_COLUMNS = """replay_id, run_id, replayed_at, replayed_by, dead_letter_id, src_topic, src_partition,
              src_offset, reason, outcome, event_id::text AS event_id, detail"""


@dataclass(frozen=True, slots=True)
class Replay:
    replay_id: int
    run_id: uuid.UUID
    replayed_at: datetime
    replayed_by: str
    dead_letter_id: int
    src_topic: str
    src_partition: int
    src_offset: int
    reason: str
    outcome: str
    event_id: str | None
    detail: str


async def lock_source(conn: asyncpg.Connection, source: Source) -> None:
    """Inside a transaction: no other replay of this record runs until it ends."""
    await conn.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended(current_schema() || ':roomlogs.replay:' || $1, 0))",
        str(source),
    )


async def succeeded(conn: asyncpg.Connection, source: Source) -> Replay | None:
    """The replay that put this record's event in the logs, if one did."""
    row = await conn.fetchrow(
        f"""SELECT {_COLUMNS} FROM dead_letter_replays
             WHERE src_topic = $1 AND src_partition = $2 AND src_offset = $3 AND outcome = ANY($4::text[])""",
        source.topic,
        source.partition,
        source.offset,
        _SUCCESS,
    )
    return Replay(**dict(row)) if row is not None else None


async def record(
    conn: asyncpg.Connection,
    *,
    run_id: uuid.UUID,
    replayed_by: str,
    letter: StoredDeadLetter,
    outcome: Outcome,
    event_id: str | None,
    detail: str,
) -> None:
    await conn.execute(
        """INSERT INTO dead_letter_replays (run_id, replayed_by, dead_letter_id, src_topic, src_partition,
                                            src_offset, reason, outcome, event_id, detail)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9::uuid, $10)""",
        run_id,
        replayed_by,
        letter.dead_letter_id,
        letter.src_topic,
        letter.src_partition,
        letter.src_offset,
        letter.reason,
        outcome.value,
        event_id,
        detail,
    )


async def of_letters(conn: asyncpg.Connection, letters: Sequence[StoredDeadLetter]) -> list[Replay]:
    """Every replay of these letters or of their source records, oldest first."""
    if not letters:
        return []
    rows = await conn.fetch(
        f"""SELECT {_COLUMNS} FROM dead_letter_replays
             WHERE dead_letter_id = ANY($1::bigint[])
                OR (src_topic, src_partition, src_offset) IN (
                    SELECT t, p, o FROM unnest($2::text[], $3::int[], $4::bigint[]) AS s(t, p, o))
             ORDER BY replay_id""",
        [d.dead_letter_id for d in letters],
        [d.src_topic for d in letters],
        [d.src_partition for d in letters],
        [d.src_offset for d in letters],
    )
    return [Replay(**dict(r)) for r in rows]
