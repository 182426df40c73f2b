"""Each detector through the real worker (its own database role) and a real broker: its scenario
(pipeline/publisher/scenarios.py) raises exactly its alert, naming the users and events involved, within
seconds of the triggering event; the alert reaches the alerts topic once and the counter by detector.
The same records again (a replay) raise nothing more; an event arriving late completes its window."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from aiokafka.structs import ConsumerRecord
from detector_support import produce_raw, room_alerts

from pipeline.publisher import scenarios
from pipeline.settings import Settings

#: the `consume` fixture (tests/conftest.py); named here, since `conftest` is not one module in a whole run
Consume = Callable[..., Awaitable[list[ConsumerRecord]]]


async def _wait_for_alert(settings: Settings, room: str, within_seconds: float) -> list[Any]:
    deadline = time.monotonic() + within_seconds
    while time.monotonic() < deadline:
        rows = await room_alerts(settings, room)
        if rows:
            return rows
        await asyncio.sleep(0.05)
    return []


@pytest.mark.parametrize("name", scenarios.SCENARIOS)
async def test_a_scenario_raises_its_alert_once_within_seconds(
    name: str,
    ingest_settings: Settings,
    worker_settings: Settings,
    ingest_worker: Any,
    consume: Consume,
    figures: Any,
) -> None:
    s = scenarios.build(name, datetime.now(UTC))
    records = s.records()
    async with ingest_worker(worker_settings) as w:
        await produce_raw(worker_settings, records)
        published = time.monotonic()
        rows = await _wait_for_alert(ingest_settings, s.room_id, 60)
        latency = time.monotonic() - published
        assert await w.caught_up(60)
        await produce_raw(worker_settings, records)  # a replay: stores nothing, raises nothing
        assert await w.caught_up(60)
        rows = await room_alerts(ingest_settings, s.room_id)
        counted = w.metrics.alerts.labels(s.detector)._value.get()
    # one alert per window bucket the burst starts firing windows in (one, or two across a boundary)
    assert {(r["detector"], r["subject"]) for r in rows} == {(s.detector, s.subject)}
    assert 1 <= len(rows) <= 2
    alert = rows[0]
    ids = {uuid.UUID(e["event_id"]) for e in s.events()}
    assert set(alert["event_ids"]) <= ids and len(alert["event_ids"]) > 1
    assert alert["users"] and all(s.room_id[-6:] in u for u in alert["users"])
    assert counted == len(rows)
    messages = await consume(ingest_settings.alerts_topic, len(rows), timeout_seconds=30)
    mine = sorted(orjson.loads(m.value)["alert_id"] for m in messages if m.key == s.room_id.encode())
    assert mine == sorted(str(r["alert_id"]) for r in rows)
    figures(
        f"detector {s.detector}: scenario {name} raised {len(rows)} alert(s), the first "
        f"{latency:.2f} s after its last record was "
        f"published ({len(records)} records; event-time window {alert['window_start']:%H:%M:%S.%f}"
        f"..{alert['window_end']:%H:%M:%S.%f}; users {len(alert['users'])}; events {len(alert['event_ids'])})"
    )


async def test_a_late_event_completes_its_window(
    ingest_settings: Settings, worker_settings: Settings, ingest_worker: Any
) -> None:
    """A flood whose 41st message arrives last, after the messages sent after it: the alert is raised when
    it arrives, in the window of its own event time."""
    s = scenarios.build("flood", datetime.now(UTC) - timedelta(minutes=5))
    records = s.records()
    # the room's creation and 40 messages of the flood (not more than 40 in 10 s); the 41st arrives last
    flood = [r for r in records if b"look at me" in r[1]]
    first = [r for r in records if b"look at me" not in r[1]] + flood[:40]
    late = [flood[40]]
    assert len(late) == 1
    async with ingest_worker(worker_settings) as w:
        await produce_raw(worker_settings, first)
        assert await w.caught_up(60)
        assert await room_alerts(ingest_settings, s.room_id) == []
        await produce_raw(worker_settings, late)
        assert await w.caught_up(60)
    [alert] = await room_alerts(ingest_settings, s.room_id)
    late_id = uuid.UUID(orjson.loads(late[0][1])["event_id"])
    assert alert["detector"] == "chat_flood" and late_id in alert["event_ids"]
    assert alert["window_start"] <= s.start + timedelta(seconds=2.0 + 40 * 0.1) < alert["window_end"]
