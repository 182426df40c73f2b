"""Offsets of record (`ingest_offsets`): how far ingest has durably written each partition of a topic, in
which log (the topic's id), and every move of them other than a batch written (`offset_changes`).

The one module that reads and writes these tables. The batch writer locks a batch's rows (`lock_for_batch`)
and advances them (`advance`) in each batch's transaction; the ingest service moves them on assignment when
they no longer fit the broker's log (`settle`, decided by pipeline.ingest.positions), and `roomlogs offsets
move` when an operator says so; `roomlogs status`, `roomlogs offsets`, the demo and the tests read them.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from pipeline.errors import RoomlogsError
from pipeline.kafka_logs import RecordMark

__all__ = [
    "Change",
    "OffsetsMovedError",
    "StoredChange",
    "StoredOffset",
    "advance",
    "changes",
    "last_change",
    "lock_for_batch",
    "settle",
    "skipped_totals",
    "stored_offsets",
]

#: offset_changes.kind (the table's CHECK constraint)
KINDS = ("first_read", "new_log", "deleted_unread", "database_behind", "moved")


@dataclass(frozen=True, slots=True)
class StoredOffset:
    partition: int
    #: the next offset to read: every record below it is written (stored, dead-lettered or skipped)
    next_offset: int
    #: when the last batch of this partition committed
    updated_at: datetime
    #: the broker's id of the topic incarnation these offsets count in (None: unknown)
    topic_id: uuid.UUID | None = None
    #: the last record written (None: none since the offsets were set)
    last: RecordMark | None = None


class OffsetsMovedError(RoomlogsError):
    """The offsets of record of some partitions are behind where the writer's batch continues from (or gone):
    a restored database, or an operator's move back. Nothing of the batch was written; the ingest service
    judges those partitions again and reads them from their stored offsets."""

    def __init__(self, stored: Mapping[int, int | None], expected: Mapping[int, int]) -> None:
        self.stored = dict(stored)
        self.expected = dict(expected)
        shown = ", ".join(
            f"partition {p}: stored {'none' if s is None else s}, expected {expected[p]}"
            for p, s in sorted(self.stored.items())
        )
        super().__init__(f"the offsets of record moved back under this worker ({shown})")


_SELECT = """SELECT partition, next_offset, updated_at, topic_id, last_offset, last_timestamp_ms, last_crc32
               FROM ingest_offsets"""


def _stored(r: asyncpg.Record) -> StoredOffset:
    last = None
    if r["last_offset"] is not None:
        last = RecordMark(r["last_offset"], r["last_timestamp_ms"], r["last_crc32"])
    return StoredOffset(r["partition"], r["next_offset"], r["updated_at"], r["topic_id"], last)


async def stored_offsets(
    conn: asyncpg.Connection, consumer_group: str, topic: str, partitions: Iterable[int] | None = None
) -> dict[int, StoredOffset]:
    """The offsets of record of `consumer_group` on `topic` by partition (all, or those asked; a partition
    never written is absent)."""
    rows = await conn.fetch(
        _SELECT + " WHERE consumer_group = $1 AND topic = $2 AND ($3::int[] IS NULL OR partition = ANY($3))",
        consumer_group,
        topic,
        None if partitions is None else list(partitions),
    )
    return {r["partition"]: _stored(r) for r in rows}


async def lock_for_batch(
    conn: asyncpg.Connection,
    consumer_group: str,
    topic: str,
    first_offsets: Mapping[int, int],
    resumes_from: Mapping[int, int] | None = None,
) -> dict[int, int]:
    """Inside a batch's transaction: lock its partitions' rows until commit (a second writer of the same
    partitions waits here) and return {partition: stored next offset} where an earlier transaction already
    wrote part of the batch (the records below it must not be written again).

    `resumes_from`: where the caller believes the offsets of record stand. A partition whose stored offset
    is behind it, or absent, raises OffsetsMovedError: writing on would jump over records nobody wrote.
    """
    wanted = set(first_offsets) | set(resumes_from or ())
    rows = await conn.fetch(
        """SELECT partition, next_offset FROM ingest_offsets
            WHERE consumer_group = $1 AND topic = $2 AND partition = ANY($3::int[])
            FOR UPDATE""",
        consumer_group,
        topic,
        sorted(wanted),
    )
    stored = {r["partition"]: r["next_offset"] for r in rows}
    if resumes_from:
        behind = {p: stored.get(p) for p, at in resumes_from.items() if stored.get(p, -1) < at}
        if behind:
            raise OffsetsMovedError(behind, {p: resumes_from[p] for p in behind})
    return {p: nxt for p, nxt in stored.items() if p in first_offsets and nxt > first_offsets[p]}


async def advance(
    conn: asyncpg.Connection,
    consumer_group: str,
    topic: str,
    next_offsets: Mapping[int, int],
    last_records: Mapping[int, RecordMark] | None = None,
) -> None:
    """Inside a batch's transaction: record that everything below `next_offsets` is written (never back),
    and the batch's last record of each partition where it is now the last one written."""
    marks = last_records or {}
    await conn.executemany(
        """INSERT INTO ingest_offsets
               (consumer_group, topic, partition, next_offset, last_offset, last_timestamp_ms, last_crc32)
           VALUES ($1, $2, $3, $4, $5, $6, $7)
           ON CONFLICT (consumer_group, topic, partition) DO UPDATE SET
               next_offset = GREATEST(ingest_offsets.next_offset, EXCLUDED.next_offset),
               last_offset = CASE WHEN EXCLUDED.next_offset >= ingest_offsets.next_offset
                                   AND EXCLUDED.last_offset IS NOT NULL
                                  THEN EXCLUDED.last_offset ELSE ingest_offsets.last_offset END,
               last_timestamp_ms = CASE WHEN EXCLUDED.next_offset >= ingest_offsets.next_offset
                                         AND EXCLUDED.last_offset IS NOT NULL
                                        THEN EXCLUDED.last_timestamp_ms
                                        ELSE ingest_offsets.last_timestamp_ms END,
               last_crc32 = CASE WHEN EXCLUDED.next_offset >= ingest_offsets.next_offset
                                  AND EXCLUDED.last_offset IS NOT NULL
                                 THEN EXCLUDED.last_crc32 ELSE ingest_offsets.last_crc32 END,
               updated_at = now()""",
        [(consumer_group, topic, p, o, *marks.get(p, (None, None, None))) for p, o in next_offsets.items()],
    )


