"""kill -9 of `roomlogs worker` at random points while it ingests every detector's scenario among normal
traffic: once it has caught up, the alerts stored (and their ids) are exactly those of a clean run of the
same records (an in-process worker, its own schema and group, never interrupted), and the alerts topic
carries each of them (at least once)."""

from __future__ import annotations

import asyncio
import random
import signal
import subprocess
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
from aiokafka.structs import ConsumerRecord
from detector_support import alert_ids, clean_run_alerts, mixed_records, produce_raw

from pipeline.cli.devstack import spawn_worker
from pipeline.cli.progress import wait_caught_up
from pipeline.settings import Settings
from pipeline.stack import free_port
from pipeline.storage import db

#: fixture types of tests/conftest.py (`from conftest import` finds another conftest in a whole run)
Consume = Callable[..., Awaitable[list[ConsumerRecord]]]
TopicFactory = Callable[..., Awaitable[str]]


SEED = 18


async def _stored(settings: Settings) -> int:
    conn = await db.connect(settings.postgres_dsn.get(), settings.postgres_schema)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM events"))
    finally:
        await conn.close()


async def _pending(settings: Settings) -> int:
    conn = await db.connect(settings.postgres_dsn.get(), settings.postgres_schema)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM alert_outbox"))
    finally:
        await conn.close()


def _start(settings: Settings, tmp_path: Path, n: int) -> tuple[subprocess.Popen[bytes], int]:
    own = settings.replace(metrics_port=free_port(), worker_data_dir=str(tmp_path / f"w{n}"))
    return spawn_worker(own, tmp_path / f"worker-{n}.log"), own.metrics_port


async def _ready(port: int, within_seconds: float) -> bool:
    """The worker answers /readyz with 200 (started, holding its partitions): SIGTERM is handled."""
    async with httpx.AsyncClient() as client:
        for _ in range(int(within_seconds * 10)):
            try:
                if (await client.get(f"http://127.0.0.1:{port}/readyz")).status_code == 200:
                    return True
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.1)
    return False


async def test_kill_minus_9_mid_scenario_gives_the_alerts_of_a_clean_run(
    ingest_settings: Settings,
    worker_settings: Settings,
    ingest_worker: Any,
    topic_factory: TopicFactory,
    consume: Consume,
    tmp_path: Path,
    figures: Callable[[str], None],
) -> None:
    records = mixed_records()
    size = len(records) // 4 + 1
    parts = [records[i : i + size] for i in range(0, len(records), size)]
    # the run under fire: many small transactions, killed three times at random points, each time with a
    # quarter of the records newly published, so that each kill lands mid-stream
    s = worker_settings.replace(batch_max_events=200)
    rng = random.Random(SEED)
    kills: list[int] = []
    for n in range(3):
        before = await _stored(ingest_settings)
        await produce_raw(ingest_settings, parts[n])
        proc, _ = _start(s, tmp_path, n)
        try:
            for _ in range(600):  # until it writes (start-up and the group's join take seconds)
                if await _stored(ingest_settings) > before or proc.poll() is not None:
                    break
                await asyncio.sleep(0.1)
            await asyncio.sleep(rng.uniform(0.0, 0.5))  # then somewhere mid-stream
            kills.append(await _stored(ingest_settings))
            proc.send_signal(signal.SIGKILL)
            assert await asyncio.to_thread(proc.wait, 60) == -signal.SIGKILL
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(60)
    await produce_raw(ingest_settings, parts[3])
    proc, port = _start(s, tmp_path, 9)
    try:
        assert await _ready(port, 120)
        assert await wait_caught_up(s, 240, progress=False)
        for _ in range(600):  # what the killed workers left queued is relayed by this one
            if not await _pending(ingest_settings):
                break
            await asyncio.sleep(0.1)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 60) == 0, (tmp_path / "worker-9.log").read_text()[-3000:]
    got = await alert_ids(ingest_settings)

    expected = await clean_run_alerts(ingest_settings, ingest_worker, topic_factory)
    assert {k[1] for k in expected} == {
        "chat_flood", "spam_wave", "raid", "moderator_abuse", "permission_churn", "gift_burst"
    }  # fmt: skip
    assert got == expected  # the same keys, hence the same alert ids
    messages = await consume(ingest_settings.alerts_topic, len(got), timeout_seconds=60)
    assert {orjson.loads(m.value)["alert_id"] for m in messages} == {str(a) for a in got.values()}
    figures(
        f"detectors under kill -9: {len(records):,} records (6 scenarios among normal traffic), killed at "
        f"{', '.join(f'{k:,}' for k in kills)} rows stored: {len(got)} alerts "
        f"({', '.join(sorted(k[1] for k in got))}), the clean run's exactly; "
        f"{len(messages)} messages on the alerts topic for {len(got)} alerts"
    )
