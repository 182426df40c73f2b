"""The batch writer against real PostgreSQL: a refused row is isolated, duplicates are skipped,
re-delivered records are fenced, and everything of a batch commits together with its offsets."""

from __future__ import annotations

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