@dataclass(frozen=True, slots=True)
class Change:
    """One move of a partition's offsets of record other than a batch written (an `offset_changes` row)."""

    partition: int
    kind: str
    from_offset: int | None
    to_offset: int
    detail: str
    changed_by: str
    skipped_records: int = 0
    reread_records: int = 0
    skipped_after: datetime | None = None
    skipped_before: datetime | None = None
    old_topic_id: uuid.UUID | None = None
    new_topic_id: uuid.UUID | None = None


@dataclass(frozen=True, slots=True)
class StoredChange:
    change_id: int
    changed_at: datetime
    consumer_group: str
    topic: str
    change: Change


async def settle(
    conn: asyncpg.Connection,
    consumer_group: str,
    topic: str,
    expected: StoredOffset | None,
    *,
    partition: int,
    to_offset: int,
    topic_id: uuid.UUID | None,
    change: Change | None,
) -> bool:
    """Set a partition's offsets of record to `to_offset` in `topic_id`'s log, recording `change`, if they
    still are what `expected` says (compare and set, so that two workers judging the same partition at once
    record one change). False when they moved meanwhile: read and judge again.

    The last record written is forgotten when the offset moves (it is no longer the record before it).
    Runs in its own transaction (a savepoint inside the caller's)."""
    async with conn.transaction():
        row = await conn.fetchrow(
            _SELECT + " WHERE consumer_group = $1 AND topic = $2 AND partition = $3 FOR UPDATE",
            consumer_group,
            topic,
            partition,
        )
        now = None if row is None else _stored(row)
        if (now is None) != (expected is None) or (
            now is not None
            and expected is not None
            and (now.next_offset, now.topic_id) != (expected.next_offset, expected.topic_id)
        ):
            return False
        if now is None:
            inserted = await conn.execute(
                """INSERT INTO ingest_offsets (consumer_group, topic, partition, next_offset, topic_id)
                   VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING""",
                consumer_group,
                topic,
                partition,
                to_offset,
                topic_id,
            )
            if inserted.endswith(" 0"):  # another writer made the row meanwhile: judge again
                return False
        elif now.next_offset != to_offset or now.topic_id != topic_id:
            await conn.execute(
                """UPDATE ingest_offsets SET next_offset = $4, topic_id = $5,
                          last_offset = CASE WHEN $4 = next_offset THEN last_offset END,
                          last_timestamp_ms = CASE WHEN $4 = next_offset THEN last_timestamp_ms END,
                          last_crc32 = CASE WHEN $4 = next_offset THEN last_crc32 END
                    WHERE consumer_group = $1 AND topic = $2 AND partition = $3""",
                consumer_group,
                topic,
                partition,
                to_offset,
                topic_id,
            )
        if change is not None:
            await _record(conn, consumer_group, topic, change)
    return True


