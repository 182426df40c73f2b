"""Reading dead letters (`dead_letters`) back: for operators (`roomlogs dead-letters list|show`) and replay.

The ingest writer appends them (binary COPY in each batch's transaction, pipeline/storage/writer.py);
retention drops their day partitions after ROOMLOGS_DEAD_LETTER_RETENTION_DAYS. Nothing updates them (a
trigger forbids it): what became of a replayed one is in `dead_letter_replays` (pipeline/storage/replays.py).
A dead letter is named by its `dead_letter_id` (migration 0009) or by the Kafka record it came from,
`topic/partition/offset` (several dead letters can name one record: a copy conflicting with a stored event
is dead-lettered each time it is re-consumed).

Every dead letter keeps the SHA-256 and size of the record's value as received (`fingerprint`), except a
private message's (its size only) and a record without a value: a replay checks with them that the record it
reads back from Kafka is the one that was set aside.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from pipeline.settings import TOPIC_NAME

__all__ = ["Source", "StoredDeadLetter", "find", "parse_reference"]

_COLUMNS = """dead_letter_id, received_at, reason, detail, src_topic, src_partition, src_offset, content,
              raw_sha256, raw_bytes"""
#: topic/partition/offset; Kafka topic names are [a-zA-Z0-9._-], so the last two slashes split it
_SOURCE = re.compile(rf"^(?P<topic>{TOPIC_NAME})/(?P<partition>\d{{1,9}})/(?P<offset>\d{{1,19}})$")


@dataclass(frozen=True, slots=True)
class Source:
    """Where a record sits in Kafka."""

    topic: str
    partition: int
    offset: int

    def __str__(self) -> str:
        return f"{self.topic}/{self.partition}/{self.offset}"


@dataclass(frozen=True, slots=True)
class StoredDeadLetter:
    dead_letter_id: int
    received_at: datetime
    reason: str
    detail: str
    src_topic: str
    src_partition: int
    src_offset: int
    #: the contract's allowlisted view of what was received (pipeline/events/deadletter.py), or None
    content: Any
    raw_sha256: bytes | None
    raw_bytes: int | None

    @property
    def source(self) -> Source:
        return Source(self.src_topic, self.src_partition, self.src_offset)


def parse_reference(text: str) -> int | Source:
    """A dead letter's id (`42`) or its source record (`roomlogs.events/3/1200`); ValueError otherwise."""
    if text.isdigit():
        return int(text)
    m = _SOURCE.match(text)
    if m is None:
        raise ValueError(f"{text!r} is neither a dead letter id nor topic/partition/offset")
    return Source(m.group("topic"), int(m.group("partition")), int(m.group("offset")))


async def find(
    conn: asyncpg.Connection,
    *,
    reason: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    ids: Sequence[int] | None = None,
    sources: Sequence[Source] | None = None,
    limit: int = 100,
    newest_first: bool = True,
) -> list[StoredDeadLetter]:
    """Dead letters matching every filter given (received in [since, until)), at most `limit` of them."""
    order = "DESC" if newest_first else "ASC"
    rows = await conn.fetch(
        f"""SELECT {_COLUMNS} FROM dead_letters
             WHERE ($1::text IS NULL OR reason = $1)
               AND ($2::timestamptz IS NULL OR received_at >= $2)
               AND ($3::timestamptz IS NULL OR received_at < $3)
               AND ($4::bigint[] IS NULL OR dead_letter_id = ANY($4))
               AND ($5::text[] IS NULL
                    OR (src_topic, src_partition, src_offset) IN (
                        SELECT t, p, o FROM unnest($5::text[], $6::int[], $7::bigint[]) AS s(t, p, o)))
             ORDER BY received_at {order}, dead_letter_id {order}
             LIMIT $8""",
        reason,
        since,
        until,
        None if ids is None else list(ids),
        None if sources is None else [s.topic for s in sources],
        None if sources is None else [s.partition for s in sources],
        None if sources is None else [s.offset for s in sources],
        limit,
    )
    return [StoredDeadLetter(**dict(r)) for r in rows]
