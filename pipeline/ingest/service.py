"""The ingest service: Kafka batches in, one PostgreSQL transaction per batch out.

Why not a faust agent: an agent iterates events one at a time (~14k events/s on two cores with no work);
this service takes whole batches with aiokafka `getmany` and overlaps normalizing batch N+1 with writing
batch N, so Python and PostgreSQL each keep a core busy. It runs inside the worker process (see
pipeline/worker/), which owns the process lifecycle, the web endpoints and the timers.

It wires small parts, each with its own contract:
- the fetcher (pipeline/ingest/fetcher.py): getmany in chunks, the generation fence, the rebalance
  listener, positions never reset silently;
- the checkpoint (checkpoint.py): the offsets of record judged against the broker's log on assignment
  (positions.py), the offsets each batch continues from, Kafka commits and lag, what /readyz names;
- the sink (sink.py): the write in flight, waited out through PostgreSQL outages (pausing, staying in the
  group), dropped when a rebalance made it moot;
- the tally (tally.py): counters and totals;
- beside them: the dead-letter and deletion relays, the topic watch (watch.py), readiness (readiness.py).

Delivery guarantees: the offsets of record are in PostgreSQL (`ingest_offsets`), written in each batch's
transaction (pipeline/storage/writer.py); every assignment seeks to them once they are judged to fit the
log the broker has, so after a crash (kill -9 included) ingest resumes exactly after the last committed
batch, and after the world changed under them (a broker started empty, a topic recreated, a restored
database) nothing is skipped silently. A batch fetched before a rebalance is never written after it.
PostgreSQL unreachable pauses ingest; nothing is dead-lettered for an outage.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import Any

import asyncpg
from aiokafka import AIOKafkaProducer, TopicPartition

from pipeline.detectors import Detectors
from pipeline.errors import RoomlogsError
from pipeline.events.normalize import Normalizer
from pipeline.ingest.alert_relay import AlertRelay
from pipeline.ingest.backoff import Backoff
from pipeline.ingest.checkpoint import Checkpoint
from pipeline.ingest.deletion_log import DeletionLog
from pipeline.ingest.fetcher import Fetcher, PositionLost
from pipeline.ingest.mirror import DeadLetterMirror
from pipeline.ingest.prepare import build_batch, normalize_records
from pipeline.ingest.readiness import Readiness
from pipeline.ingest.rooms import RoomDirectory
from pipeline.ingest.sink import BatchSink
from pipeline.ingest.tally import Tally
from pipeline.ingest.watch import TopicWatch
from pipeline.kafka_client import KafkaConnection
from pipeline.kafka_logs import LogProbe
from pipeline.metrics import IngestMetrics
from pipeline.retention_rules import writable_from
from pipeline.settings import Settings
from pipeline.storage import db
from pipeline.storage.classes import retention_days
from pipeline.storage.deletions import Deletions, DeletionsLostError
from pipeline.storage.offsets import OffsetsMovedError
from pipeline.storage.partitions import PartitionManager, dropped_through
from pipeline.storage.writer import BatchWriter

__all__ = ["IngestService"]

log = logging.getLogger("roomlogs.ingest")

_RETENTION_REFRESH_SECONDS = 30.0


def utc_now() -> datetime:
    return datetime.now(UTC)


class IngestService:
    """Lifecycle: `await start()`, then `await run()` until `await stop()` (from another task or a signal
    handler) makes it finish the batch in hand, commit and return; then `await close()`."""

    def __init__(
        self,
        settings: Settings,
        pool: asyncpg.Pool,
        metrics: IngestMetrics,
        *,
        clock: Callable[[], datetime] = utc_now,
        partitions: PartitionManager | None = None,
    ) -> None:
        s = self.settings = settings
        self._pool = pool
        self.metrics = metrics
        self._clock = clock
        self.partitions = partitions or PartitionManager()
        self.normalizer = Normalizer(
            max_event_bytes=s.max_event_bytes,
            chat_text_max_chars=s.chat_text_max_chars,
            reason_max_chars=s.reason_max_chars,
            max_future_skew_seconds=s.max_future_skew_seconds,
        )
        self.rooms = RoomDirectory(
            default_class=s.default_retention_class, busy_min_occupancy=s.busy_room_min_occupancy
        )
        self.deletions = Deletions()
        self.tally = Tally(metrics, self.normalizer)
        self._kafka = KafkaConnection.of(s)
        self._stopping = asyncio.Event()
        self._stopped = asyncio.Event()
        self.fetcher = Fetcher(s, self._kafka, metrics)
        self._probe = LogProbe(s)
        who = s.kafka_group_instance_id or socket.gethostname()
        self.checkpoint = Checkpoint(
            s, pool, metrics, self.fetcher, self._probe, clock=clock,
            changed_by=f"worker {who} pid {os.getpid()}", stopping=self._stopping,
        )  # fmt: skip
        self.sink = BatchSink(
            s,
            BatchWriter(
                pool,
                self.partitions,
                deletions=self.deletions,
                classify=self.rooms.classify,
                late_window_seconds=s.seal_late_window_seconds,
                detectors=(
                    Detectors(
                        settings_ttl_seconds=s.detector_settings_ttl_seconds,
                        memory_rows=s.detector_memory_rows,
                    )
                    if s.detectors_enabled
                    else None
                ),
            ),
            metrics,
            idle=self.fetcher.idle,
            resume=self.fetcher.resume_all,
            generation=lambda: self.fetcher.generation,
            stopping=self._stopping,
        )
        #: deletion requests kept on their own topic; re-applied at start when the database lacks them
        self.deletion_log = DeletionLog(s, pool, metrics, self.deletions)
        self.mirror: DeadLetterMirror | None = None
        self._mirror_task: asyncio.Task[None] | None = None
        #: sends the alerts the detectors stored to the alerts topic
        self.alert_relay: AlertRelay | None = None
        self._alert_task: asyncio.Task[None] | None = None
        self._producer: AIOKafkaProducer | None = None
        self._watch: TopicWatch | None = None
        self._watch_task: asyncio.Task[None] | None = None
        #: set by the topic watch when the topic became another incarnation: judge the held partitions again
        self._rejudge = False
        self._readiness = Readiness()
        self._retention_days: dict[str, int] = {}
        #: per class, the newest day retention dropped: never written again, whatever the class's days now
        self._dropped_through: dict[str, date] = {}
        self._retention_loaded_at = 0.0

    @property
    def totals(self) -> dict[str, int]:
        return self.tally.totals

    # --- lifecycle -------------------------------------------------------------------------------------
    async def start(self) -> None:
        s = self.settings
        async with self._pool.acquire() as conn:
            await self.partitions.load(conn)
            await self._load_retention(conn)
            await self.deletions.load(conn)
        self._producer = AIOKafkaProducer(
            **self._kafka.kwargs(),
            acks="all",
            enable_idempotence=s.kafka_idempotent_producer,
            compression_type=None if s.kafka_compression == "none" else s.kafka_compression,
            linger_ms=5,
        )
        await self._producer.start()
        self.mirror = DeadLetterMirror(
            self._pool,
            self._producer,
            s.dead_letter_topic,
            self.metrics,
            retry_initial_seconds=s.db_retry_initial_seconds,
            retry_max_seconds=max(s.db_retry_max_seconds, 5.0),
        )
        self._mirror_task = asyncio.create_task(self.mirror.run())
        self.alert_relay = AlertRelay(
            self._pool,
            self._producer,
            s.alerts_topic,
            self.metrics,
            retry_initial_seconds=s.db_retry_initial_seconds,
            retry_max_seconds=max(s.db_retry_max_seconds, 5.0),
        )
        self._alert_task = asyncio.create_task(self.alert_relay.run())
        # before anything is ingested: a database restored from a backup re-applies the deletions it lacks
        await self.deletion_log.start(self._producer)
        await self._probe.start()
        await self.fetcher.start(self)
        self._watch = TopicWatch(
            s,
            self.fetcher.consumer,
            self._probe,
            self._pool,
            self.metrics,
            judged_topic_id=lambda: self.checkpoint.topic_id,
            on_new_log=self._request_rejudge,
        )

    async def stop(self) -> None:
        """Stop taking work; finish and commit the batch in hand (within the drain deadline)."""
        self._stopping.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopped.wait(), self.settings.shutdown_drain_seconds + 5)

    async def close(self) -> None:
        if self._watch_task is not None:
            self._watch_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._watch_task
            self._watch_task = None
        if self.mirror is not None and self._mirror_task is not None:
            # one last round for what this worker queued; anything left is sent by the next relay
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.mirror.drained.wait(), 5.0)
            self.mirror.stop()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._mirror_task, 5.0)
            self._mirror_task = None
        if self.alert_relay is not None and self._alert_task is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.alert_relay.drained.wait(), 5.0)
            self.alert_relay.stop()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._alert_task, 5.0)
            self._alert_task = None
        await self.deletion_log.close()
        await self.fetcher.stop()
        await self._probe.stop()
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    # --- the loop --------------------------------------------------------------------------------------
    async def run(self) -> None:
        s, fetcher = self.settings, self.fetcher
        if self._watch is not None and self._watch_task is None:
            self._watch_task = asyncio.create_task(self._watch.run())
        try:
            while not self._stopping.is_set():
                if self._rejudge:
                    await self._rejudge_held()
                try:
                    polled = await fetcher.poll(self._stopping)
                except PositionLost as e:
                    await self._position_lost(e)
                    continue
                if polled is None:
                    continue  # not ours to write (a rebalance came in between): they come again
                self.checkpoint.update_lag()
                # offsets the consumer read past without a record to hand out (transaction markers, aborted
                # transactions, compacted gaps): the batch carries the offsets of record over them too
                skipped = self.checkpoint.skipped(polled.records, polled.positions)
                if not polled.records and not skipped:
                    await self._finish()
                    continue
                now = self._clock()
                pass1 = await normalize_records(s.events_topic, polled.records, self.normalizer, now)
                await self._finish()
                # Every room of the batch is read again, not only those the cache lacks: a producer that
                # does not key by room spreads a room over partitions, and another worker may have moved
                # its state (and class) since; PostgreSQL has it, committed before our write.
                if polled.generation != fetcher.generation or not await self.sink.read(
                    self._refresh_state, pass1.rooms
                ):
                    continue
                if polled.generation != fetcher.generation:
                    continue  # a rebalance meanwhile: the new assignment reads these records again
                batch, stats = build_batch(
                    pass1,
                    consumer_group=s.consumer_group,
                    rooms=self.rooms,
                    horizons=writable_from(now.date(), self._retention_days, self._dropped_through),
                    now=now,
                    deletions=self.deletions,
                )
                self.checkpoint.continue_from(batch, skipped)
                self.tally.consumed(pass1.consumed)
                self.sink.launch(batch, stats, now, polled.generation)
            await asyncio.wait_for(self._finish(), s.shutdown_drain_seconds)
        finally:
            self._stopped.set()

    async def _finish(self) -> None:
        """Wait for the write in flight and count it (before anything else is awaited), wake the relay,
        checkpoint it."""
        try:
            written = await self.sink.finish()
        except OffsetsMovedError as e:
            await self._offsets_moved(e)
            return
        except DeletionsLostError as e:
            await self._deletions_lost(e)
            return
        if written is None:
            return
        self.tally.written(written)
        outcome = written.outcome
        if outcome.conflicts:
            self.rooms.forget(outcome.conflicting_rooms)  # a conflicting copy moved the cache, not PostgreSQL
        if outcome.outboxed and self.mirror is not None:
            self.mirror.wake()
        if outcome.alerts and self.alert_relay is not None:
            self.alert_relay.wake()
        await self.checkpoint.written(written.batch)

    # --- partitions changing hands, or positions that no longer fit ------------------------------------
    async def on_revoked(self, revoked: set[TopicPartition]) -> None:
        self.checkpoint.forget(tp.partition for tp in revoked)
        await self.sink.settle(self.settings.shutdown_drain_seconds)

    async def on_assigned(self, assigned: set[TopicPartition]) -> None:
        self.rooms.clear()
        # A write launched after the revoke would otherwise commit after the judgement reads the offsets,
        # and the seek would send us back over records it wrote (fenced, but fetched twice).
        await self.sink.settle(self.settings.shutdown_drain_seconds)
        self.metrics.partitions_held.set(len(assigned))
        if assigned:
            await self.checkpoint.resume(tp.partition for tp in assigned)

    async def _position_lost(self, error: PositionLost) -> None:
        """The broker has no record at some positions (a log truncated, recreated or emptied under us), or
        a partition has none: judge them again rather than reset silently."""
        if self.fetcher.rebalancing:
            await asyncio.sleep(0.05)  # the assignment being made judges and seeks them
            return
        log.warning("%s; judging those partitions again", error)
        await self._rejudge_now(tp.partition for tp in error.partitions)

    async def _offsets_moved(self, error: OffsetsMovedError) -> None:
        """The offsets of record moved back under a batch (a restored database, an operator's move): re-apply
        the deletion requests a restored database lacks, judge those partitions again and read on from
        where PostgreSQL says."""
        log.warning("%s; judging those partitions again", error)
        await self._catch_up_deletions()
        await self._rejudge_now(error.stored)

    async def _deletions_lost(self, error: DeletionsLostError) -> None:
        """A deletion request this worker loaded is gone from the database (restored under it): re-apply
        what the deletions topic has before writing on, then read every held partition again from where
        PostgreSQL says (the batch wrote nothing; a restore may have moved the offsets of record too)."""
        log.warning("%s; re-applying the deletions topic's requests before ingest writes on", error)
        await self._catch_up_deletions()
        await self._rejudge_now(self.fetcher.partitions())

    async def _catch_up_deletions(self) -> None:
        """`DeletionLog.catch_up`, waiting out Kafka or PostgreSQL away (logged once): nothing is written
        before the deletions the database lacks are back, as at start."""
        s = self.settings
        backoff = Backoff(s.db_retry_initial_seconds, max(s.db_retry_max_seconds, 5.0))
        failed = False
        while not self._stopping.is_set():
            try:
                await self.deletion_log.catch_up()
            except RoomlogsError as e:  # the topic unread to its end, Kafka refusing or away, PostgreSQL away
                if not failed:
                    log.warning("re-applying deletion requests failed (%s); ingest waits and retries", e)
                    failed = True
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), backoff.next_delay())
                continue
            if failed:
                log.warning("deletion requests re-applied; ingest resumes")
            return

    async def _request_rejudge(self) -> None:
        self._rejudge = True

    async def _rejudge_held(self) -> None:
        """The topic became another incarnation under the held partitions: judge them all again."""
        self._rejudge = False
        await self._rejudge_now(self.fetcher.partitions())

    async def _rejudge_now(self, partitions: Any) -> None:
        """Judge `partitions` again and re-position every held partition at its offsets of record.

        Every held one, not only those named: moving the generation drops what was fetched and not yet
        written, of every partition (a poll in hand, a batch in flight), and the consumer has read past
        those records. A partition left where the consumer stands would next hand out records after them,
        from the offset of record's point of view a jump over records nobody wrote (an outside tester, a
        database restored under a running worker: the partitions a batch found moved back were judged, the
        others' records of the dropped poll were never stored). Judged, an unchanged partition resumes where
        its offsets of record stand: nothing twice (the writer fences what is stored), nothing skipped."""
        self.fetcher.generation += 1  # what was fetched or built from the old positions is not written
        await self.sink.settle(self.settings.shutdown_drain_seconds)
        if self.sink.landed:
            await self._finish()  # committed: count and checkpoint it
        self.sink.drop()  # failed or still waiting: its records are read again from where the judgement says
        held = self.fetcher.partitions()
        named = sorted(set(partitions) & set(held))
        if named != held:
            log.info("judging %s again; re-positioning %s at their offsets of record too", named, held)
        if held:
            await self.checkpoint.resume(held)

    # --- state from PostgreSQL -------------------------------------------------------------------------
    async def _refresh_state(self, rooms: set[str]) -> None:
        async with db.acquire(self._pool) as conn:
            if rooms:
                await self.rooms.load(conn, rooms)
            if time.monotonic() - self._retention_loaded_at > _RETENTION_REFRESH_SECONDS:
                await self._load_retention(conn)

    async def _load_retention(self, conn: asyncpg.Connection) -> None:
        """Retention classes, and the newest day retention dropped per class: what must not be (re-)inserted.
        Authorized deletions are not read here: the writer re-reads them inside every transaction that
        could be affected (pipeline.storage.deletions)."""
        self._retention_days = await retention_days(conn)
        self._dropped_through = await dropped_through(conn)
        self._retention_loaded_at = time.monotonic()

    # --- what the process host asks --------------------------------------------------------------------
    async def readiness(self) -> dict[str, Any]:
        """Can this worker ingest right now? (pipeline/ingest/readiness.py; served at /readyz)"""
        watch = self._watch.state if self._watch is not None else None
        return await self._readiness.check(
            self._pool,
            self._producer,
            paused=self.sink.paused,
            partitions=self.fetcher.partitions(),
            problem=watch.problem if watch else None,
            idle=watch.idle if watch else None,
            notices=self.checkpoint.notices(self._clock()),
        )

    @property
    def relay_tasks(self) -> list[asyncio.Task[None]]:
        """The relays' tasks (dead letters, deletions; none before `start()`): a failure of one must end the
        worker too."""
        return [t for t in (self._mirror_task, self.deletion_log.task) if t is not None]

    @property
    def write_in_flight(self) -> bool:
        """A batch is being written or its outcome not yet counted (counters lag the offsets until then)."""
        return self.sink.in_flight
