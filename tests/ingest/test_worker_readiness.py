"""/readyz's body agrees with its status code, and says why a worker whose ingest is not running is not ready.

The worker's host answers 503 while its ingest loop has not started (it first reads the deletions topic,
which can take up to a minute, or stall) or after it stopped; the body still carried the ingest service's own
`"ready": true, "problem": null`, so a probe reading the body (or an operator) was told the opposite of the
status code, with no reason. (Found by an outside tester: a broker restarted empty under a running worker.)
"""

from __future__ import annotations

import asyncio
from typing import Any

from prometheus_client import CollectorRegistry

from pipeline.metrics import IngestMetrics
from pipeline.retention.metrics import RetentionMetrics
from pipeline.sealing.state import SealMetrics
from pipeline.settings import Settings
from pipeline.worker.host import WorkerHost


class StartedIngest:
    """What the host holds while `IngestService.start()` runs: PostgreSQL and Kafka answer, no problem."""

    totals: dict[str, int] = {"consumed": 0}

    async def readiness(self) -> dict[str, Any]:
        return {"ready": True, "paused": False, "postgres": "ok", "kafka": "ok", "problem": None}


def host() -> WorkerHost:
    registry = CollectorRegistry()
    made = WorkerHost(Settings(), IngestMetrics(registry), RetentionMetrics(registry), SealMetrics(registry))
    made.ingest = StartedIngest()  # type: ignore[assignment]
    return made


async def test_a_worker_whose_ingest_has_not_started_says_so_and_is_not_ready() -> None:
    ok, body = await host().readiness()

    assert (ok, body["ready"], body["status"], body["ingest_running"]) == (False, False, "failing", False)
    assert "ingest has not started yet" in body["problem"]


async def test_a_worker_whose_ingest_stopped_says_so_and_is_not_ready() -> None:
    h = host()
    h.task = asyncio.ensure_future(asyncio.sleep(0))
    await h.task

    ok, body = await h.readiness()

    assert (ok, body["ready"]) == (False, False)
    assert "ingest has stopped" in body["problem"]


async def test_a_running_worker_is_ready() -> None:
    h = host()
    h.task = asyncio.ensure_future(asyncio.sleep(60))
    try:
        ok, body = await h.readiness()
    finally:
        h.task.cancel()

    assert (ok, body["ready"], body["status"], body["problem"]) == (True, True, "ok", None)
