"""Rebalances mid-window: a second worker joins the group while every detector's scenario is being
ingested, then the first leaves; once caught up, the alerts stored are exactly those of a clean run (no
window state is handed over: each worker evaluates over the stored rows)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

from detector_support import alert_ids, clean_run_alerts, mixed_records, produce_raw

from pipeline.settings import Settings
from pipeline.storage import db

#: fixture types of tests/conftest.py (`from conftest import` finds another conftest in a whole run)
TopicFactory = Callable[..., Awaitable[str]]


async def _stored(settings: Settings) -> int:
    conn = await db.connect(settings.postgres_dsn.get(), settings.postgres_schema)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM events"))
    finally:
        await conn.close()


async def _until_stored(settings: Settings, at_least: int, within_seconds: float = 120) -> None:
    for _ in range(int(within_seconds * 10)):
        if await _stored(settings) >= at_least:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"fewer than {at_least} rows stored after {within_seconds} s")


async def test_rebalances_mid_window_give_the_alerts_of_a_clean_run(
    ingest_settings: Settings,
    worker_settings: Settings,
    ingest_worker: Any,
    topic_factory: TopicFactory,
    figures: Callable[[str], None],
) -> None:
    records = mixed_records()
    third = len(records) // 3
    s = worker_settings.replace(batch_max_events=200)
    a = s.replace(kafka_group_instance_id="detectors-a")
    b = s.replace(kafka_group_instance_id="detectors-b")
    async with contextlib.AsyncExitStack() as stack:
        first = contextlib.AsyncExitStack()
        await produce_raw(ingest_settings, records[:third])
        await first.enter_async_context(ingest_worker(a))
        await _until_stored(ingest_settings, third // 2)
        await produce_raw(ingest_settings, records[third : 2 * third])
        second = await stack.enter_async_context(ingest_worker(b))  # b joins a: partitions move
        await _until_stored(ingest_settings, third + third // 2)
        await produce_raw(ingest_settings, records[2 * third :])
        await first.aclose()  # a stops and leaves mid-stream: b takes everything over
        assert await second.caught_up(180)
    got = await alert_ids(ingest_settings)
    expected = await clean_run_alerts(ingest_settings, ingest_worker, topic_factory)
    assert len(expected) >= 6
    assert got == expected
    figures(f"detectors through two rebalances: {len(records):,} records, {len(got)} alerts, the clean run's")
