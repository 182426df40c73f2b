"""Offsets of record (`ingest_offsets`): how far ingest has durably written each partition of a topic.

The one module that reads and writes the table. The batch writer locks a batch's rows (`lock_for_batch`)
and advances them (`advance`) in each batch's transaction; the ingest consumer reads them on every
assignment to seek there; `roomlogs status`, the demo and the tests read them to tell how far ingest is.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

import asyncpg

__all__ = ["StoredOffset", "advance", "lock_for_batch", "stored_offsets"]


@dataclass(frozen=True, slots=True)
class StoredOffset:
    partition: int
    #: the next offset to read: every record below it is written (stored, dead-lettered or skipped)
    next_offset: int
    #: when the last batch of this partition committed
    updated_at: datetime


async def stored_offsets(
    conn: asyncpg.Connection, consumer_group: str, topic: str, partitions: Iterable[int] | None = None
) -> dict[int, StoredOffset]:
    """The offsets of record of `consumer_group` on `topic` by partition (all, or those asked; a partition
    never written is absent)."""
    rows = await conn.fetch(
        """SELECT partition, next_offset, updated_at FROM ingest_offsets
            WHERE consumer_group = $1 AND topic = $2 AND ($3::int[] IS NULL OR partition = ANY($3::int[]))""",
        consumer_group,
        topic,
        None if partitions is None else list(partitions),
    )
    return {r["partition"]: StoredOffset(r["partition"], r["next_offset"], r["updated_at"]) for r in rows}


async def lock_for_batch(
    conn: asyncpg.Connection, consumer_group: str, topic: str, first_offsets: Mapping[int, int]
) -> dict[int, int]:
    """Inside a batch's transaction: lock its partitions' rows until commit (a second writer of the same
    partitions waits here) and return {partition: stored next offset} where an earlier transaction already
    wrote part of the batch (the records below it must not be written again)."""
    rows = await conn.fetch(
        """SELECT partition, next_offset FROM ingest_offsets
            WHERE consumer_group = $1 AND topic = $2 AND partition = ANY($3::int[])
            FOR UPDATE""",
        consumer_group,
        topic,
        list(first_offsets),
    )
    return {
        r["partition"]: r["next_offset"] for r in rows if r["next_offset"] > first_offsets[r["partition"]]
    }


async def advance(
    conn: asyncpg.Connection, consumer_group: str, topic: str, next_offsets: Mapping[int, int]
) -> None:
    """Inside a batch's transaction: record that everything below `next_offsets` is written (never back)."""
    await conn.executemany(
        """INSERT INTO ingest_offsets (consumer_group, topic, partition, next_offset)
           VALUES ($1, $2, $3, $4)
           ON CONFLICT (consumer_group, topic, partition)
           DO UPDATE SET next_offset = GREATEST(ingest_offsets.next_offset, EXCLUDED.next_offset),
                         updated_at = now()""",
        [(consumer_group, topic, p, o) for p, o in next_offsets.items()],
    )
