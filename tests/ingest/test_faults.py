"""Faults a deployment will meet: the worker killed mid-stream, PostgreSQL going away mid-stream.

Both assert what an operator cares about: every event published is stored exactly once, nothing is
dead-lettered because of the fault.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import uuid_utils
from aiokafka import AIOKafkaProducer

from pipeline.cli.devstack import spawn_worker
from pipeline.cli.progress import wait_caught_up
from pipeline.settings import Settings
from pipeline.stack import free_port
from pipeline.storage import db

# on Tansu and on the 3-node Apache Kafka cluster: the real faust worker process, killed and restarted
pytestmark = [pytest.mark.slow, pytest.mark.broker_semantics]


def chat_events(n: int, rooms: int = 50) -> Iterator[tuple[str, bytes, bytes]]:
    from datetime import UTC, datetime, timedelta

    base = datetime.now(UTC) - timedelta(minutes=30)
    for i in range(n):
        room = f"room-{i % rooms}"
        eid = str(uuid_utils.uuid7())
        value = orjson.dumps(
            {
                "event_id": eid,
                "type": "chat.message",
                "schema_version": 1,
                "room_id": room,
                "occurred_at": (base + timedelta(milliseconds=i)).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                "actor": {"user_id": f"u-{i % 300}", "display_name": "Someone"},
                "data": {"text": f"message {i}"},
            }
        )
        yield eid, room.encode(), value


async def produce(
    settings: Settings, records: list[tuple[bytes, bytes]], *, per_second: float | None = None
) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        for i, (key, value) in enumerate(records):
            await producer.send(settings.events_topic, value=value, key=key)
            if per_second and i % 100 == 99:
                await asyncio.sleep(100 / per_second)
        await producer.flush()
    finally:
        await producer.stop()


async def stored_ids(settings: Settings) -> list[str]:
    conn = await db.connect(settings.postgres_dsn.get(), settings.postgres_schema)
    try:
        return [str(r[0]) for r in await conn.fetch("SELECT event_id FROM events")]
    finally:
        await conn.close()


async def count(settings: Settings, table: str = "events") -> int:
    conn = await db.connect(settings.postgres_dsn.get(), settings.postgres_schema)
    try:
        return int(await conn.fetchval(f"SELECT count(*) FROM {table}"))
    finally:
        await conn.close()


def start_worker(settings: Settings, tmp_path: Path, n: int) -> subprocess.Popen[bytes]:
    own = settings.replace(metrics_port=free_port(), worker_data_dir=str(tmp_path / f"w{n}"))
    return spawn_worker(own, tmp_path / f"worker-{n}.log")


async def wait_for_count(
    settings: Settings, at_least: int, proc: subprocess.Popen[bytes], within_seconds: float
) -> int:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_seconds
    while loop.time() < deadline:
        assert proc.poll() is None, "worker died on its own"
        n = await count(settings)
        if n >= at_least:
            return n
        await asyncio.sleep(0.2)
    raise AssertionError(f"fewer than {at_least} rows after {within_seconds}s")


async def test_kill_minus_9_mid_stream_loses_and_duplicates_nothing(
    ingest_settings: Settings, tmp_path: Path, kafka_broker: Any, figures: Callable[[str], None]
) -> None:
    s = ingest_settings.replace(batch_max_events=2_000)  # many small transactions: more places to die in
    events = list(chat_events(60_000))
    await produce(s, [(k, v) for _, k, v in events])

    kills: list[int] = []
    resumed_after: list[float] = []  # seconds from a restart to its first write
    # three workers killed with kill -9 mid-stream, then one stopped cleanly (SIGTERM) mid-stream
    for round_no, (threshold, stop) in enumerate(
        (
            (8_000, signal.SIGKILL),
            (30_000, signal.SIGKILL),
            (40_000, signal.SIGKILL),
            (48_000, signal.SIGTERM),
        )
    ):
        before = await count(s)
        started = time.monotonic()
        proc = start_worker(s, tmp_path, round_no)
        try:
            await wait_for_count(s, before + 1, proc, within_seconds=120)
            resumed_after.append(time.monotonic() - started)
            kills.append(await wait_for_count(s, threshold, proc, within_seconds=120))
        finally:
            proc.send_signal(stop)
            proc.wait(60)
    assert kills[0] < len(events), "the first kill must land mid-stream"

    started, before = time.monotonic(), await count(s)
    proc = start_worker(s, tmp_path, 9)
    try:
        await wait_for_count(s, before + 1, proc, within_seconds=120)
        resumed_after.append(time.monotonic() - started)
        assert await wait_caught_up(s, 180, progress=False)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, (tmp_path / "worker-9.log").read_text()[-3000:]
    # the first start forms the group; the next three follow a kill -9, the last a clean stop
    figures(
        f"worker recovery ({kafka_broker.name}): seconds from restart to first write after kill -9: "
        + ", ".join(f"{t:.1f}" for t in resumed_after[1:4])
        + f"; after a clean stop: {resumed_after[4]:.1f} (first start {resumed_after[0]:.1f})"
    )

    ids = await stored_ids(s)
    assert len(ids) == len(events), f"killed at {kills} rows"
    assert set(ids) == {eid for eid, _, _ in events}
    assert await count(s, "dead_letters") == 0


async def test_postgres_outage_mid_stream_pauses_and_loses_nothing(
    ingest_settings: Settings, ingest_worker: Any, postgres_server: Any
) -> None:
    s = ingest_settings.replace(batch_max_events=1_000)
    events = list(chat_events(40_000))
    producing = asyncio.create_task(produce(s, [(k, v) for _, k, v in events], per_second=8_000))  # noqa: RUF006 - awaited or cancelled below
    try:
        async with ingest_worker(s) as w:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 60
            while w.service.totals["stored"] < 5_000:
                assert loop.time() < deadline
                await asyncio.sleep(0.1)
            await asyncio.to_thread(postgres_server.stop)  # skips the test when the server is not ours
            await asyncio.sleep(3)
            assert w.metrics.paused._value.get() == 1, "the worker must notice and pause"
            await asyncio.to_thread(postgres_server.restart)
            await producing
            assert await w.caught_up(120)
            assert w.metrics.storage_unavailable._value.get() > 0
            assert w.metrics.paused._value.get() == 0
    finally:
        if not producing.done():
            producing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await producing
    ids = await stored_ids(s)
    assert len(ids) == len(events)
    assert set(ids) == {eid for eid, _, _ in events}
    assert await count(s, "dead_letters") == 0


async def test_readiness_follows_postgres_while_liveness_stays(
    ingest_settings: Settings, tmp_path: Path, postgres_server: Any
) -> None:
    """An orchestrator must route around a worker that cannot ingest, and must not restart one that is
    correctly waiting for PostgreSQL to come back."""
    port = free_port()
    own = ingest_settings.replace(metrics_port=port, worker_data_dir=str(tmp_path / "w"))
    proc = spawn_worker(own, tmp_path / "worker.log")

    async def until(path: str, status: int, within_seconds: float = 90) -> dict[str, Any]:
        deadline = asyncio.get_running_loop().time() + within_seconds
        while True:
            assert proc.poll() is None, (tmp_path / "worker.log").read_text()[-3000:]
            with contextlib.suppress(httpx.TransportError):
                r = await http.get(path)
                if r.status_code == status:
                    return dict(r.json())
            assert asyncio.get_running_loop().time() < deadline, f"{path} never answered {status}"
            await asyncio.sleep(0.2)

    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
            ready = await until("/readyz", 200)
            assert (ready["postgres"], ready["kafka"], ready["paused"]) == ("ok", "ok", False)
            await asyncio.to_thread(postgres_server.stop)  # skips the test when the server is not ours
            try:
                down = await until("/readyz", 503)
                assert down["postgres"].startswith("unreachable"), down
                assert (await http.get("/livez")).status_code == 200, "waiting out an outage is alive"
                assert (await http.get("/health")).status_code == 503
            finally:
                await asyncio.to_thread(postgres_server.restart)
            await until("/readyz", 200)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
