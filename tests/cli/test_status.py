"""`roomlogs status` against a real `roomlogs worker` process (on the worker's own database role), the real
broker and PostgreSQL."""

from __future__ import annotations

import argparse
import asyncio
import signal
import subprocess
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from pipeline.cli.devstack import spawn_worker
from pipeline.cli.progress import wait_caught_up
from pipeline.cli.status import COMMANDS, add_commands
from pipeline.publisher import events as ev
from pipeline.retention import maintain
from pipeline.settings import Settings
from pipeline.stack.postgres import postgres_bin_dir
from pipeline.stack.process import free_port
from pipeline.storage import db


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="roomlogs")
    add_commands(parser.add_subparsers(dest="command"))
    return parser.parse_args(argv)


async def roomlogs_status(
    settings: Settings, capsys: pytest.CaptureFixture[str], *argv: str, code: int = 0
) -> str:
    args = _parse(["status", *argv])
    assert await asyncio.to_thread(COMMANDS["status"], settings, args) == code
    return capsys.readouterr().out


async def produce(settings: Settings, n: int, *, start: int = 0) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        for i in range(start, start + n):
            room = f"room-{i % 6}"
            event = ev.user_entered(
                room,
                ev.user(f"u-{i}", "Ann"),
                event_id=str(uuid.uuid4()),
                occurred_at=(datetime.now(UTC) - timedelta(seconds=n - i)).isoformat(),
            )
            await producer.send(settings.events_topic, orjson.dumps(event), key=room.encode())
        await producer.flush()
    finally:
        await producer.stop()


async def test_status_shows_lag_last_writes_pauses_partitions_ahead_and_the_next_retention_run(
    ingest_settings: Settings, worker_settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    port = free_port()
    s = worker_settings.replace(metrics_port=port, worker_data_dir=str(tmp_path / "w"))
    url = f"http://127.0.0.1:{port}"
    await produce(s, 30)
    proc = spawn_worker(s, tmp_path / "worker.log")
    try:
        assert await wait_caught_up(s, 120, progress=False), (tmp_path / "worker.log").read_text()[-3000:]
        # the worker answers /readyz once its ingest runs and it holds its partitions
        deadline = asyncio.get_running_loop().time() + 60
        while True:  # (exit 1 while the worker does not answer yet)
            args = _parse(["status", "--worker", url, "--json"])
            code = await asyncio.to_thread(COMMANDS["status"], s, args)
            status: dict[str, Any] = orjson.loads(capsys.readouterr().out)
            if status["workers"][0]["partitions"] == [0, 1, 2]:
                assert code == 0
                break
            assert asyncio.get_running_loop().time() < deadline, status["workers"]
            await asyncio.sleep(0.5)
        assert status["kafka_error"] is None and status["total_lag"] == 0
        parts = status["partitions"]
        assert [p["partition"] for p in parts] == [0, 1, 2]
        assert sum(p["end_offset"] for p in parts) == sum(p["stored_offset"] for p in parts) == 30
        assert all(p["lag"] == 0 and p["last_write"] and p["paused"] is False for p in parts)
        assert {p["worker"] for p in parts} == {url}
        assert status["workers"][0]["ready"] is True
        # the worker made today + 3 days for every class (on its own role, through create_log_partition)
        ahead = status["partitions_ahead"]
        assert {t: ahead[t] for t in ("events_public", "events_private", "events_busy_public")} == {
            "events_public": 3,
            "events_private": 3,
            "events_busy_public": 3,
        }
        assert ahead["dead_letters"] == 3
        # the worker's own role drops nothing, so it records no retention run: nobody runs retention yet
        assert status["last_retention_run"] is None and status["retention_overdue"] is True
        text = await roomlogs_status(s, capsys, "--worker", url)
        assert "total lag: 0 records" in text
        assert "retention: no run recorded" in text
        # a schema without a signing key does not seal, and says so rather than reporting days overdue
        assert "sealing: off (no signing key registered" in text
    finally:
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 60) == 0

    # the owner runs retention; the worker is gone and more events wait in Kafka
    admin = await db.connect(ingest_settings.postgres_dsn.get(), s.postgres_schema)
    try:
        await maintain(admin, ingest_settings, now=datetime.now(UTC))
    finally:
        await admin.close()
    await produce(s, 7, start=30)
    # a worker that does not answer: shown, and exit 1
    status = orjson.loads(await roomlogs_status(s, capsys, "--worker", url, "--json", code=1))
    assert status["total_lag"] == 7
    assert status["workers"][0]["ready"] is None and status["workers"][0]["error"]
    assert all(p["paused"] is None and p["worker"] is None for p in status["partitions"])
    ran = datetime.fromisoformat(status["last_retention_run"])
    assert datetime.fromisoformat(status["next_retention_run"]) == ran + timedelta(
        seconds=s.maintenance_interval_seconds
    )
    assert status["last_retention_outcome"] == "ok" and status["retention_overdue"] is False
    text = await roomlogs_status(s, capsys, "--worker", url, code=1)
    assert "total lag: 7 records" in text and f"worker {url}: did not answer" in text
    assert "(ok), next due" in text


