"""The outbox relays when the topic under them changed: the alerts topic deleted under a running relay, then
recreated empty. The relay does not stall for good: what is queued while the topic is gone stays queued
(nothing dropped) and arrives once the topic is back; what was sent to the old topic is not sent again (the
`alerts` table is the record, the topic a feed: README, Detectors).

Tansu (the embedded broker) acknowledges records sent to a topic deleted under the producer (it answers
offsets 0, 1, 2 ... while the topic stays absent), and the topic recreated under the same name then shows
some of those records in place of records acknowledged later. So on the Tansu lane only "does not stall" is
asserted; Apache Kafka refuses the records (UNKNOWN_TOPIC_OR_PARTITION) and the relay keeps them queued.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiokafka import AIOKafkaProducer
from prometheus_client import CollectorRegistry
from topic_support import create_topic, delete_topic, sql

from pipeline.ingest.alert_relay import AlertRelay
from pipeline.kafka_topics import ensure_topics
from pipeline.metrics import IngestMetrics
from pipeline.settings import Settings
from pipeline.stack import EmbeddedKafka
from pipeline.storage import alert_outbox, db
from pipeline.storage.migrate import migrate


@pytest.fixture
async def pool(postgres_dsn: str, pg_schema: str) -> AsyncIterator[asyncpg.Pool]:
    conn = await db.connect(postgres_dsn, pg_schema)
    await migrate(conn, pg_schema)
    await conn.close()
    p = await db.create_pool(postgres_dsn, pg_schema, 2)
    yield p
    await p.close()


async def queue(pool: asyncpg.Pool, n: int) -> set[bytes]:
    values = {f'{{"alert_id": "{uuid.uuid4()}"}}'.encode() for _ in range(n)}
    async with pool.acquire() as conn:
        for v in values:
            await conn.execute(
                "INSERT INTO alert_outbox (alert_id, message_key, value) VALUES ($1, 'room-1', $2)",
                uuid.uuid4(),
                v,
            )
    return values


async def drained(pool: asyncpg.Pool, within_seconds: float) -> bool:
    deadline = asyncio.get_running_loop().time() + within_seconds
    while asyncio.get_running_loop().time() < deadline:
        async with pool.acquire() as conn:
            if not await alert_outbox.pending(conn):
                return True
        await asyncio.sleep(0.2)
    return False


@pytest.mark.broker_semantics
async def test_the_alerts_relay_outlives_its_topic_deleted_and_recreated(
    pool: asyncpg.Pool, kafka_bootstrap: str, kafka_broker: Any, broker_lane: str, consume: Any
) -> None:
    topic = f"alerts-{uuid.uuid4().hex[:12]}"
    await create_topic(kafka_bootstrap, topic, 1, kafka_broker.replication_factor)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all", request_timeout_ms=5_000)
    await producer.start()
    metrics = IngestMetrics(CollectorRegistry())
    relay = AlertRelay(pool, producer, topic, metrics, retry_initial_seconds=0.2, retry_max_seconds=1.0)
    task = asyncio.create_task(relay.run())
    try:
        before = await queue(pool, 5)
        relay.wake()
        assert await drained(pool, 30)
        await delete_topic(kafka_bootstrap, topic)
        during = await queue(pool, 3)  # the topic is gone (or auto-created again by the producer's metadata)
        relay.wake()
        await asyncio.sleep(3.0)
        await create_topic(kafka_bootstrap, topic, 1, kafka_broker.replication_factor)
        after = await queue(pool, 2)
        relay.wake()
        assert await drained(pool, 90), "the relay stalled on a recreated topic"
        if broker_lane == "apache":  # Tansu: see the module's docstring
            got = {m.value for m in await consume(topic, len(during) + len(after), timeout_seconds=30)}
            assert during | after <= got, "queued while the topic was away and lost"
            assert not (got & before), "sent again to the new topic"
    finally:
        relay.stop()
        await task
        await producer.stop()
        await delete_topic(kafka_bootstrap, topic)


@pytest.mark.broker_semantics
async def test_a_relayed_topic_recreated_under_a_running_worker_is_said(
    ingest_settings: Settings, ingest_worker: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """The worker's topic watch notes each relayed topic's id (migration 0022); the alerts topic deleted and
    recreated shows as a new one, once, in one warning line; the deletions topic's the same way, with the
    database's deletion requests queued for it again."""
    s = ingest_settings
    async with ingest_worker(s) as w:
        watch = w.service._watch
        assert watch is not None
        await watch.check_feeds()
        noted = {r["topic"] for r in await sql(s, "SELECT topic FROM feed_topics")}
        assert {s.alerts_topic, s.dead_letter_topic, s.deletions_topic} <= noted
        for topic in (s.alerts_topic, s.deletions_topic):
            await delete_topic(s.kafka_bootstrap, topic)
            await create_topic(s.kafka_bootstrap, topic, 1, s.kafka_replication_factor)
        with caplog.at_level(logging.WARNING, logger="roomlogs.ingest.watch"):
            await watch.check_feeds()
            await watch.check_feeds()
    said = [r.getMessage() for r in caplog.records if "is a new one" in r.getMessage()]
    assert len(said) == 2, said
    assert any(f"alerts topic {s.alerts_topic}" in m and "alerts table is the record" in m for m in said)
    assert any(f"deletion requests topic {s.deletions_topic}" in m and "queued" in m for m in said)


async def test_relayed_topics_of_a_broker_started_empty_under_a_kept_database_are_said(
    ingest_settings: Settings, ingest_worker: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """`roomlogs demo` then `roomlogs up`: Tansu comes back empty, PostgreSQL keeps `feed_topics`; the next
    worker says each relayed topic is a new one."""
    with EmbeddedKafka(tmp_path / "own-kafka") as kafka:
        s = ingest_settings.replace(kafka_bootstrap=kafka.bootstrap)
        await ensure_topics(s)  # as `roomlogs worker` does
        async with ingest_worker(s) as w:
            assert w.service._watch is not None
            await w.service._watch.check_feeds()
        assert len(await sql(s, "SELECT topic FROM feed_topics")) == 3
        kafka.stop()
        kafka.start()  # same address, nothing kept
        await ensure_topics(s)
        with caplog.at_level(logging.WARNING, logger="roomlogs.ingest.watch"):
            async with ingest_worker(s) as w:
                assert w.service._watch is not None
                await w.service._watch.check_feeds()
    said = [r.getMessage() for r in caplog.records if "is a new one" in r.getMessage()]
    assert sorted(m.split(" topic ")[0] for m in said) == [
        "the alerts", "the dead letters", "the deletion requests"
    ], said  # fmt: skip
