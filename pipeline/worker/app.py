"""The faust-streaming worker app.

faust owns the process: start-up order, signal handling (SIGTERM drains and commits), the web server
(`/metrics`, `/health`) and timers (partition upkeep). The hot path is `IngestService`, a batch consumer
started as a faust service, because a per-event agent cannot reach the throughput we need.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime
from typing import Any

import faust
import mode
from faust.app.base import BootStrategy
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from pipeline.ingest.consumer import IngestService
from pipeline.kafka_client import faust_credentials
from pipeline.kafka_topics import ensure_topics
from pipeline.metrics import IngestMetrics
from pipeline.retention import RetentionMetrics, owns_log_tables, run_maintenance
from pipeline.settings import Settings
from pipeline.storage import db
from pipeline.storage.classes import class_names
from pipeline.storage.migrate import check_schema
from pipeline.worker.collector import tune_for_batches

log = logging.getLogger("roomlogs.worker")


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
    metrics = IngestMetrics(registry)
    retention_metrics = RetentionMetrics(registry)
    app = _WorkerApp(
        f"{settings.consumer_group}-app",
        broker=f"kafka://{settings.kafka_bootstrap}",
        broker_credentials=faust_credentials(settings),
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
    state: dict[str, Any] = {}

    class IngestWorker(mode.Service):
        """Starts the pool and the ingest loop; on stop, drains the batch in hand and commits."""

        async def on_start(self) -> None:
            await ensure_topics(settings)
            pool = await db.create_pool(
                settings.postgres_dsn.get(),
                settings.postgres_schema,
                settings.postgres_pool_size,
                session_settings=db.WORKER_SESSION_SETTINGS,
            )
            async with pool.acquire() as conn:
                await check_schema(conn, settings.postgres_schema)
                if not await owns_log_tables(conn):
                    log.info(
                        "connected as a role that does not own the log tables (the worker's own role): "
                        "this worker makes partitions ahead; expired partitions are dropped by "
                        "`roomlogs retention enforce --apply` run as their owner"
                    )
            ingest = IngestService(settings, pool, metrics)
            async with pool.acquire() as conn:
                made = await ingest.partitions.premake(
                    conn, await class_names(conn), datetime.now(UTC).date(), settings.partitions_ahead_days
                )
                metrics.partitions_created.inc(made)
            await ingest.start()
            tune_for_batches()
            state.update(pool=pool, ingest=ingest, started=time.time())
            task = asyncio.ensure_future(ingest.run())
            task.add_done_callback(self._ingest_done)
            state["task"] = task
            for relay in ingest.relay_tasks:  # the dead-letter and deletion relays: a bug there ends it too
                relay.add_done_callback(self._ingest_done)
            log.info("ingesting %s as group %s", settings.events_topic, settings.consumer_group)

        def _ingest_done(self, task: asyncio.Future[None]) -> None:
            exc = None if task.cancelled() else task.exception()
            if exc is not None:
                # An unexpected error in the ingest loop (or its dead-letter relay) must end the worker (and
                # be seen), not idle it. Outages never get here: they pause and retry.
                log.error("ingest crashed: %r", exc, exc_info=exc)
                self.crash_task = asyncio.ensure_future(self.crash(exc))

        async def on_stop(self) -> None:
            state["stopping"] = True  # no maintenance run starts on a pool about to close
            ingest: IngestService | None = state.get("ingest")
            if ingest is not None:
                await ingest.stop()
                task = state.get("task")
                if task is not None and task.done() and task.exception() is not None:
                    log.error("ingest loop failed: %r", task.exception())
                await ingest.close()
            pool = state.get("pool")
            if pool is not None:
                await pool.close()

    app.service(IngestWorker)

    @app.timer(interval=settings.maintenance_interval_seconds)  # type: ignore[untyped-decorator]
    async def maintenance() -> None:
        """Partitions ahead, expired partitions dropped, legal holds honoured, deletions recorded.

        Several workers run this; an advisory lock lets one at a time do it. It never raises for an
        outage or an error PostgreSQL reports (the run logs it, the report carries it and a failure is
        counted); a bug (asyncpg's InterfaceError, say) ends the worker.
        """
        ingest: IngestService | None = state.get("ingest")
        if ingest is None or state.get("stopping"):
            return
        await run_maintenance(
            state["pool"], settings, retention_metrics, now=datetime.now(UTC), partitions=ingest.partitions
        )

    @app.page("/metrics")
    async def metrics_page(web: Any, request: Any) -> Any:
        # aiohttp wants the charset apart from the content type
        return web.bytes(
            generate_latest(registry), content_type=CONTENT_TYPE_LATEST.split(";")[0] + "; version=0.0.4"
        )

    @app.page("/livez")
    async def liveness_page(web: Any, request: Any) -> Any:
        """Alive: the process answers and its ingest loop has not died. A worker waiting out an outage is
        alive (restarting it would not help); only a dead loop asks the orchestrator for a restart."""
        task = state.get("task")
        dead = task is not None and task.done()
        return web.json({"status": "failing" if dead else "ok"}, status=503 if dead else 200)

    async def readiness(web: Any, request: Any) -> Any:
        """Ready: ingest running, not paused, PostgreSQL and Kafka answering (checked live)."""
        task = state.get("task")
        ingest: IngestService | None = state.get("ingest")
        running = task is not None and not task.done()
        body: dict[str, Any] = {"ingest_running": running}
        if ingest is not None:
            body.update(await ingest.readiness())
            body["totals"] = dict(ingest.totals)
        ok = running and bool(body.get("ready"))
        body["status"] = "ok" if ok else "failing"
        return web.json(body, status=200 if ok else 503)

    app.page("/readyz")(readiness)
    app.page("/health")(readiness)  # the name earlier releases used: readiness

    return app
