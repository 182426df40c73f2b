"""Room servers' own Kafka clients: what they send, compressed as they choose, is stored.

Room servers are not written in Python: their Kafka client (the Java client here, Apache Kafka's own console
producer) picks the compression of its record batches, and lz4, zstd and snappy are the usual choices in
production. The worker must read every codec a producer may use, not only the gzip our own publisher sends:
a batch it cannot decompress would stop its partition.
"""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from pipeline.publisher import events as ev
from pipeline.settings import Settings
from pipeline.stack.cluster import broker_classpath, kafka_home
from pipeline.storage import db

pytestmark = [pytest.mark.apache_lane, pytest.mark.slow]

TopicFactory = Callable[..., Awaitable[str]]


def _console_produce(bootstrap: str, topic: str, codec: str, lines: list[bytes]) -> None:
    """Send `lines` (key TAB value) with Apache Kafka's console producer (the Java client), `codec`
    compressing batches of many records."""
    command = [
        "java",
        "-cp",
        broker_classpath(kafka_home()),
        "org.apache.kafka.tools.ConsoleProducer",
        "--bootstrap-server",
        bootstrap,
        "--topic",
        topic,
        "--compression-codec",
        codec,
        "--property",
        "parse.key=true",
        "--property",
        "key.separator=\t",
        "--producer-property",
        "linger.ms=50",
        "--producer-property",
        "acks=all",
    ]
    done = subprocess.run(command, input=b"\n".join(lines) + b"\n", capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-2000:]


@pytest.mark.parametrize("codec", ["gzip", "snappy", "lz4", "zstd"])
async def test_events_a_java_producer_compresses_are_all_stored(
    ingest_settings: Settings, ingest_worker: object, codec: str
) -> None:
    s = ingest_settings
    sent = []
    lines = []
    at = datetime.now(UTC).isoformat()
    for n in range(300):
        room = f"room-{n % 5}"
        user = ev.user(f"u-{n % 11}", "Ann")
        event = ev.chat_message(room, user, f"hello {n}", event_id=str(uuid.uuid4()), occurred_at=at)
        sent.append(event["event_id"])
        lines.append(room.encode() + b"\t" + orjson.dumps(event))
    await asyncio.to_thread(_console_produce, s.kafka_bootstrap, s.events_topic, codec, lines)

    async with ingest_worker(s) as w:  # type: ignore[operator]
        assert await w.caught_up(60)
    conn = await db.connect(s.postgres_dsn.get(), s.postgres_schema)
    try:
        stored = {str(r["event_id"]) for r in await conn.fetch("SELECT event_id FROM events")}
        dead = await conn.fetchval("SELECT count(*) FROM dead_letters")
    finally:
        await conn.close()
    reasons = [] if not dead else await _reasons(s)
    assert (len(stored), dead, reasons) == (len(sent), 0, [])
    assert stored == set(sent)


async def _reasons(s: Settings) -> list[tuple[str, str]]:
    conn = await db.connect(s.postgres_dsn.get(), s.postgres_schema)
    try:
        rows = await conn.fetch("SELECT DISTINCT reason, detail FROM dead_letters LIMIT 3")
    finally:
        await conn.close()
    return [(r["reason"], r["detail"]) for r in rows]


_TRANSACTIONAL = Path(__file__).parent / "java" / "TransactionalRoomServer.java"


def _transactional_produce(bootstrap: str, topic: str, lines: list[str]) -> None:
    command = ["java", "-cp", broker_classpath(kafka_home()), str(_TRANSACTIONAL), bootstrap, topic]
    done = subprocess.run(command, input="\n".join(lines).encode() + b"\n", capture_output=True, timeout=180)
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-2000:]


async def test_a_transactional_producer_s_committed_events_are_stored_and_its_aborted_ones_never(
    ingest_settings: Settings, ingest_worker: object
) -> None:
    s = ingest_settings
    at = datetime.now(UTC).isoformat()
    committed: list[str] = []
    aborted: list[str] = []

    def transactions(first: int, *plan: tuple[int, str]) -> list[str]:
        lines: list[str] = []
        for txn, (size, end) in enumerate(plan, first):
            for n in range(size):
                room = f"room-{n % 5}"
                user = ev.user(f"u-{n % 11}", "Ann")
                text, event_id = f"t{txn} m{n}", str(uuid.uuid4())
                event = ev.chat_message(room, user, text, event_id=event_id, occurred_at=at)
                (committed if end == "commit" else aborted).append(event["event_id"])
                lines.append(room + "\t" + orjson.dumps(event).decode())
            lines.append(end)
        return lines

    plan = transactions(0, (100, "commit"), (50, "abort"), (100, "commit"), (20, "abort"))
    await asyncio.to_thread(_transactional_produce, s.kafka_bootstrap, s.events_topic, plan)
    async with ingest_worker(s) as w:  # type: ignore[operator]
        assert await w.caught_up(60)  # every partition ends in a transaction marker
    assert await _stored(s) == (set(committed), 0)

    # a worker started later resumes past the markers (its offsets of record fit the log) and reads on
    more = transactions(4, (30, "abort"), (60, "commit"))
    await asyncio.to_thread(_transactional_produce, s.kafka_bootstrap, s.events_topic, more)
    async with ingest_worker(s) as w:  # type: ignore[operator]
        assert await w.caught_up(60)
        assert w.metrics.offset_changes.labels("new_log")._value.get() == 0
    assert await _stored(s) == (set(committed), 0)
    assert len(committed) == 260 and len(aborted) == 100


async def _stored(s: Settings) -> tuple[set[str], int]:
    """The event ids stored, and how many dead letters."""
    conn = await db.connect(s.postgres_dsn.get(), s.postgres_schema)
    try:
        stored = {str(r["event_id"]) for r in await conn.fetch("SELECT event_id FROM events")}
        return stored, int(await conn.fetchval("SELECT count(*) FROM dead_letters"))
    finally:
        await conn.close()
