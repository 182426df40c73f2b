"""The ingest loop: Kafka batches in, one PostgreSQL transaction per batch out.

Why not a faust agent: an agent iterates events one at a time (~14k events/s on two cores with no work);
this loop takes whole batches with aiokafka `getmany` and overlaps normalizing batch N+1 with writing
batch N, so Python and PostgreSQL each keep a core busy. It runs inside the faust worker app (see app.py),
which owns the process lifecycle, the web endpoints and the timers.

Delivery guarantees:
- Offsets of record are in PostgreSQL (`ingest_offsets`), written in the batch's transaction. On every
  assignment they are judged against the log the broker has now (pipeline/ingest/positions.py: the same
  topic incarnation? records deleted unread? the database behind?) and the consumer seeks where that says,
  so after a crash (kill -9 included) it resumes exactly after the last committed batch: nothing lost,
  nothing written twice; and after the world changed under them (a broker started empty, a topic recreated,
  a restored database) nothing is skipped silently. Kafka offsets are committed afterwards only so that
  Kafka tools show progress (and so that a database behind them is noticed).
- The consumer never resets a position on its own (`auto_offset_reset="none"`): an offset out of range, or
  offsets of record moved back under a batch (OffsetsMovedError from the writer), sends the partitions
  through the same judgement again.
- A batch fetched before a rebalance is never written after it (a generation counter fences it); its
  records are fetched again from the stored offsets.
- PostgreSQL unreachable: the loop pauses its partitions (staying in the group), retries the same batch
  with capped exponential back-off, and resumes. Nothing is dead-lettered for an outage.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError, NoOffsetForPartitionError, OffsetOutOfRangeError
from aiokafka.structs import OffsetAndMetadata

from pipeline.errors import StorageUnavailableError
from pipeline.events.normalize import Normalizer
from pipeline.events.reasons import Reason
from pipeline.ingest.backoff import Backoff
from pipeline.ingest.deletion_log import DeletionLog
from pipeline.ingest.mirror import DeadLetterMirror
from pipeline.ingest.positions import Finding, MissingPartitionsError, Verdict, resume_positions
from pipeline.ingest.prepare import BatchStats, build_batch, normalize_records
from pipeline.ingest.readiness import Readiness
from pipeline.ingest.rooms import RoomDirectory
from pipeline.ingest.watch import TopicWatch
from pipeline.kafka_client import client_kwargs
from pipeline.kafka_logs import LogProbe
from pipeline.logs import outage_log
from pipeline.metrics import IngestMetrics
from pipeline.settings import Settings
from pipeline.storage import db
from pipeline.storage.batch import WriteBatch, WriteOutcome
from pipeline.storage.classes import retention_days
from pipeline.storage.db import CONNECTION_ERRORS
from pipeline.storage.deletions import Deletions
from pipeline.storage.offsets import OffsetsMovedError
from pipeline.storage.partitions import PartitionManager, dropped_through, writable_from
from pipeline.storage.writer import BatchWriter

log = logging.getLogger("roomlogs.ingest")

#: one line when PostgreSQL goes away, one when it is back (shared with the rest of the process)
_outage = outage_log("PostgreSQL")

_RETENTION_REFRESH_SECONDS = 30.0
#: Records taken from aiokafka's buffer per `getmany` call (see IngestService._top_up).
FETCH_CHUNK_RECORDS = 1_000
#: PostgreSQL is away: wait and retry (anything else from PostgreSQL is a bug and ends the loop).
_OUTAGE: tuple[type[BaseException], ...] = (StorageUnavailableError, *CONNECTION_ERRORS)


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(slots=True)
class InFlight:
    """The batch being written while the next is normalized: what to count once it lands, what to retry."""

    batch: WriteBatch
    stats: BatchStats
    received_at: datetime
    #: the assignment generation it was read under (a write that outlives a rebalance is not retried)
    generation: int
    task: asyncio.Task[WriteOutcome]


@dataclass(slots=True)
class Notice:
    """What the last judgement of a partition found, while it lasts (pipeline/ingest/positions.py)."""

    verdict: Verdict
    since: datetime
    #: a re-read lasts until the offsets of record reach this offset; None: it is not a re-read
    until_offset: int | None

    def to_json(self) -> dict[str, Any]:
        return {
            "partition": self.verdict.partition,
            "finding": self.verdict.finding.value,
            "since": self.since.isoformat(),
            "until_offset": self.until_offset,
            "detail": self.verdict.why,
        }


#: How long /readyz keeps naming records deleted unread after they were found (they stay in offset_changes).
LOSS_NOTICE_SECONDS = 3600.0


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, service: IngestService) -> None:
        self._service = service

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        try:
            await self._service._on_revoked(revoked)
        except Exception as e:
            self._service._listener_failed(e)
            raise

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        try:
            await self._service._on_assigned(assigned)
        except Exception as e:
            self._service._listener_failed(e)
            raise


class IngestService:
    """Owns one Kafka consumer (group `settings.consumer_group`) and writes through one BatchWriter.

    Lifecycle: `await start()`, then `await run()` until `await stop()` (from another task or a signal
    handler) makes it finish the batch in hand, commit and return.
    """

    def __init__(
        self,
        settings: Settings,
        pool: asyncpg.Pool,
        metrics: IngestMetrics,
        *,
        clock: Callable[[], datetime] = utc_now,
        partitions: PartitionManager | None = None,
    ) -> None:
        self.settings = settings
        self._pool = pool
        self.metrics = metrics
        self._clock = clock
        self.partitions = partitions or PartitionManager()
        self.normalizer = Normalizer(
            max_event_bytes=settings.max_event_bytes,
            chat_text_max_chars=settings.chat_text_max_chars,
            reason_max_chars=settings.reason_max_chars,
            max_future_skew_seconds=settings.max_future_skew_seconds,
        )
        self.rooms = RoomDirectory(
            default_class=settings.default_retention_class,
            busy_min_occupancy=settings.busy_room_min_occupancy,
        )
        self.deletions = Deletions()
        self._writer = BatchWriter(
            pool, self.partitions, deletions=self.deletions, classify=self.rooms.classify
        )
        self.mirror: DeadLetterMirror | None = None
        self._mirror_task: asyncio.Task[None] | None = None
        #: deletion requests kept on their own topic; re-applied at start when the database lacks them
        self.deletion_log = DeletionLog(settings, pool, metrics, self.deletions)
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self._generation = 0
        #: True between a revoke and the next assignment (records fetched then are not ours to write).
        self._rebalancing = False
        #: the batch being written while the next one is normalized (at most one)
        self._in_flight: InFlight | None = None
        self._stopping = asyncio.Event()
        self._stopped = asyncio.Event()
        self._retention_days: dict[str, int] = {}
        #: per class, the newest day retention dropped: never written again, whatever the class's days now
        self._dropped_through: dict[str, date] = {}
        self._retention_loaded_at = 0.0
        self._paused = False
        self._listener_error: BaseException | None = None
        self._readiness = Readiness()
        #: Next offset durably written, by partition (from the offsets of record), for the lag gauge.
        self._written: dict[int, int] = {}
        #: Where the offsets of record stand as far as this worker knows, by partition: where the judgement
        #: on assignment put them, then each batch launched. A batch continues from here (resumes_from).
        self._positions: dict[int, int] = {}
        #: Partitions whose last judgement found something other than a plain resume, while it lasts
        #: (a re-read in progress, a recent loss): named by /readyz.
        self.notices: dict[tuple[int, str], Notice] = {}
        self._probe: LogProbe | None = None
        self._watch: TopicWatch | None = None
        self._watch_task: asyncio.Task[None] | None = None
        #: the topic id the held partitions were judged in (None: the broker gives none)
        self._topic_id: uuid.UUID | None = None
        #: set by the watch when the topic became another incarnation: the loop judges its partitions again
        self._rejudge = False
        #: who moves offsets of record in `offset_changes` when this worker does
        who = settings.kafka_group_instance_id or socket.gethostname()
        self.changed_by = f"worker {who} pid {os.getpid()}"
        #: Totals since start (also exported as metrics); handy for tests, the demo and the benchmark.
        self.totals: dict[str, int] = {
            "consumed": 0,
            "stored": 0,
            "dead_lettered": 0,
            "expired": 0,
            "suppressed": 0,
            "duplicates": 0,
        }

    # --- lifecycle -------------------------------------------------------------------------------------
    async def start(self) -> None:
        s = self.settings
        async with self._pool.acquire() as conn:
            await self.partitions.load(conn)
            await self._load_retention(conn)
            await self.deletions.load(conn)
        self._producer = AIOKafkaProducer(
            **client_kwargs(s),
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
        # before anything is ingested: a database restored from a backup re-applies the deletions it lacks
        await self.deletion_log.start(self._producer)
        self._consumer = AIOKafkaConsumer(
            **client_kwargs(s),
            group_id=s.consumer_group,
            enable_auto_commit=False,
            # never reset a position silently: an offset out of range is judged (pipeline.ingest.positions)
            auto_offset_reset="none",
            max_partition_fetch_bytes=8 * 1024 * 1024,
            fetch_max_bytes=64 * 1024 * 1024,
            max_poll_interval_ms=300_000,
            session_timeout_ms=int(s.kafka_session_timeout_seconds * 1000),
            heartbeat_interval_ms=max(100, int(s.kafka_session_timeout_seconds * 1000 / 6)),
            group_instance_id=s.kafka_group_instance_id if s.kafka_static_membership else None,
        )
        self._probe = LogProbe(s)
        await self._probe.start()
        # Subscribed after start(): aiokafka's start() of a subscribed consumer waits for an assignment, and a
        # member the broker never assigns (pipeline/ingest/watch.py) would hang there, unseen.
        await self._consumer.start()
        self._consumer.subscribe([s.events_topic], listener=_Rebalance(self))
        self._watch = TopicWatch(
            s,
            self._consumer,
            self._probe,
            self._pool,
            self.metrics,
            judged_topic_id=lambda: self._topic_id,
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
        await self.deletion_log.close()
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None
        if self._probe is not None:
            await self._probe.stop()
            self._probe = None
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    async def run(self) -> None:
        consumer = self._consumer
        assert consumer is not None, "start() first"
        s = self.settings
        wait_ms = int(s.batch_max_wait_seconds * 1000)
        if self._watch is not None and self._watch_task is None:
            self._watch_task = asyncio.create_task(self._watch.run())
        try:
            while not self._stopping.is_set():
                if self._listener_error is not None:
                    raise self._listener_error  # a bug in a rebalance callback: end the loop, not idle in it
                if self._rejudge:
                    await self._rejudge_held()
                if not consumer.assignment():
                    # aiokafka's getmany waits for an assignment without a bound: a member never assigned
                    # would never see its stop. Nothing to fetch anyway; the topic watch says why.
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._stopping.wait(), max(s.batch_max_wait_seconds, 0.05))
                    continue
                try:
                    records = await consumer.getmany(
                        timeout_ms=wait_ms, max_records=min(s.batch_max_events, FETCH_CHUNK_RECORDS)
                    )
                except (OffsetOutOfRangeError, NoOffsetForPartitionError) as e:
                    await self._out_of_range(e)
                    continue
                generation = self._generation
                if self._rebalancing:
                    continue  # fetched between revoke and assign: the assignment seeks, these come again
                if records and not await self._top_up(consumer, records, s.batch_max_events, generation):
                    continue  # a rebalance while topping up: the new assignment re-reads these records
                self._update_lag(consumer)
                if not records:
                    await self._finish_pending()
                    continue
                now = self._clock()
                pass1 = await normalize_records(
                    s.events_topic, {tp.partition: msgs for tp, msgs in records.items()}, self.normalizer, now
                )
                await self._finish_pending()
                if generation != self._generation:
                    continue  # a rebalance happened meanwhile: the new assignment re-reads these records
                # Every room of the batch is read again, not only those the cache lacks: a producer that
                # does not key by room spreads a room over partitions, and another worker may have moved
                # its state (and class) since; PostgreSQL has it, committed before our write.
                if not await self._with_storage(self._refresh_state, pass1.rooms):
                    continue
                if generation != self._generation:
                    continue
                batch, stats = build_batch(
                    pass1,
                    consumer_group=s.consumer_group,
                    rooms=self.rooms,
                    horizons=self._horizons(now.date()),
                    now=now,
                    deletions=self.deletions,
                )
                positions = self._positions
                batch.resumes_from = {p: positions[p] for p in batch.next_offsets if p in positions}
                positions.update(batch.next_offsets)
                self.metrics.consumed.inc(pass1.consumed)
                self.totals["consumed"] += pass1.consumed
                self._launch(batch, stats, now, generation)
            await asyncio.wait_for(self._finish_pending(), s.shutdown_drain_seconds)
        finally:
            self._stopped.set()

    async def _top_up(
        self,
        consumer: AIOKafkaConsumer,
        records: dict[TopicPartition, list[Any]],
        max_records: int,
        generation: int,
    ) -> bool:
        """Add what is already fetched to `records`, up to `max_records`, a chunk at a time.

        aiokafka unpacks fetched records synchronously inside `getmany`: a 20,000-record batch in one call
        holds the event loop for 100-200 ms, during which the previous batch's write cannot send its next
        statement and PostgreSQL idles. Taking chunks with a yield between them keeps that write moving.
        False if a rebalance happened meanwhile (nothing of `records` may be written then).
        """
        total = sum(len(msgs) for msgs in records.values())
        while total < max_records:
            await asyncio.sleep(0)
            try:
                more = await consumer.getmany(
                    timeout_ms=0, max_records=min(max_records - total, FETCH_CHUNK_RECORDS)
                )
            except (OffsetOutOfRangeError, NoOffsetForPartitionError):
                break  # raised again by the loop's next fetch, and judged there
            if self._rebalancing or generation != self._generation:
                return False
            if not more:
                break
            for tp, msgs in more.items():
                records.setdefault(tp, []).extend(msgs)
                total += len(msgs)
        return True

    async def readiness(self) -> dict[str, Any]:
        """Can this worker ingest right now? (pipeline/ingest/readiness.py; served at /readyz)"""
        consumer = self._consumer
        watch = self._watch.state if self._watch is not None else None
        return await self._readiness.check(
            self._pool,
            self._producer,
            paused=self._paused,
            partitions=sorted(tp.partition for tp in consumer.assignment()) if consumer else [],
            problem=watch.problem if watch else None,
            idle=watch.idle if watch else None,
            notices=self.readiness_notices(self._clock()),
        )

    def _listener_failed(self, error: BaseException) -> None:
        """aiokafka logs and swallows errors raised in rebalance callbacks; the loop re-raises them."""
        self._listener_error = error

    @property
    def relay_tasks(self) -> list[asyncio.Task[None]]:
        """The relays' tasks (dead letters, deletions; none before `start()`): a failure of one must end the
        worker too."""
        return [t for t in (self._mirror_task, self.deletion_log.task) if t is not None]

    @property
    def write_in_flight(self) -> bool:
        """A batch is being written or its outcome not yet counted (counters lag the offsets until then)."""
        return self._in_flight is not None

    # --- writing ---------------------------------------------------------------------------------------
    def _launch(self, batch: WriteBatch, stats: BatchStats, now: datetime, generation: int) -> None:
        self._in_flight = InFlight(batch, stats, now, generation, self._write(batch, now))

    def _write(self, batch: WriteBatch, now: datetime) -> asyncio.Task[WriteOutcome]:
        return asyncio.create_task(self._writer.write(batch, now))

    async def _finish_pending(self) -> None:
        """Wait for the write in flight; on an outage retry it, with back-off, until it lands."""
        job = self._in_flight
        if job is None:
            return
        backoff = self._backoff()
        while True:
            try:
                outcome = await job.task
                break
            except OffsetsMovedError as e:
                self._in_flight = None
                await self._offsets_moved(e, job.generation)
                return
            except StorageUnavailableError as e:
                self.metrics.storage_unavailable.inc()
                if job.generation != self._generation:
                    self._in_flight = None
                    return  # revoked meanwhile: the records will be read again from the stored offsets
                _outage.down(e.__cause__ or e, "ingest paused, retrying with back-off")
                self._set_paused(True)
                await self._idle_poll(backoff.next_delay())
                if self._stopping.is_set() and backoff.exhausted:
                    log.warning("stopping with a batch unwritten; it will be read again on restart")
                    self._in_flight = None
                    return
                job.task = self._write(job.batch, job.received_at)
        self._in_flight = None
        if self._paused:
            _outage.up("ingest resumed")
            self._set_paused(False)
        await self._after_write(job.batch, job.stats, outcome)

    def _backoff(self) -> Backoff:
        return Backoff(self.settings.db_retry_initial_seconds, self.settings.db_retry_max_seconds)

    async def _after_write(self, batch: WriteBatch, stats: BatchStats, outcome: WriteOutcome) -> None:
        m = self.metrics
        if outcome.fenced < len(batch.rows) + len(batch.dead_letters) or not outcome.fenced:
            self._count_batch(batch, stats)
        m.write_seconds.observe(outcome.write_seconds)
        m.last_write.set(time.time())
        self.totals["stored"] += outcome.stored
        if outcome.duplicates:
            m.duplicates.inc(outcome.duplicates)
            self.totals["duplicates"] += outcome.duplicates
        if outcome.fenced:
            m.fenced.inc(outcome.fenced)
        if outcome.partitions_created:
            m.partitions_created.inc(outcome.partitions_created)
        if outcome.rejected:
            m.dead_lettered.labels(Reason.STORAGE_REJECTED.value).inc(len(outcome.rejected))
        if outcome.conflicts:
            m.dead_lettered.labels(Reason.CONFLICTING_DUPLICATE.value).inc(len(outcome.conflicts))
            self.rooms.forget(outcome.conflicting_rooms)  # a conflicting copy moved the cache, not PostgreSQL
        for reason, n in outcome.suppressed.items():
            m.suppressed.labels(reason).inc(n)
            self.totals["suppressed"] += n
        for cls, n in outcome.expired.items():
            m.expired.labels(cls).inc(n)
            self.totals["expired"] += n
        self.totals["dead_lettered"] += outcome.dead_lettered
        if outcome.outboxed and self.mirror is not None:
            self.mirror.wake()
        await self._commit_kafka(batch)

    async def _commit_kafka(self, batch: WriteBatch) -> None:
        consumer = self._consumer
        if consumer is None:
            return
        assigned = consumer.assignment()
        offsets = {}
        for p, nxt in batch.next_offsets.items():
            tp = TopicPartition(batch.topic, p)
            if tp in assigned:
                offsets[tp] = OffsetAndMetadata(nxt, "")
                self._written[p] = nxt
        if not offsets:
            return
        started = time.perf_counter()
        try:
            await consumer.commit(offsets)
        except KafkaError as e:  # informational only: PostgreSQL holds the offsets of record
            log.info("Kafka offset commit skipped (%s); PostgreSQL offsets stand", type(e).__name__)
        self.metrics.commit_seconds.observe(time.perf_counter() - started)

    def _update_lag(self, consumer: AIOKafkaConsumer) -> None:
        """Lag = end of partition - next offset durably written (not merely fetched)."""
        for tp in consumer.assignment():
            high = consumer.highwater(tp)
            written = self._written.get(tp.partition)
            if high is not None and written is not None:
                self.metrics.lag.labels(str(tp.partition)).set(max(0, high - written))

    def _count_batch(self, batch: WriteBatch, stats: BatchStats) -> None:
        """Count what a written batch decided (skipped when the whole batch had been written before)."""
        m = self.metrics
        m.batch_events.observe(sum(nxt - batch.first_offsets[p] for p, nxt in batch.next_offsets.items()))
        for etype, n in stats.stored_by_type.items():
            m.stored.labels(etype).inc(n)
        for reason, n in stats.dead_lettered_by_reason.items():
            m.dead_lettered.labels(reason).inc(n)
        for cls, n in stats.expired_by_class.items():
            m.expired.labels(cls).inc(n)
            self.totals["expired"] += n
        for reason, n in stats.suppressed_by_reason.items():
            m.suppressed.labels(reason).inc(n)
            self.totals["suppressed"] += n
        dropped = self.normalizer.dropped_fields
        if dropped:
            for etype, n in dropped.items():
                m.fields_dropped.labels(etype).inc(n)
            dropped.clear()
        masked = self.normalizer.masked
        if masked:
            for kind, n in masked.items():
                m.text_masked.labels(kind).inc(n)
            masked.clear()

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
        could be affected (pipeline.storage.deletions).
        """
        self._retention_days = await retention_days(conn)
        self._dropped_through = await dropped_through(conn)
        self._retention_loaded_at = time.monotonic()

    def _horizons(self, today: date) -> dict[str, date]:
        return writable_from(today, self._retention_days, self._dropped_through)

    async def _with_storage(self, fn: Callable[..., Any], *args: Any) -> bool:
        """Run a read against PostgreSQL, waiting out an outage. False if a rebalance made it moot."""
        generation = self._generation
        backoff = self._backoff()
        while True:
            try:
                await fn(*args)
            except _OUTAGE as e:
                _outage.down(e, "ingest paused, retrying with back-off")
                self.metrics.storage_unavailable.inc()
                self._set_paused(True)
                if self._stopping.is_set() or generation != self._generation:
                    return False
                await self._idle_poll(backoff.next_delay())
                continue
            if self._paused:
                _outage.up("ingest resumed")
                self._set_paused(False)
            return True

    def _set_paused(self, paused: bool) -> None:
        consumer = self._consumer
        self._paused = paused
        self.metrics.paused.set(1 if paused else 0)
        if consumer is not None and not paused:
            consumer.resume(*consumer.assignment())

    async def _idle_poll(self, seconds: float) -> None:
        """Wait while staying a live group member: poll with every partition paused."""
        consumer = self._consumer
        if consumer is None:
            await asyncio.sleep(seconds)
            return
        consumer.pause(*consumer.assignment())
        try:
            got = await consumer.getmany(timeout_ms=int(seconds * 1000))
        except (OffsetOutOfRangeError, NoOffsetForPartitionError):
            return  # judged by the loop's next fetch
        for tp, msgs in got.items():  # partitions assigned during the wait were not paused: un-read them
            consumer.seek(tp, msgs[0].offset)

    # --- rebalance -------------------------------------------------------------------------------------
    async def _on_revoked(self, revoked: set[TopicPartition]) -> None:
        self._generation += 1
        self._rebalancing = True
        for tp in revoked:  # a partition we no longer own must not keep reporting our stale lag
            with contextlib.suppress(KeyError):
                self.metrics.lag.remove(str(tp.partition))
            for key in [k for k, n in self.notices.items() if k[0] == tp.partition and n.until_offset]:
                del self.notices[key]  # a re-read is its next owner's to report; a loss stays named
            self._positions.pop(tp.partition, None)
        await self._settle_pending()

    async def _settle_pending(self) -> None:
        """Let the write in flight land (or fail) before partitions change hands or offsets are read."""
        if self._in_flight is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(
                    asyncio.shield(self._in_flight.task), self.settings.shutdown_drain_seconds
                )

    async def _on_assigned(self, assigned: set[TopicPartition]) -> None:
        self._generation += 1
        self.rooms.clear()
        # A write launched after the revoke would otherwise commit after we read the offsets below, and the
        # seek would send us back over records it wrote (the fence keeps them single, but they come twice).
        await self._settle_pending()
        self.metrics.partitions_held.set(len(assigned))
        self._positions = {}
        if self._consumer is None or not assigned:
            self._rebalancing = False
            return
        await self._resume(assigned)
        self._rebalancing = False

    async def _resume(self, tps: set[TopicPartition]) -> bool:
        """Judge `tps` against the broker's log (pipeline.ingest.positions) and seek each where it resumes.

        Waits out PostgreSQL or Kafka being unreachable (and a topic the broker does not show yet), with
        back-off. False when stopping first (nothing was sought; the next assignment judges again).
        """
        consumer, probe = self._consumer, self._probe
        assert consumer is not None and probe is not None, "start() first"
        s = self.settings
        backoff = self._backoff()
        while True:
            try:
                committed = await self._committed(consumer, tps)
                async with db.acquire(self._pool) as conn:
                    verdicts = await resume_positions(
                        conn,
                        probe,
                        consumer_group=s.consumer_group,
                        topic=s.events_topic,
                        partitions=(tp.partition for tp in tps),
                        committed=committed,
                        changed_by=self.changed_by,
                    )
                _outage.up("assigned partitions resume from their stored offsets")
                break
            except _OUTAGE as e:
                _outage.down(e, "assigned partitions wait for their stored offsets")
                self.metrics.storage_unavailable.inc()
            except (KafkaError, MissingPartitionsError, OSError) as e:
                log.warning("assigned partitions wait for the broker's view of %s: %s", s.events_topic, e)
            if self._stopping.is_set():
                return False
            await asyncio.sleep(backoff.next_delay())
        held = consumer.assignment()
        now = self._clock()
        for v in verdicts:
            self._note(v, now)  # recorded by this worker, held or not
            tp = TopicPartition(s.events_topic, v.partition)
            if tp not in held:
                continue  # revoked while we judged: its next owner judges it
            consumer.seek(tp, v.resume_at)
            self._topic_id = v.topic_id
            self._positions[v.partition] = v.resume_at
            self._written[v.partition] = v.resume_at
        log.info(
            "assigned %s; resuming at %s",
            sorted(v.partition for v in verdicts),
            {v.partition: v.resume_at for v in verdicts},
        )
        return True

    async def _committed(self, consumer: AIOKafkaConsumer, tps: set[TopicPartition]) -> dict[int, int | None]:
        """The group's offsets committed to Kafka (informational: a database behind them is noticed)."""
        out: dict[int, int | None] = {}
        for tp in tps:
            try:
                out[tp.partition] = await consumer.committed(tp)
            except KafkaError:
                out[tp.partition] = None
        return out

    def _note(self, v: Verdict, now: datetime) -> None:
        """Count a judgement this worker recorded (pipeline.ingest.positions: one row, one count) and keep
        what /readyz should name while it lasts: a re-read until done, a loss for LOSS_NOTICE_SECONDS."""
        if v.finding in (Finding.RESUME, Finding.FIRST_READ):
            if v.finding is Finding.FIRST_READ:
                self.metrics.offset_changes.labels(v.finding.value).inc()
            return
        self.metrics.offset_changes.labels(v.finding.value).inc()
        if v.finding is Finding.DELETED_UNREAD:
            self.metrics.deleted_unread.inc(v.skipped)
        until = v.resume_at + v.reread if v.reread else None
        self.notices[(v.partition, v.finding.value)] = Notice(v, now, until)

    def readiness_notices(self, now: datetime) -> list[dict[str, Any]]:
        """What the last judgements found that still holds: re-reads not yet done, losses found lately."""
        for key, n in list(self.notices.items()):
            p = n.verdict.partition
            done = n.until_offset is not None and (
                p not in self._positions or self._written.get(p, -1) >= n.until_offset
            )
            stale = n.until_offset is None and (now - n.since).total_seconds() > LOSS_NOTICE_SECONDS
            if done or stale:
                del self.notices[key]
        return [n.to_json() for _, n in sorted(self.notices.items())]

    async def _out_of_range(self, error: OffsetOutOfRangeError | NoOffsetForPartitionError) -> None:
        """The broker has no record at a partition's position (the log was truncated, recreated or emptied
        under us): judge those partitions again instead of resetting silently. (A partition with no position
        yet, met while its assignment is being judged, waits for that judgement.)"""
        consumer = self._consumer
        assert consumer is not None
        if self._rebalancing or isinstance(error, NoOffsetForPartitionError):
            await asyncio.sleep(0.05)  # the assignment callback seeks it (or a later fetch raises again)
            if self._rebalancing:
                return
        found = error.args[0] if error.args and isinstance(error.args[0], dict) else {}
        tps = {tp for tp in found if tp in consumer.assignment()} or set(consumer.assignment())
        log.warning("offsets out of range at %s; judging those partitions again", found or "some partitions")
        self._generation += 1  # what was fetched or is being built from the old positions is not written
        await self._settle_pending()
        self._in_flight = None
        await self._resume(tps)

    async def _request_rejudge(self) -> None:
        self._rejudge = True

    async def _rejudge_held(self) -> None:
        """The topic became another incarnation under the held partitions: judge them all again."""
        consumer = self._consumer
        assert consumer is not None
        self._rejudge = False
        self._generation += 1  # what was fetched from the old log is not written
        await self._finish_pending()
        await self._resume(set(consumer.assignment()))

    async def _offsets_moved(self, error: OffsetsMovedError, generation: int) -> None:
        """The offsets of record moved back under a batch (a restored database, an operator's move): judge
        those partitions again and read on from where PostgreSQL says."""
        consumer = self._consumer
        assert consumer is not None
        log.warning("%s; judging those partitions again", error)
        if generation != self._generation:
            return  # a rebalance meanwhile: the new assignment was judged already
        self._generation += 1  # the batch being built continued from the old positions: not written
        topic = self.settings.events_topic
        await self._resume({TopicPartition(topic, p) for p in error.stored} & consumer.assignment())
