"""Every dead letter reaches the dead-letter topic at least once: past an oversize neighbour, past an outage.

The relay is exercised against a real broker and PostgreSQL: dead letters are queued in the outbox the way
the writer queues them, and what arrives on the topic is read back.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from prometheus_client import CollectorRegistry

from pipeline.ingest.mirror import DeadLetterMirror
from pipeline.metrics import IngestMetrics
from pipeline.stack import EmbeddedKafka
from pipeline.storage import db, outbox
from pipeline.storage.batch import DeadLetter
from pipeline.storage.migrate import migrate


def letter(offset: int, content_bytes: int = 100) -> DeadLetter:
    content = b'{"data": {"text": "' + b"x" * content_bytes + b'"}}'
    return DeadLetter(
        datetime.now(UTC), "missing_field", "data.text: required", "ev", 0, offset, content, b"\x01" * 32, 99
    )


@pytest.fixture
async def pool(postgres_dsn: str, pg_schema: str) -> AsyncIterator[asyncpg.Pool]:
    conn = await db.connect(postgres_dsn, pg_schema)
    await migrate(conn, pg_schema)
    await conn.close()
    p = await db.create_pool(postgres_dsn, pg_schema, 2)
    yield p
    await p.close()


async def queue(pool: asyncpg.Pool, letters: list[DeadLetter]) -> None:
    async with pool.acquire() as conn, conn.transaction():
        await outbox.enqueue(conn, letters)


async def pending(pool: asyncpg.Pool) -> int:
    async with pool.acquire() as conn:
        return await outbox.pending(conn)


async def wait_drained(pool: asyncpg.Pool, within_seconds: float) -> None:
    deadline = asyncio.get_running_loop().time() + within_seconds
    while await pending(pool):
        assert asyncio.get_running_loop().time() < deadline, f"{await pending(pool)} mirrors still queued"
        await asyncio.sleep(0.1)


async def test_one_oversize_dead_letter_costs_its_neighbours_nothing(
    pool: asyncpg.Pool, kafka_bootstrap: str, topic_factory: Any, consume: Any
) -> None:
    topic = await topic_factory(prefix="dlq-")
    # the producer's request limit stands for the broker's message limit: a mirror above it is refused
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, max_request_size=4_096, acks="all")
    await producer.start()
    metrics = IngestMetrics(CollectorRegistry())
    mirror = DeadLetterMirror(pool, producer, topic, metrics, retry_initial_seconds=0.1)
    letters = [letter(i) for i in range(10)]
    letters.insert(4, letter(100, content_bytes=20_000))
    await queue(pool, letters)
    task = asyncio.create_task(mirror.run())
    try:
        mirror.wake()
        await wait_drained(pool, 30)
    finally:
        mirror.stop()
        await task
        await producer.stop()
    got = await consume(topic, len(letters))
    by_source = {m.key: m for m in got}
    assert sorted(by_source) == sorted(f"ev/0/{d.src_offset}".encode() for d in letters)
    big = dict(by_source[b"ev/0/100"].headers)
    assert big["roomlogs.truncated"] == b"true"
    assert big["roomlogs.reason"] == b"missing_field"
    assert b'"truncated":true' in by_source[b"ev/0/100"].value
    assert all(m.value == letters[1].content for k, m in by_source.items() if k != b"ev/0/100")
    assert metrics.dead_letters_mirrored_as_reference._value.get() == 1


async def test_mirrors_queued_while_the_broker_hangs_arrive_after_it(
    pool: asyncpg.Pool, tmp_path: Path
) -> None:
    with EmbeddedKafka(tmp_path / "kafka") as broker:
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, request_timeout_ms=2_000, acks="all")
        await producer.start()
        metrics = IngestMetrics(CollectorRegistry())
        mirror = DeadLetterMirror(pool, producer, "dlq-outage", metrics, retry_initial_seconds=0.2)
        task = asyncio.create_task(mirror.run())
        try:
            await queue(pool, [letter(i) for i in range(5)])
            mirror.wake()
            await wait_drained(pool, 30)

            assert broker.pid is not None
            os.kill(broker.pid, signal.SIGSTOP)  # the broker hangs: nothing it is sent is acknowledged
            await queue(pool, [letter(i) for i in range(5, 12)])
            mirror.wake()
            deadline = asyncio.get_running_loop().time() + 30
            while metrics.dead_letter_publish_errors._value.get() == 0:  # it tried, and failed
                assert asyncio.get_running_loop().time() < deadline
                await asyncio.sleep(0.1)
            assert await pending(pool) == 7, "nothing is dropped while the broker is away"

            os.kill(broker.pid, signal.SIGCONT)
            await wait_drained(pool, 60)
            numbers = await producer.partitions_for("dlq-outage")
        finally:
            mirror.stop()
            await task
            await producer.stop()
        got = await consume_from(broker.bootstrap, "dlq-outage", numbers)
    # at least once: a send that timed out while the broker hung may have landed and is sent again
    assert {m.key for m in got} == {f"ev/0/{i}".encode() for i in range(12)}


async def consume_from(bootstrap: str, topic: str, numbers: set[int]) -> list[Any]:
    """Every record of `topic` on this test's own broker (the `consume` fixture reads the session's)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        parts = [TopicPartition(topic, p) for p in sorted(numbers)]
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        records: list[Any] = []
        for _ in range(20):
            for batch in (await consumer.getmany(timeout_ms=300)).values():
                records.extend(batch)
        return records
    finally:
        await consumer.stop()
