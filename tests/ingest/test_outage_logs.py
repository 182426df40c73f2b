"""An outage is not a bug and a bug is not an outage.

- PostgreSQL going away is logged by the worker as one line when it goes and one when it is back (with
  how long it was out), however many retries and maintenance runs fall in between; no traceback.
- An error that means a bug (asyncpg's InterfaceError, "improper use of the API") is not waited out as an
  outage: the ingest loop ends with it, which ends the worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest
import uuid_utils
from aiokafka import AIOKafkaProducer
from prometheus_client import CollectorRegistry

from pipeline.cli.devstack import spawn_worker
from pipeline.cli.progress import wait_caught_up
from pipeline.ingest.service import IngestService
from pipeline.metrics import IngestMetrics
from pipeline.settings import Settings
from pipeline.stack import EmbeddedKafka, free_port
from pipeline.storage import db, offsets
from pipeline.storage.db import CONNECTION_ERRORS
from pipeline.storage.writer import BatchWriter


def chat(i: int) -> tuple[bytes, bytes]:
    room = f"room-{i % 20}"
    at = datetime.now(UTC) - timedelta(minutes=5)
    value = {
        "event_id": str(uuid_utils.uuid7()),
        "type": "chat.message",
        "schema_version": 1,
        "room_id": room,
        "occurred_at": at.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "actor": {"user_id": f"u-{i % 50}", "display_name": "Someone"},
        "data": {"text": f"message {i}"},
    }
    return room.encode(), orjson.dumps(value)


async def produce(settings: Settings, first: int, n: int) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        for i in range(first, first + n):
            key, value = chat(i)
            await producer.send(settings.events_topic, value=value, key=key)
        await producer.flush()
    finally:
        await producer.stop()


async def stored(settings: Settings) -> int:
    """Records written so far: the sum of the next offsets of record."""
    conn = await db.connect(settings.postgres_dsn.get(), settings.postgres_schema)
    try:
        kept = await offsets.stored_offsets(conn, settings.consumer_group, settings.events_topic)
    finally:
        await conn.close()
    return sum(o.next_offset for o in kept.values())


async def until_outage_logged(
    log_path: Path, proc: subprocess.Popen[bytes], within_seconds: float = 60
) -> None:
    """Return once the worker has logged that an outage started: a state to wait for, not a time."""
    deadline = asyncio.get_running_loop().time() + within_seconds
    while True:
        text = await asyncio.to_thread(log_path.read_text)
        lines = text[: text.rfind("\n") + 1].splitlines()  # whole lines only: the worker is writing
        if any(orjson.loads(line).get("outage") == "started" for line in lines if line.startswith("{")):
            return
        assert proc.poll() is None, "waiting out an outage, not exiting"
        assert asyncio.get_running_loop().time() < deadline, "the worker never met the outage"
        await asyncio.sleep(0.1)


@pytest.mark.slow
async def test_a_postgres_outage_is_two_log_lines(
    ingest_settings: Settings, postgres_server: Any, tmp_path: Path
) -> None:
    s = ingest_settings.replace(
        metrics_port=free_port(),
        worker_data_dir=str(tmp_path / "w"),
        log_format="json",
        maintenance_interval_seconds=0.5,  # several maintenance runs fall inside the outage
    )
    log_path = tmp_path / "worker.log"
    proc = spawn_worker(s, log_path)
    try:
        await produce(s, 0, 500)
        assert await wait_caught_up(s, 120, progress=False), log_path.read_text()[-3000:]
        await asyncio.to_thread(postgres_server.stop)  # skips the test when the server is not ours
        try:
            await produce(s, 500, 500)  # the worker now has a batch it cannot write
            await until_outage_logged(log_path, proc)  # however long a loaded machine takes to get there
            await asyncio.sleep(4)  # retries and maintenance runs meet the outage
            assert proc.poll() is None, "waiting out an outage, not exiting"
        finally:
            await asyncio.to_thread(postgres_server.restart)
        assert await wait_caught_up(s, 120, progress=False), log_path.read_text()[-3000:]
        assert await stored(s) == 1_000
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, log_path.read_text()[-3000:]

    lines = [orjson.loads(line) for line in log_path.read_text().splitlines() if line.startswith("{")]
    outage = [line for line in lines if "outage" in line]
    assert [line["outage"] for line in outage] == ["started", "ended"], outage
    started, ended = outage
    assert started["msg"].startswith("PostgreSQL unavailable (") and started["level"] == "warning"
    assert ended["msg"].startswith("PostgreSQL available again after ")
    assert ended["outage_seconds"] > 0
    during = [line for line in lines if started["ts"] <= line["ts"] <= ended["ts"]]
    assert not [line for line in during if "exc" in line], "no traceback for an outage"
    noisy = [line["msg"] for line in during if line["level"] in ("warning", "error")]
    assert len(noisy) == len(set(noisy)), f"a line repeated per retry: {noisy}"


def test_only_real_connection_failures_count_as_an_outage() -> None:
    outage = [
        asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
        asyncpg.exceptions.ConnectionFailureError("connection failure"),
        asyncpg.CannotConnectNowError("the database system is starting up"),
        asyncpg.exceptions.AdminShutdownError("terminating connection due to administrator command"),
        asyncpg.exceptions.TooManyConnectionsError("too many clients"),
        asyncpg.exceptions.IdleInTransactionSessionTimeoutError(
            "terminating connection due to idle-in-transaction timeout"
        ),
        ConnectionRefusedError(111, "refused"),
        TimeoutError(),
    ]
    bugs = [
        asyncpg.InterfaceError("cannot perform operation: another operation is in progress"),
        asyncpg.InterfaceError(
            "cannot call Connection.fetch(): connection has been released back to the pool"
        ),
        asyncpg.exceptions.ClientConfigurationError("invalid DSN"),
    ]
    assert all(isinstance(e, CONNECTION_ERRORS) for e in outage)
    assert not any(isinstance(e, CONNECTION_ERRORS) for e in bugs)


async def test_a_bug_in_the_write_ends_the_ingest_loop_instead_of_pausing_it(
    ingest_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def misuse(self: BatchWriter, conn: asyncpg.Connection, *args: Any) -> None:
        raise asyncpg.InterfaceError("cannot perform operation: another operation is in progress")

    monkeypatch.setattr(BatchWriter, "_write", misuse)
    pool = await db.create_pool(ingest_settings.postgres_dsn.get(), ingest_settings.postgres_schema, 2)
    metrics = IngestMetrics(CollectorRegistry())
    service = IngestService(ingest_settings, pool, metrics)
    await service.start()
    loop = asyncio.create_task(service.run())
    try:
        await produce(ingest_settings, 0, 10)
        done, _ = await asyncio.wait([loop], timeout=120)  # a hang guard, not a time limit under test
        assert done, "the loop kept waiting as if PostgreSQL were down"
        assert isinstance(loop.exception(), asyncpg.InterfaceError)
        assert metrics.paused._value.get() == 0
        assert metrics.storage_unavailable._value.get() == 0
    finally:
        if not loop.done():
            await service.stop()
        with contextlib.suppress(asyncpg.InterfaceError):
            await loop
        await service.close()
        await pool.close()
    assert await stored(ingest_settings) == 0  # and nothing was written past it


@pytest.mark.slow
async def test_a_kafka_outage_does_not_flood_the_log(ingest_settings: Settings, tmp_path: Path) -> None:
    """The broker stopped under a running worker: aiokafka logged every failed connect, metadata update,
    fetch and coordinator request (an outside tester: 3,800 ERROR lines in a 63 s outage). Each kind of its
    warnings and errors is now written once a minute at most, with a count of those held back."""
    kafka = EmbeddedKafka(tmp_path / "own-kafka")
    kafka.start()
    s = ingest_settings.replace(
        kafka_bootstrap=kafka.bootstrap,
        metrics_port=free_port(),
        worker_data_dir=str(tmp_path / "w"),
        log_format="json",
        kafka_static_membership=False,
    )
    log_path = tmp_path / "worker.log"
    proc = spawn_worker(s, log_path)
    try:
        await produce(s, 0, 300)
        assert await wait_caught_up(s, 120, progress=False), log_path.read_text()[-3000:]
        stopped_at = datetime.now(UTC)
        kafka.stop()
        await asyncio.sleep(12)
        back_at = datetime.now(UTC)
        assert proc.poll() is None, "waiting out an outage, not exiting"
    finally:
        proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(60)
        if proc.poll() is None:
            proc.kill()
        kafka.stop()
    lines = [orjson.loads(line) for line in log_path.read_text().splitlines() if line.startswith("{")]
    during = [
        line
        for line in lines
        if stopped_at <= datetime.fromisoformat(line["ts"].replace("Z", "+00:00")) <= back_at
        and line.get("logger", "").startswith("aiokafka")
        and line["level"] in ("warning", "error")
    ]
    said = [line["msg"] for line in during]
    assert said, "the outage is logged"
    assert len(said) <= 12, f"{len(said)} lines in 12 s: {said[:20]}"
