"""Offsets of record (`ingest_offsets`): how far ingest has durably written each partition of a topic.

The batch writer stores them in each batch's transaction (pipeline/storage/writer.py); this module reads them
for operators (`roomlogs status`) and anything else that asks "how far are we".
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg

__all__ = ["StoredOffset", "stored_offsets"]


@dataclass(frozen=True, slots=True)
class StoredOffset:
    partition: int
    #: the next offset to read: every record below it is written (stored, dead-lettered or skipped)
    next_offset: int
    #: when the last batch of this partition committed
    updated_at: datetime


async def stored_offsets(
    conn: asyncpg.Connection, consumer_group: str, topic: str
) -> dict[int, StoredOffset]:
    """The offsets of record of `consumer_group` on `topic`, by partition (never written: absent)."""
    rows = await conn.fetch(
        """SELECT partition, next_offset, updated_at FROM ingest_offsets
            WHERE consumer_group = $1 AND topic = $2""",
        consumer_group,
        topic,
    )
    return {r["partition"]: StoredOffset(r["partition"], r["next_offset"], r["updated_at"]) for r in rows}
