"""The dead-letter outbox (`dead_letter_outbox`): dead letters waiting for the dead-letter topic.

The `dead_letters` table is the record of truth; the topic is for consumers (alerting, producer teams).
Sending to Kafka after the batch commits would lose mirrors on a crash, a broker outage or one message the
broker refuses, so each dead letter is queued here in the batch's own transaction and a relay
(pipeline/ingest/mirror.py) sends and deletes rows until the queue is empty: every dead letter reaches the
topic at least once.

Message format (documented in schemas/README.md): key "<src_topic>/<src_partition>/<src_offset>"; value the
dead letter's `content` (JSON, empty when nothing could be kept); headers roomlogs.reason, roomlogs.detail
(UTF-8, at most 1000 bytes), roomlogs.source, roomlogs.received_at, roomlogs.raw_sha256 (hex) and
roomlogs.raw_bytes when known. A message the broker refuses as too large is sent as a reference instead
(`reference_value`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg
import orjson

from pipeline.storage.batch import DeadLetter

DETAIL_HEADER_MAX_BYTES = 1000


@dataclass(frozen=True, slots=True)
class Message:
    outbox_id: int
    key: bytes
    value: bytes
    headers: list[tuple[str, bytes]]


def message_of(dl: DeadLetter) -> tuple[bytes, bytes, bytes]:
    """(key, value, headers as JSON) of a dead letter's mirror message."""
    source = f"{dl.src_topic}/{dl.src_partition}/{dl.src_offset}"
    headers = [
        ["roomlogs.reason", dl.reason],
        [
            "roomlogs.detail",
            dl.detail.encode("utf-8", "replace")[:DETAIL_HEADER_MAX_BYTES].decode("utf-8", "ignore"),
        ],
        ["roomlogs.source", source],
        ["roomlogs.received_at", dl.received_at.isoformat()],
    ]
    if dl.raw_sha256 is not None:
        headers.append(["roomlogs.raw_sha256", dl.raw_sha256.hex()])
    if dl.raw_bytes is not None:
        headers.append(["roomlogs.raw_bytes", str(dl.raw_bytes)])
    return source.encode(), dl.content or b"", orjson.dumps(headers)


def reference_value(message: Message) -> bytes:
    """What is sent instead of a message the broker refuses as too large: where to find the dead letter."""
    return orjson.dumps(
        {
            "truncated": True,
            "original_value_bytes": len(message.value),
            "record": "dead_letters table, by roomlogs.source and roomlogs.received_at",
        }
    )


async def enqueue(conn: asyncpg.Connection, dead_letters: Sequence[DeadLetter]) -> int:
    """Queue mirrors of `dead_letters` (inside the transaction that stores them)."""
    if not dead_letters:
        return 0
    await conn.copy_records_to_table(
        "dead_letter_outbox",
        records=[message_of(dl) for dl in dead_letters],
        columns=("message_key", "value", "headers"),
    )
    return len(dead_letters)


async def claim(conn: asyncpg.Connection, limit: int) -> list[Message]:
    """Lock up to `limit` queued messages, oldest first, that no other relay holds (inside a transaction)."""
    rows = await conn.fetch(
        """SELECT outbox_id, message_key, value, headers FROM dead_letter_outbox
            ORDER BY outbox_id LIMIT $1 FOR UPDATE SKIP LOCKED""",
        limit,
    )
    return [
        Message(
            r["outbox_id"],
            r["message_key"],
            r["value"],
            [(name, value.encode()) for name, value in r["headers"]],
        )
        for r in rows
    ]


async def done(conn: asyncpg.Connection, outbox_ids: Sequence[int]) -> None:
    if outbox_ids:
        await conn.execute(
            "DELETE FROM dead_letter_outbox WHERE outbox_id = ANY($1::bigint[])", list(outbox_ids)
        )


async def pending(conn: asyncpg.Connection) -> int:
    return int(await conn.fetchval("SELECT count(*) FROM dead_letter_outbox"))
