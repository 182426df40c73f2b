"""The worker's life as one typed object: start, run the ingest service, maintain, answer probes, stop.

Who calls it: the faust app (pipeline/worker/app.py), which owns the process (signals, the web server,
timers) and forwards to it: `start()` when the app starts, `stop()` on SIGTERM, `maintain()` from the
maintenance timer, `alive()` and `readiness()` from `/livez` and `/readyz`. (arq's `Worker` is the model:
a class with its state as typed attributes, not a closure over a dict.)

What a failure means:
- `start()` raising: the worker cannot work with these settings (the CLI's preflight has said why in one
  line for the usual causes); the process exits.
- The ingest loop or one of its relays ending with an error: a bug. It is logged with its traceback and
  `crash` (the app's) ends the process, so that a supervisor restarts it and the error is seen, instead of
  a worker idling with a dead loop. Outages never get there: they pause and retry.
- `maintain()` never raises for an outage or an error PostgreSQL reports (the run logs it, its report
  carries it and a failure is counted); a bug (asyncpg's InterfaceError, say) propagates. Every run ends
  by reading whether sealing keeps up (`pipeline.sealing.state`), on any role.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import asyncpg

from pipeline.evidence.keys import SealKey
from pipeline.ingest.service import IngestService
from pipeline.kafka_topics import ensure_topics
from pipeline.metrics import IngestMetrics
from pipeline.retention import RetentionMetrics, owns_log_tables, run_maintenance
from pipeline.sealing.run import seal_in_maintenance
from pipeline.sealing.state import SealMetrics, sealing_state
from pipeline.sealing.witness import Publisher
from pipeline.settings import Settings
from pipeline.storage import db
from pipeline.storage.classes import class_names
from pipeline.storage.migrate import check_schema
from pipeline.worker.collector import tune_for_batches

__all__ = ["WorkerHost"]

log = logging.getLogger("roomlogs.worker")

Crash = Callable[[BaseException], Awaitable[None]]


class WorkerHost:
    def __init__(
        self,
        settings: Settings,
        metrics: IngestMetrics,
        retention_metrics: RetentionMetrics,
        seal_metrics: SealMetrics,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.retention_metrics = retention_metrics
        self.seal_metrics = seal_metrics
        self.pool: asyncpg.Pool | None = None
        self.ingest: IngestService | None = None
        #: the ingest loop (`IngestService.run`)
        self.task: asyncio.Task[None] | None = None
        #: set once `stop()` began: no maintenance run starts on a pool about to close
        self.stopping = False
        self._crash: Crash | None = None
        self._crashing: asyncio.Future[None] | None = None
        #: the seal key, when this worker seals closed days (ROOMLOGS_SEAL_KEY_FILE, and it owns the tables)
        self.seal_key: SealKey | None = None
        self._witness: Publisher | None = None

    async def start(self, crash: Crash) -> None:
        """Topics, pool, schema check, partitions ahead, then the ingest loop and its relays."""
        s = self.settings
        self._crash = crash
        await ensure_topics(s)
        pool = self.pool = await db.create_pool(
            s.postgres_dsn.get(),
            s.postgres_schema,
            s.postgres_pool_size,
            session_settings=db.WORKER_SESSION_SETTINGS,
        )
        async with pool.acquire() as conn:
            await check_schema(conn, s.postgres_schema)
            owner = await owns_log_tables(conn)
            if not owner:
                log.info(
                    "connected as a role that does not own the log tables (the worker's own role): this "
                    "worker makes partitions ahead; expired partitions are dropped, and closed days sealed, "
                    "by `roomlogs retention enforce --apply --loop` run as their owner"
                )
        if s.seal_key_file and owner:
            self.seal_key = SealKey.load(s.seal_key_file)
            self._witness = Publisher(s)
            log.info("sealing closed days with key %s", self.seal_key.key_id)
        ingest = self.ingest = IngestService(s, pool, self.metrics)
        async with pool.acquire() as conn:
            made = await ingest.partitions.premake(
                conn, await class_names(conn), datetime.now(UTC).date(), s.partitions_ahead_days
            )
            self.metrics.partitions_created.inc(made)
        await ingest.start()
        tune_for_batches()
        self.task = asyncio.ensure_future(ingest.run())
        for task in (self.task, *ingest.relay_tasks):
            task.add_done_callback(self._ended)
        log.info("ingesting %s as group %s", s.events_topic, s.consumer_group)

    def _ended(self, task: asyncio.Future[None]) -> None:
        error = None if task.cancelled() else task.exception()
        if error is None or self._crash is None or self.stopping:
            return
        log.error("ingest crashed: %r", error, exc_info=error)
        self._crashing = asyncio.ensure_future(self._crash(error))

    async def stop(self) -> None:
        """Stop taking work; let the loop finish and commit the batch in hand; close what it opened."""
        self.stopping = True
        ingest = self.ingest
        if ingest is not None:
            await ingest.stop()
            task = self.task
            if task is not None and task.done() and not task.cancelled() and task.exception() is not None:
                log.error("ingest loop failed: %r", task.exception())
            await ingest.close()
        if self._witness is not None:
            await self._witness.close()
        if self.pool is not None:
            await self.pool.close()

    async def maintain(self) -> None:
        """Partitions ahead, expired partitions dropped, legal holds honoured, deletions recorded. Several
        workers run this; an advisory lock lets one at a time do it."""
        if self.ingest is None or self.pool is None or self.stopping:
            return
        await run_maintenance(
            self.pool,
            self.settings,
            self.retention_metrics,
            now=datetime.now(UTC),
            partitions=self.ingest.partitions,
        )
        if self.seal_key is not None:
            await seal_in_maintenance(self.pool, self.settings, self.seal_key, self._witness)
        await self._observe_sealing()

    async def _observe_sealing(self) -> None:
        """Every worker says whether sealing keeps up (`SealMetrics`), whoever holds the key."""
        assert self.pool is not None
        s = self.settings
        try:
            async with db.acquire(self.pool) as conn:
                state = await sealing_state(
                    conn,
                    now=datetime.now(UTC),
                    late_window_seconds=s.seal_late_window_seconds,
                    heads_topic=s.seal_heads_topic,
                )
        except db.OUTAGES as e:
            log.debug("sealing state not read this run: %r", e)
            return
        self.seal_metrics.observe(state)

    def alive(self) -> bool:
        """The process answers and its ingest loop has not died. A worker waiting out an outage is alive
        (restarting it would not help); only a dead loop asks the orchestrator for a restart."""
        return self.task is None or not self.task.done()

    async def readiness(self) -> tuple[bool, dict[str, Any]]:
        """Ready: ingest running, not paused, PostgreSQL and Kafka answering, no problem seen (checked live)
        and the JSON body that says why not."""
        running = self.task is not None and not self.task.done()
        body: dict[str, Any] = {"ingest_running": running}
        if self.ingest is not None:
            body.update(await self.ingest.readiness())
            body["totals"] = dict(self.ingest.totals)
        ok = running and bool(body.get("ready"))
        body["ready"] = ok  # the answer's own verdict, never contradicting its status code
        if not running and not body.get("problem"):
            body["problem"] = (
                "ingest has not started yet (it starts once the deletions topic is read and PostgreSQL and "
                "Kafka answer)"
                if self.task is None
                else "ingest has stopped (the worker is stopping or failed: see its log)"
            )
        body["status"] = "ok" if ok else "failing"
        return ok, body
