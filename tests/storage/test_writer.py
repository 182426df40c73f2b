"""The batch writer against real PostgreSQL: a refused row is isolated, duplicates are skipped,
re-delivered records are fenced, everything of a batch commits together with its offsets, and the dead
letters it makes itself keep the fingerprint of the record received."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import uuid_utils

from pipeline.storage import db
from pipeline.storage.batch import WriteBatch
from pipeline.storage.migrate import migrate
from pipeline.storage.partitions import PartitionManager
from pipeline.storage.writer import BatchWriter

NOW = datetime.now(UTC)


def row(offset: int, *, payload: bytes | None = None, event_id: str | None = None) -> tuple[Any, ...]:
    return (
        event_id or str(uuid_utils.uuid7()),
        NOW - timedelta(seconds=offset),
        "public",
        "room-w",
        "chat.message",
        1,
        "u-1",
        None,
        f"text {offset}",
        payload or orjson.dumps({"n": offset}),
        0,
        offset,
    )


def batch(rows: list[tuple[Any, ...]], first: int, nxt: int, variants: Any = ()) -> WriteBatch:
    return WriteBatch(
        topic="t",
        consumer_group="g",
        rows=rows,
        variants=list(variants),
        first_offsets={0: first},
        next_offsets={0: nxt},
        event_days={("public", r[1].date()) for r in rows},
    )


async def test_a_row_postgres_refuses_is_dead_lettered_and_its_neighbours_stored(
    postgres_dsn: str, pg_schema: str
) -> None:
    conn = await db.connect(postgres_dsn, pg_schema)
    await migrate(conn, pg_schema)
    await conn.close()
    pool = await db.create_pool(postgres_dsn, pg_schema, 2)
    try:
        partitions = PartitionManager()
        async with pool.acquire() as c:
            await partitions.load(c)
        writer = BatchWriter(pool, partitions)
        same_id = str(uuid_utils.uuid7())
        rows = [row(i) for i in range(10)]
        rows[6] = row(6, payload=b"{this is not json")  # jsonb refuses it: only PostgreSQL can tell
        rows[8] = row(8, event_id=same_id)
        retry = (*row(8, event_id=same_id)[:-1], 10)  # the same event again (a producer retry)
        outcome = await writer.write(batch(rows, 0, 11, [retry]), NOW)
        assert (outcome.stored, outcome.duplicates, len(outcome.rejected)) == (9, 1, 1)

        again = await writer.write(batch(rows, 0, 11, [retry]), NOW)  # re-delivery of the whole batch
        assert (again.stored, again.duplicates, again.fenced) == (0, 0, 10)

        async with pool.acquire() as c:
            stored = await c.fetch("SELECT src_offset FROM events ORDER BY src_offset")
            dead = await c.fetch("SELECT reason, src_offset, detail FROM dead_letters")
            offsets = await c.fetchval("SELECT next_offset FROM ingest_offsets")
        assert [r["src_offset"] for r in stored] == [0, 1, 2, 3, 4, 5, 7, 8, 9]
        assert [(d["reason"], d["src_offset"]) for d in dead] == [("storage_rejected", 6)]
        assert "refused by PostgreSQL" in dead[0]["detail"]
        assert offsets == 11
    finally:
        await pool.close()


async def test_dead_letters_the_writer_makes_keep_the_fingerprint_of_the_record_received(
    postgres_dsn: str, pg_schema: str
) -> None:
    conn = await db.connect(postgres_dsn, pg_schema)
    await migrate(conn, pg_schema)
    await conn.close()
    pool = await db.create_pool(postgres_dsn, pg_schema, 2)
    try:
        partitions = PartitionManager()
        async with pool.acquire() as c:
            await partitions.load(c)
        writer = BatchWriter(pool, partitions)
        rows = [row(i) for i in range(4)]
        rows[1] = row(1, payload=b"{this is not json")  # PostgreSQL refuses it: storage_rejected
        other = (*rows[2][:8], "other text", *rows[2][9:11], 4)  # rows[2]'s id, other content: a conflict
        received = {offset: f"record {offset} as received".encode() * (offset + 1) for offset in range(5)}
        asked: list[tuple[int, int]] = []

        def raw_value(partition: int, offset: int) -> bytes | None:
            asked.append((partition, offset))
            return received.get(offset)

        b = batch(rows, 0, 5, [other])
        b.raw_value = raw_value
        outcome = await writer.write(b, NOW)
        assert (outcome.stored, len(outcome.rejected), len(outcome.conflicts)) == (3, 1, 1)
        assert sorted(asked) == [(0, 1), (0, 4)]  # only the records set aside are read back (and hashed)

        async with pool.acquire() as c:
            dead = await c.fetch("SELECT reason, src_offset, raw_sha256, raw_bytes FROM dead_letters")
        assert sorted((d["reason"], d["src_offset"], d["raw_sha256"], d["raw_bytes"]) for d in dead) == [
            ("conflicting_duplicate", 4, hashlib.sha256(received[4]).digest(), len(received[4])),
            ("storage_rejected", 1, hashlib.sha256(received[1]).digest(), len(received[1])),
        ]
    finally:
        await pool.close()
