"""Deletion requests kept outside the database: relayed to the deletions topic, re-applied from it at start.

Why: authorized deletions (pipeline/storage/deletions.py) live in PostgreSQL. A database restored from a
backup taken before a deletion has the deleted logs again, and its `deletion_requests` no longer tell ingest
to skip them when it reads the events topic again. So every request is also kept on a topic of its own
(ROOMLOGS_DELETIONS_TOPIC: one partition, kept forever, compacted by request id), sealed by the database
(migration 0013), and a starting worker re-applies those its database lacks before it ingests anything.

Who calls it: `IngestService` (pipeline/ingest/service.py) builds a `DeletionLog`, awaits its `start()`
after its producer exists and before its consumer subscribes, its `catch_up()` when it finds its database
restored under it (a request it had loaded gone, pipeline.storage.deletions; or its offsets of record moved
back), before it writes on, and its `close()` on the way out.

- Re-applying (`reapply`): reads the topic from its start to its end (no consumer group, nothing
  committed) and hands each record to `reapply_deletion_request()`, which verifies the seal: the worker's
  role re-applies genuine requests only. A record whose seal does not verify is logged and counted
  (`roomlogs_deletion_records_refused_total`), never applied. Not reaching the topic's end raises
  DeletionLogUnreadError: a worker must not ingest before deletions are re-applied.
- The relay (`DeletionRelay`): every `idle_seconds` it takes the queued rows of `deletion_outbox` (one relay
  at a time per schema, under an advisory lock), sends them (acks=all), awaits each acknowledgement and
  deletes the acknowledged rows in the same transaction. At least once: a crash between the acknowledgement
  and the commit sends a request again, under the same key (compaction keeps one). An outage keeps the rows
  queued and is retried with capped back-off, logged once when it starts and once when it ends.

A topic that lost its records (a broker started empty under a kept database, the topic recreated, another
cluster): the requests the database has and the topic lacks are queued again at start (`requeue_missing`,
migration 0021), so the next restore still finds them.

What this does not cover: a request recorded in the last moments before the database was lost, before the
relay sent it (a poll interval, plus any broker outage then); and a database created anew instead of
restored, whose key is new: records sealed by the old key are refused (`other_key`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import asyncpg
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.structs import ConsumerRecord
from prometheus_client import Counter as MetricCounter
from prometheus_client import Gauge

from pipeline.errors import RoomlogsError, StorageUnavailableError
from pipeline.ingest.relay import OutboxRelay
from pipeline.kafka_client import KafkaConnection, kafka_errors
from pipeline.kafka_logs import LogProbe
from pipeline.metrics import IngestMetrics
from pipeline.settings import Settings
from pipeline.storage import db, deletion_outbox
from pipeline.storage.deletion_outbox import Outcome
from pipeline.storage.deletions import Deletions

__all__ = ["SEAL_HEADER", "DeletionLog", "DeletionLogUnreadError", "DeletionRelay", "Reapplied", "reapply"]

log = logging.getLogger("roomlogs.ingest.deletions")

#: Header carrying a record's seal ("<key id>:<hex of HMAC-SHA256>"); the value is the sealed message.
SEAL_HEADER = "roomlogs.seal"
#: Re-applying gives up when the topic yields nothing new for this long.
READ_STALL_SECONDS = 60.0
#: Offsets of refused records named in the log line.
_OFFSETS_LOGGED = 5


class DeletionLogUnreadError(RoomlogsError):
    """The deletions topic could not be read to its end: deletions the database lacks may not be re-applied,
    so the worker must not start ingesting."""

    retriable = True


@dataclass
class Reapplied:
    """What a read of the deletions topic found."""

    read: int = 0
    reapplied: int = 0
    #: rows the re-applied requests deleted
    rows_deleted: int = 0
    #: by Outcome value (bad_seal, other_key): "partition/offset" of each record refused
    refused: dict[str, list[str]] = field(default_factory=dict)
    outcomes: Counter[str] = field(default_factory=Counter)
    #: the request ids the topic holds: of each record whose seal verified, the id its sealed message names
    on_topic: set[uuid.UUID] = field(default_factory=set)
    #: this database's requests the topic lacked, queued again for it (`DeletionLog.start`)
    requeued: int = 0


async def reapply(
    settings: Settings,
    pool: asyncpg.Pool,
    metrics: IngestMetrics,
    *,
    stall_seconds: float = READ_STALL_SECONDS,
) -> Reapplied:
    """Re-apply every request of the deletions topic that the database does not have.

    Raises DeletionLogUnreadError when the topic stops yielding records before its end, Kafka's errors
    (KafkaAccessError, KafkaUnavailableError) when the broker refuses or is away, StorageUnavailableError
    when PostgreSQL is. A topic that does not exist is logged and skipped (`roomlogs worker` creates it).
    """
    topic = settings.deletions_topic
    async with LogProbe(settings) as probe:  # metadata only: asks nothing that would create the topic
        _, partitions = await probe.partitions(topic)
    found = Reapplied()
    if not partitions:
        log.warning(
            "deletions topic %s does not exist: no deletion requests to re-apply, and new ones stay queued "
            "in deletion_outbox until it does (`roomlogs worker` creates it; see deploy/README.md)",
            topic,
        )
        return found
    await _read(settings, pool, [TopicPartition(topic, p) for p in partitions], found, stall_seconds)
    _report(topic, found, metrics)
    return found


async def _read(
    settings: Settings,
    pool: asyncpg.Pool,
    tps: list[TopicPartition],
    found: Reapplied,
    stall_seconds: float,
) -> None:
    """Apply every record of `tps` up to the end each partition had when first fetched.

    That end is the larger of ListOffsets(latest) and the high watermark a fetch reports (Tansu answers the
    former with the base offset of the last record batch: see pipeline/kafka_logs.py). The consumer is
    stopped with its partitions still assigned: unassigned under a fetch in flight, stopping it waits for
    that fetch, which Tansu holds for minutes on a partition with nothing new.
    """
    consumer = AIOKafkaConsumer(
        **KafkaConnection.of(settings).kwargs(),
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    try:
        async with kafka_errors(settings):
            await consumer.start()
            listed = await consumer.end_offsets(tps)
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends: dict[TopicPartition, int] = {}
        remaining = set(tps)
        stalled_at = time.monotonic() + stall_seconds
        async with db.acquire(pool) as conn:
            while remaining:
                batches = await consumer.getmany(*remaining, timeout_ms=500)
                for records in batches.values():
                    for record in records:
                        await _apply(conn, record, found)
                    stalled_at = time.monotonic() + stall_seconds
                for tp in list(remaining):
                    highwater = consumer.highwater(tp)
                    if tp not in ends and highwater is not None:
                        ends[tp] = max(listed[tp], highwater)
                    if tp in ends and await consumer.position(tp) >= ends[tp]:
                        remaining.discard(tp)
                if remaining and time.monotonic() > stalled_at:
                    where = ", ".join(
                        [
                            f"{tp.partition}@{await consumer.position(tp)}/{ends.get(tp, '?')}"
                            for tp in remaining
                        ]
                    )
                    raise DeletionLogUnreadError(
                        f"deletions topic {settings.deletions_topic}: nothing read for {stall_seconds:.0f} s "
                        f"before its end (partition@position/end: {where}); deletions this database lacks "
                        "are not re-applied, so ingest does not start"
                    )
    finally:
        await consumer.stop()


async def _apply(conn: asyncpg.Connection, record: ConsumerRecord, found: Reapplied) -> None:
    if record.value is None:
        return  # a tombstone: roomlogs writes none, compaction would remove the request's record
    found.read += 1
    seal = next((bytes(v).decode("ascii", "replace") for k, v in record.headers if k == SEAL_HEADER), "")
    try:
        message = record.value.decode("utf-8")
    except UnicodeDecodeError:
        outcome, rows = Outcome.BAD_SEAL, 0
    else:
        outcome, rows = await deletion_outbox.reapply(conn, message, seal)
    if outcome in (Outcome.REAPPLIED, Outcome.PRESENT):
        # On the topic is what verified, by the id its sealed message names (not the record's key, nor a
        # record that fails the seal: either would hide the loss of the real request's record)
        with contextlib.suppress(ValueError, TypeError, AttributeError):
            found.on_topic.add(uuid.UUID(str(orjson.loads(message).get("request_id"))))
    found.outcomes[outcome.value] += 1
    if outcome is Outcome.REAPPLIED:
        found.reapplied += 1
        found.rows_deleted += rows
    elif outcome in (Outcome.BAD_SEAL, Outcome.OTHER_KEY):
        found.refused.setdefault(outcome.value, []).append(f"{record.partition}/{record.offset}")


def _report(topic: str, found: Reapplied, metrics: IngestMetrics) -> None:
    if found.reapplied:
        metrics.deletions_reapplied.inc(found.reapplied)
        log.warning(
            "re-applied %d deletion requests the database did not have (restored from a backup?): %d rows "
            "deleted now (deletions topic %s)",
            found.reapplied,
            found.rows_deleted,
            topic,
        )
    why = {
        Outcome.BAD_SEAL.value: "their seal does not verify (forged or altered)",
        Outcome.OTHER_KEY.value: "sealed by another database's key, or not sealed (a schema created anew, or "
        "another deployment writing to this topic)",
    }
    for reason, where in sorted(found.refused.items()):
        metrics.deletion_records_refused.labels(reason).inc(len(where))
        shown = ", ".join(where[:_OFFSETS_LOGGED]) + (" ..." if len(where) > _OFFSETS_LOGGED else "")
        log.warning(
            "deletions topic %s: %d record(s) not applied, %s (partition/offset: %s)",
            topic,
            len(where),
            why[reason],
            shown,
        )
    log.debug("deletions topic %s: %d requests read (%s)", topic, found.read, dict(found.outcomes))


class DeletionRelay(OutboxRelay):
    """Sends `deletion_outbox` to the deletions topic until it is empty, every `idle_seconds`. One relay at a
    time (an advisory lock: the worker's role may not lock the outbox's rows)."""

    what = "deletion requests"

    idle_seconds = 2.0

    def counters(self, metrics: IngestMetrics) -> tuple[MetricCounter, MetricCounter, Gauge]:
        return metrics.deletions_relayed, metrics.deletion_relay_errors, metrics.deletion_outbox_pending

    async def claim(self, conn: asyncpg.Connection, limit: int) -> list[deletion_outbox.SealedRequest] | None:
        return await deletion_outbox.claim(conn, limit)

    async def done(self, conn: asyncpg.Connection, ids: list[int]) -> None:
        await deletion_outbox.done(conn, ids)

    async def queued(self, conn: asyncpg.Connection) -> int:
        return await deletion_outbox.pending(conn)

    #: told of each request the topic acknowledged, and asked every round whether the database lost any
    #: (set by DeletionLog, with `catch_up`: what re-applies them)
    deletions: Deletions | None = None
    catch_up: Callable[[], Awaitable[object]] | None = None

    async def drain(self) -> int:
        sent = await super().drain()
        await self._restored()
        return sent

    async def _restored(self) -> None:
        """A database restored under an idle worker (no batch to find it): re-apply what it lost now."""
        if self.deletions is None or self.catch_up is None:
            return
        async with db.acquire(self._pool) as conn:
            lost = await self.deletions.lost(conn)
        if not lost:
            return
        log.warning(
            "the database no longer has deletion requests this worker loaded or relayed (restored from a "
            "backup under it?): re-applying the deletions topic's requests now"
        )
        try:
            await self.catch_up()
        except RoomlogsError as e:  # Kafka away or refusing, the topic unread to its end: next round
            if isinstance(e, StorageUnavailableError):
                raise  # the relay's own outage handling
            log.warning("re-applying deletion requests failed (%s); trying again next round", e)

    async def send(self, claimed: Sequence[deletion_outbox.SealedRequest]) -> list[int]:
        sent: list[tuple[int, asyncio.Future[object]]] = []
        for r in claimed:
            try:
                future: asyncio.Future[object] = await self._producer.send(
                    self.topic,
                    key=str(r.request_id).encode(),
                    value=r.message.encode("utf-8"),
                    headers=[(SEAL_HEADER, r.seal.encode("ascii"))],
                )
            except KafkaError as e:
                log.debug("deletion request %s not sent: %r", r.request_id, e)
                break
            sent.append((r.outbox_id, future))
        acked: list[int] = []
        for outbox_id, future in sent:
            with contextlib.suppress(KafkaError):
                await future
                acked.append(outbox_id)
        if self.deletions is not None and acked:
            ids = set(acked)
            self.deletions.saw_relayed([r.request_id for r in claimed if r.outbox_id in ids])
        return acked


class DeletionLog:
    """The ingest service's side of the deletions topic.

    `start(producer)`: re-apply what the database lacks (refreshing the service's `Deletions`, so its
    first batch already honours them), then keep relaying new requests; `close()`: stop the relay.
    """

    def __init__(
        self, settings: Settings, pool: asyncpg.Pool, metrics: IngestMetrics, deletions: Deletions
    ) -> None:
        self._settings = settings
        self._pool = pool
        self._metrics = metrics
        self._deletions = deletions
        self.relay: DeletionRelay | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self, producer: AIOKafkaProducer) -> Reapplied:
        s = self._settings
        found = await reapply(s, self._pool, self._metrics)
        async with db.acquire(self._pool) as conn:
            if found.reapplied:
                await self._deletions.load(conn)
            found.requeued = await deletion_outbox.requeue_missing(conn, found.on_topic)
        if found.requeued:
            log.warning(
                "deletions topic %s lacks %d of this database's deletion requests (a broker started empty, "
                "the topic deleted and recreated, another cluster): queued again for it, so that a restore "
                "from a backup still re-applies them",
                s.deletions_topic,
                found.requeued,
            )
        self.relay = DeletionRelay(
            self._pool,
            producer,
            s.deletions_topic,
            self._metrics,
            retry_initial_seconds=s.db_retry_initial_seconds,
            retry_max_seconds=max(s.db_retry_max_seconds, 5.0),
        )
        self.relay.deletions, self.relay.catch_up = self._deletions, self.catch_up
        self._task = asyncio.create_task(self.relay.run())
        self._task.add_done_callback(_relay_ended)
        return found

    async def catch_up(self) -> Reapplied:
        """Re-apply what the topic has and the database lacks, under a running worker: its database was
        found restored (a deletion request it had loaded is gone, or its offsets of record moved back).
        The service's `Deletions` are read again, so the next batch honours them. Raises as `reapply`."""
        found = await reapply(self._settings, self._pool, self._metrics)
        async with db.acquire(self._pool) as conn:
            await self._deletions.load(conn)
            relayed = list(self._deletions.relayed)
            there = await conn.fetch(
                "SELECT request_id FROM deletion_requests WHERE request_id = ANY($1::uuid[])", relayed
            )
        missing = set(relayed) - {r["request_id"] for r in there}
        if missing:
            # not on the topic, or refused there (sealed by another key: a database created anew, not
            # restored): nothing more can bring them back; checking for them again would stop ingest
            log.error(
                "%d deletion request(s) this worker relayed are not in the database and could not be "
                "re-applied from the deletions topic %s (a database created anew instead of restored?): %s",
                len(missing),
                self._settings.deletions_topic,
                ", ".join(sorted(str(m) for m in missing)[:5]),
            )
            self._deletions.forget_relayed(missing)
        return found

    @property
    def task(self) -> asyncio.Task[None] | None:
        """The relay's task (None before `start()`): its failure must end the worker (pipeline.worker)."""
        return self._task

    async def close(self) -> None:
        """Stop the relay (within 5 s); what it had not sent stays queued for the next worker."""
        if self.relay is None or self._task is None:
            return
        self.relay.stop()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._task, 5.0)
        self._task = None


def _relay_ended(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error(
            "the deletions relay stopped: %r; deletion requests stay queued in deletion_outbox",
            task.exception(),
            exc_info=task.exception(),
        )
