"""A worker that sits in its group without partitions says so (pipeline/ingest/watch.py)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from topic_support import events, publish

from pipeline.settings import Settings


async def test_a_static_member_restarted_under_a_new_id_on_tansu_says_why_it_holds_nothing(
    ingest_settings: Settings, ingest_worker: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Tansu never hands a restarted static member (under a new instance id) an assignment: today the worker
    rejoins forever. It must say so: one warning line naming the cause and the setting, /readyz not ready
    with that reason."""
    s = ingest_settings.replace(kafka_static_membership=True, kafka_session_timeout_seconds=6.0)
    first = s.replace(kafka_group_instance_id="worker-a")
    await publish(s.kafka_bootstrap, s.events_topic, events(60))
    async with ingest_worker(first) as a:
        assert await a.caught_up(60)
    second = s.replace(kafka_group_instance_id="worker-b")
    async with ingest_worker(second) as b:
        b.service._watch.interval_seconds = 1.0
        await publish(s.kafka_bootstrap, s.events_topic, events(30, start=100))
        deadline = asyncio.get_running_loop().time() + 90
        ready: dict[str, Any] = {}
        while asyncio.get_running_loop().time() < deadline:
            ready = await b.service.readiness()
            if ready["problem"] or ready["partitions"]:
                break
            await asyncio.sleep(1.0)
        assert not ready["partitions"], "the broker did assign it: nothing to report"
        assert ready["ready"] is False
        assert "ROOMLOGS_KAFKA_STATIC_MEMBERSHIP" in ready["problem"]
    warnings = [
        r for r in caplog.records if r.levelno == logging.WARNING and "holds no partition" in r.message
    ]
    assert len(warnings) == 1