async def test_status_without_kafka_still_shows_what_postgres_knows(
    ingest_settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    """Kafka down: what PostgreSQL knows is still shown, and the exit code says something is wrong (it
    was 0: a monitoring check of `roomlogs status` saw no problem while the broker was away)."""
    s = ingest_settings.replace(kafka_bootstrap="127.0.0.1:1")
    assert await asyncio.to_thread(COMMANDS["status"], s, _parse(["status"])) == 1
    text = capsys.readouterr().out
    assert "Kafka did not answer" in text
    assert "events_public" in text and "retention: no run recorded" in text


async def _trickle(settings: Settings, *, batches: int, start: int) -> None:
    for i in range(batches):
        await produce(settings, 5, start=start + 5 * i)
        await asyncio.sleep(0.2)


def _pg(tool: str, *args: str) -> None:
    subprocess.run([str(postgres_bin_dir() / tool), *args], check=True, capture_output=True)


async def test_status_says_the_database_is_behind_after_a_restore(
    ingest_settings: Settings, worker_settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A database restored from a backup holds older offsets of record than the group committed to Kafka:
    the worker judges that `database behind` (and reads the records between again). `status`, which shows
    what a worker would find, judged without the group's offsets, so it said every partition was fine
    (exit 0). It now says ERROR database behind and exits 1, as README's Status section promises."""
    s = worker_settings.replace(metrics_port=free_port(), worker_data_dir=str(tmp_path / "w"))
    dsn, dump = ingest_settings.postgres_dsn.get(), tmp_path / "backup.dump"
    await produce(s, 30)
    proc = spawn_worker(s, tmp_path / "worker.log")
    try:
        assert await wait_caught_up(s, 120, progress=False), (tmp_path / "worker.log").read_text()[-3000:]
        # while the worker stores and commits batch after batch, it never looks behind
        feeding = asyncio.ensure_future(_trickle(s, batches=20, start=1000))
        while not feeding.done():
            args = _parse(["status", "--json"])
            assert await asyncio.to_thread(COMMANDS["status"], s, args) == 0
            found = {p["finding"] for p in orjson.loads(capsys.readouterr().out)["partitions"]}
            assert "database_behind" not in found, found
        await feeding
        assert await wait_caught_up(s, 120, progress=False)
        _pg(
            "pg_dump",
            "--format=custom",
            f"--schema={s.postgres_schema}",
            "--file",
            str(dump),
            "--dbname",
            dsn,
        )
        await produce(s, 12, start=30)
        assert await wait_caught_up(s, 120, progress=False)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 60) == 0  # it commits its offsets to Kafka as it stops
    args = _parse(["status", "--json"])
    assert await asyncio.to_thread(COMMANDS["status"], s, args) == 0  # before the restore: all fine
    capsys.readouterr()

    _pg("psql", "--quiet", "--dbname", dsn, "-c", f'DROP SCHEMA "{s.postgres_schema}" CASCADE')
    _pg("pg_restore", "--dbname", dsn, "--no-owner", str(dump))

    assert await asyncio.to_thread(COMMANDS["status"], s, args) == 1
    status = orjson.loads(capsys.readouterr().out)
    behind = [p for p in status["partitions"] if p["finding"] == "database_behind"]
    assert behind, status["partitions"]
    assert sum(p["end_offset"] - p["stored_offset"] for p in behind) == 12
    assert await asyncio.to_thread(COMMANDS["status"], s, _parse(["status"])) == 1
    assert "ERROR database behind" in capsys.readouterr().out
