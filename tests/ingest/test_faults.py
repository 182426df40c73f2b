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
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
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


@contextlib.asynccontextmanager
async def commits_held(settings: Settings) -> AsyncIterator[asyncpg.Connection]:
    """Inside: no batch can commit. This connection's transaction holds SHARE on `ingest_offsets`, which
    every batch's transaction writes (its offsets of record, after its rows), so a write waits there."""
    conn = await db.connect(settings.postgres_dsn.get(), settings.postgres_schema)
    try:
        holding = conn.transaction()
        await holding.start()
        try:
            await conn.execute("LOCK TABLE ingest_offsets IN SHARE MODE")
            yield conn
        finally:
            await holding.rollback()
    finally:
        await conn.close()


async def until_a_write_waits(
    settings: Settings, holder: asyncpg.Connection, proc: subprocess.Popen[bytes], within_seconds: float
) -> None:
    """Return once a transaction of the worker waits for the lock `holder` keeps: the worker is provably
    inside a batch it has not committed. Read from PostgreSQL (pg_blocking_pids), not from the clock."""
    monitor = await db.connect(settings.postgres_dsn.get(), settings.postgres_schema)
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within_seconds
        while not await monitor.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))",
            holder.get_server_pid(),
        ):
            assert proc.poll() is None, "worker died on its own"
            assert loop.time() < deadline, f"no write of the worker waited to commit within {within_seconds}s"
            await asyncio.sleep(0.1)
    finally:
        await monitor.close()


async def test_kill_minus_9_mid_stream_loses_and_duplicates_nothing(
    ingest_settings: Settings, tmp_path: Path, kafka_broker: Any, figures: Callable[[str], None]
) -> None:
    s = ingest_settings.replace(batch_max_events=2_000)  # many small transactions: more places to die in
    events = list(chat_events(60_000))
    records = [(k, v) for _, k, v in events]
    # One slice of 12,000 per worker, published before it starts, so that every start has records to
    # write (the figures below time real work); the last 2,000 of a slice only once the test holds back
    # commits, so that the worker has a write to make then, however fast it stored the rest. Each fault
    # lands while that write waits, uncommitted, and while later slices are still to come.
    slices = [records[i : i + 12_000] for i in range(0, len(records), 12_000)]
    published = 0
    at_fault: list[int] = []  # rows stored when each fault landed
    resumed_after: list[float] = []  # seconds from a (re)start to its first write
    # three workers killed with kill -9 mid-batch, then one stopped cleanly (SIGTERM) mid-batch
    for round_no, stop in enumerate((signal.SIGKILL, signal.SIGKILL, signal.SIGKILL, signal.SIGTERM)):
        head, tail = slices[round_no][:-2_000], slices[round_no][-2_000:]
        await produce(s, head)
        published += len(head)
        started, before = time.monotonic(), await count(s)
        proc = start_worker(s, tmp_path, round_no)
        try:
            await wait_for_count(s, before + 1, proc, within_seconds=120)
            resumed_after.append(time.monotonic() - started)
            # about half of what it found waiting, so that it dies after commits of its own (a fast worker
            # is past this already; the tail still gives it a write to die in)
            await wait_for_count(s, (before + published) // 2, proc, within_seconds=120)
            async with commits_held(s) as holder:
                await produce(s, tail)
                published += len(tail)
                await until_a_write_waits(s, holder, proc, within_seconds=120)
                at_fault.append(await count(s))
                proc.send_signal(stop)
                if stop == signal.SIGKILL:  # dead before the lock goes: its batch can never commit
                    await asyncio.to_thread(proc.wait, 60)
            code = await asyncio.to_thread(proc.wait, 60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(60)
        log = (tmp_path / f"worker-{round_no}.log").read_text()[-3000:]
        assert code == (-signal.SIGKILL if stop == signal.SIGKILL else 0), log
    assert await count(s) > at_fault[-1], "a clean stop commits the batch in hand"

    await produce(s, slices[-1])
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
        + f"; after a clean stop: {resumed_after[4]:.1f} (first start {resumed_after[0]:.1f}); "
        + "each fault landed on a batch waiting to commit, with "
        + ", ".join(f"{n:,}" for n in at_fault)
        + f" of {len(events):,} rows stored"
    )

    ids = await stored_ids(s)
    assert len(ids) == len(events), f"faults at {at_fault} rows"
    assert set(ids) == {eid for eid, _, _ in events}
    assert await count(s, "dead_letters") == 0


async def test_postgres_outage_mid_stream_pauses_and_loses_nothing(
    ingest_settings: Settings, ingest_worker: Any, postgres_server: Any
) -> None:
    s = ingest_settings.replace(batch_max_events=1_000)
    events = list(chat_events(40_000))
    records = [(k, v) for _, k, v in events]
    # 10,000 before the outage; the other 30,000 only once PostgreSQL is down, so that the worker has
    # records to write during the outage however fast it stored the first ones
    first, rest = records[:10_000], records[10_000:]
    producing: asyncio.Task[None] | None = None
    try:
        async with ingest_worker(s) as w:
            await produce(s, first, per_second=8_000)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 60
            while w.service.totals["stored"] < 5_000:
                assert loop.time() < deadline
                await asyncio.sleep(0.1)
            await asyncio.to_thread(postgres_server.stop)  # skips the test when the server is not ours
            try:
                producing = asyncio.create_task(produce(s, rest, per_second=8_000))
                deadline = loop.time() + 60  # a hang guard, not a time limit under test
                while w.metrics.paused._value.get() != 1:
                    assert loop.time() < deadline, "the worker must notice and pause"
                    await asyncio.sleep(0.1)
            finally:
                await asyncio.to_thread(postgres_server.restart)
            await producing
            assert await w.caught_up(120)
            assert w.metrics.storage_unavailable._value.get() > 0
            assert w.metrics.paused._value.get() == 0
    finally:
        if producing is not None and not producing.done():
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
                # and says so in words, as README promises (`problem` was null: an outside tester)
                assert down["problem"].startswith("PostgreSQL is unreachable"), down
                assert (await http.get("/livez")).status_code == 200, "waiting out an outage is alive"
                assert (await http.get("/health")).status_code == 503
            finally:
                await asyncio.to_thread(postgres_server.restart)
            await until("/readyz", 200)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
