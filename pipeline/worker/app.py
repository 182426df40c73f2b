"""The faust-streaming worker app: the process around the worker host (pipeline/worker/host.py).

faust owns the process: start-up order, signal handling (SIGTERM drains and commits), the web server
(`/metrics`, `/livez`, `/readyz`) and timers (partition upkeep and retention). Each of those forwards to
the `WorkerHost`, which owns the worker's state. The hot path is `IngestService`, a batch consumer, because
a per-event agent cannot reach the throughput we need.
"""

from __future__ import annotations

from typing import Any

import faust
import mode
from faust.app.base import BootStrategy
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from pipeline.kafka_client import KafkaConnection
from pipeline.metrics import IngestMetrics
from pipeline.retention import RetentionMetrics
from pipeline.sealing.state import SealMetrics
from pipeline.settings import Settings
from pipeline.worker.host import WorkerHost


class _Boot(BootStrategy):
    """faust runs the process, the web endpoints and the timers; Kafka is the ingest service's own.

    faust's own consumer group (`<group>-app`) had nothing to consume, yet every start and restart waited
    for it to form (seconds on any broker): without it a restarted worker resumes ingest sooner.
    """

    enable_kafka = False


class _WorkerApp(faust.App):
    BootStrategy = _Boot

    async def _wait_for_table_recovery_completed(self) -> bool:
        return False  # no tables, so no recovery to wait for: start the services at once


def create_app(settings: Settings, registry: CollectorRegistry | None = None) -> faust.App:
    registry = registry or CollectorRegistry()
    app = _WorkerApp(
        f"{settings.consumer_group}-app",
        broker=f"kafka://{settings.kafka_bootstrap}",
        broker_credentials=KafkaConnection.of(settings).faust_credentials(),
        store="memory://",
        datadir=settings.worker_data_dir,
        autodiscover=False,
        web_enabled=True,
        web_bind=settings.metrics_host,
        web_port=settings.metrics_port,
        web_host=settings.metrics_host,
        topic_replication_factor=settings.kafka_replication_factor,
        producer_acks=-1,
        # The app's own consumer group has no agents to feed (ingest has its own group): short timeouts
        # keep start-up quick (Tansu holds a join for part of them) and cost nothing.
        broker_session_timeout=10.0,
        broker_rebalance_timeout=10.0,
        broker_heartbeat_interval=1.0,
    )
    host = WorkerHost(settings, IngestMetrics(registry), RetentionMetrics(registry), SealMetrics(registry))

    class Lifecycle(mode.Service):
        """faust starts and stops the host with the app (its `crash` ends the process on a bug)."""

        async def on_start(self) -> None:
            await host.start(crash=self.crash)

        async def on_stop(self) -> None:
            await host.stop()

    app.service(Lifecycle)

    @app.timer(interval=settings.maintenance_interval_seconds)  # type: ignore[untyped-decorator]
    async def maintenance() -> None:
        await host.maintain()

    @app.page("/metrics")
    async def metrics_page(web: Any, request: Any) -> Any:
        # aiohttp wants the charset apart from the content type
        return web.bytes(
            generate_latest(registry), content_type=CONTENT_TYPE_LATEST.split(";")[0] + "; version=0.0.4"
        )

    @app.page("/livez")
    async def liveness_page(web: Any, request: Any) -> Any:
        alive = host.alive()
        return web.json({"status": "ok" if alive else "failing"}, status=200 if alive else 503)

    async def readiness(web: Any, request: Any) -> Any:
        ok, body = await host.readiness()
        return web.json(body, status=200 if ok else 503)

    app.page("/readyz")(readiness)
    app.page("/health")(readiness)  # the name earlier releases used: readiness

    return app