async def _record(conn: asyncpg.Connection, consumer_group: str, topic: str, c: Change) -> None:
    await conn.execute(
        """INSERT INTO offset_changes (consumer_group, topic, partition, kind, from_offset, to_offset,
                                       skipped_records, reread_records, skipped_after, skipped_before,
                                       old_topic_id, new_topic_id, changed_by, detail)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)""",
        consumer_group,
        topic,
        c.partition,
        c.kind,
        c.from_offset,
        c.to_offset,
        c.skipped_records,
        c.reread_records,
        c.skipped_after,
        c.skipped_before,
        c.old_topic_id,
        c.new_topic_id,
        c.changed_by,
        c.detail,
    )


async def changes(
    conn: asyncpg.Connection,
    consumer_group: str,
    topic: str,
    *,
    partitions: Iterable[int] | None = None,
    kinds: Iterable[str] | None = None,
    limit: int = 100,
) -> list[StoredChange]:
    """The newest `limit` changes of the offsets of record (of the partitions and kinds asked), newest
    first."""
    rows = await conn.fetch(
        """SELECT * FROM offset_changes
            WHERE consumer_group = $1 AND topic = $2
              AND ($3::int[] IS NULL OR partition = ANY($3))
              AND ($4::text[] IS NULL OR kind = ANY($4))
            ORDER BY change_id DESC LIMIT $5""",
        consumer_group,
        topic,
        None if partitions is None else list(partitions),
        None if kinds is None else list(kinds),
        limit,
    )
    return [_change_of(r) for r in rows]


async def last_change(
    conn: asyncpg.Connection, consumer_group: str, topic: str, partition: int
) -> StoredChange | None:
    """The newest change of one partition's offsets of record (None: never changed but by batches)."""
    found = await changes(conn, consumer_group, topic, partitions=[partition], limit=1)
    return found[0] if found else None


def _change_of(r: asyncpg.Record) -> StoredChange:
    return StoredChange(
        r["change_id"],
        r["changed_at"],
        r["consumer_group"],
        r["topic"],
        Change(
            r["partition"],
            r["kind"],
            r["from_offset"],
            r["to_offset"],
            r["detail"],
            r["changed_by"],
            r["skipped_records"],
            r["reread_records"],
            r["skipped_after"],
            r["skipped_before"],
            r["old_topic_id"],
            r["new_topic_id"],
        ),
    )


async def skipped_totals(conn: asyncpg.Connection, consumer_group: str, topic: str) -> dict[int, int]:
    """Per partition, the records ever skipped unread (deleted by the broker, or an operator's move
    forward)."""
    rows = await conn.fetch(
        """SELECT partition, sum(skipped_records)::bigint AS n FROM offset_changes
            WHERE consumer_group = $1 AND topic = $2 AND skipped_records > 0 GROUP BY partition""",
        consumer_group,
        topic,
    )
    return {r["partition"]: r["n"] for r in rows}
