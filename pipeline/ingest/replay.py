"""Replaying dead letters once their producer or the contract is fixed: exactly once, audited.

Who calls it: `roomlogs dead-letters replay` (an operator, naming who they are with `--by`).

Dead letters keep no raw bytes (schemas/README.md), so a replay reads the original record back from Kafka
by its source coordinates; a record the topic no longer holds (its retention passed) cannot be replayed and
is recorded as `not_in_kafka`. What it reads back must be the record that was set aside: its SHA-256 and
size must be the letter's (`raw_sha256`, `raw_bytes`). Another record at those coordinates (the topic was
deleted and recreated, or moved) is `source_changed` and stores nothing; a letter that kept no SHA-256 (a
private message keeps only its size) cannot be checked and is `no_fingerprint`, not replayed. The record is
normalized with the current contract, classified and filtered as ingest does (pipeline.ingest.prepare:
expired, deleted) and written by the ingest writer (pipeline.storage.writer.BatchWriter: event-id
registry, room state by event version, authorized deletions, partitions), so a replayed event is stored at
most once, whether it is replayed twice or also re-consumed by a worker.

It reads from any Kafka-protocol broker (tested on Tansu and Apache Kafka): one consumer, no group,
assigned the partitions it reads, after asking the brokers which partitions exist.

Per dead letter, one transaction: it takes a lock on the source record (two replays of it wait for each
other), returns early when an earlier replay already put its event in the logs, writes the event (the
writer's own transaction becomes a savepoint of this one, and is undone unless the event was stored or
already was: a conflict or a refusal leaves no new dead letter behind) and appends the replay's row
(pipeline.storage.replays) before committing. So the row says what happened, or nothing happened. The
writer is given no offsets: a replay neither fences on nor moves the offsets of record of any consumer
group. Kafka unreachable is a RoomlogsError before anything is written; PostgreSQL unreachable mid-way
leaves the letters done so far recorded and the rest untouched (run the command again).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import cast

import asyncpg
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import OffsetOutOfRangeError
from aiokafka.structs import ConsumerRecord

from pipeline.detectors import Detectors
from pipeline.events.deadletter import fingerprint
from pipeline.events.normalize import Normalizer
from pipeline.ingest.prepare import build_batch, normalize_records
from pipeline.ingest.rooms import RoomDirectory
from pipeline.kafka_client import KafkaConnection, kafka_errors
from pipeline.settings import Settings
from pipeline.storage import replays
from pipeline.storage.batch import ROW_CLASS, WriteOutcome
from pipeline.storage.dead_letters import Source, StoredDeadLetter
from pipeline.storage.deletions import Deletions
from pipeline.storage.partitions import PartitionManager, writable_since
from pipeline.storage.replays import Outcome
from pipeline.storage.writer import BatchWriter

__all__ = ["LetterReplay", "fetch_originals", "replay"]

#: How long to wait for the broker to hand over one record at a known offset.
_FETCH_SECONDS = 10.0
#: How long to keep asking for the partitions of a topic the brokers do not describe (yet).
_METADATA_SECONDS = 3.0


@dataclass(frozen=True, slots=True)
class LetterReplay:
    letter: StoredDeadLetter
    outcome: Outcome
    event_id: str | None
    detail: str


@dataclass(frozen=True, slots=True)
class Missing:
    """Kafka does not hold the record (any more): why."""

    why: str


#: what a letter that is not checked (no fingerprint) gets in place of its record
_NOT_READ = Missing("not read back from Kafka")


async def replay(
    settings: Settings,
    conn: asyncpg.Connection,
    letters: Sequence[StoredDeadLetter],
    *,
    replayed_by: str,
    now: datetime,
) -> list[LetterReplay]:
    """Replay `letters` in order, each in its own transaction on `conn`; return what came of each."""
    if not replayed_by.strip():
        raise ValueError("a replay needs the name of who runs it")
    # a letter without a fingerprint is not replayed (nothing could show its record is the one set aside)
    originals = await fetch_originals(settings, [d.source for d in letters if d.raw_sha256 is not None])
    run_id = uuid.uuid4()
    normalizer = Normalizer(
        max_event_bytes=settings.max_event_bytes,
        chat_text_max_chars=settings.chat_text_max_chars,
        reason_max_chars=settings.reason_max_chars,
        max_future_skew_seconds=settings.max_future_skew_seconds,
    )
    partitions = PartitionManager()
    await partitions.load(conn)
    out = []
    for letter in letters:
        async with conn.transaction():
            await replays.lock_source(conn, letter.source)
            original = originals.get(letter.source, _NOT_READ)
            result = await _one(settings, conn, letter, original, normalizer, partitions, now)
            await replays.record(
                conn,
                run_id=run_id,
                replayed_by=replayed_by.strip(),
                letter=letter,
                outcome=result.outcome,
                event_id=result.event_id,
                detail=result.detail,
            )
        out.append(result)
    return out


async def _one(
    settings: Settings,
    conn: asyncpg.Connection,
    letter: StoredDeadLetter,
    original: ConsumerRecord | Missing,
    normalizer: Normalizer,
    partitions: PartitionManager,
    now: datetime,
) -> LetterReplay:
    earlier = await replays.succeeded(conn, letter.source)
    if earlier is not None:
        return LetterReplay(
            letter,
            Outcome.ALREADY_REPLAYED,
            earlier.event_id,
            f"replay {earlier.replay_id} by {earlier.replayed_by} at "
            f"{earlier.replayed_at:%Y-%m-%d %H:%M:%S%z}: {earlier.outcome}",
        )
    if letter.raw_sha256 is None:
        return LetterReplay(letter, Outcome.NO_FINGERPRINT, None, _no_fingerprint(letter))
    if isinstance(original, Missing):
        return LetterReplay(letter, Outcome.NOT_IN_KAFKA, None, original.why)
    changed = _another_record(letter, original.value)
    if changed is not None:
        return LetterReplay(letter, Outcome.SOURCE_CHANGED, None, changed)
    pass1 = await normalize_records(letter.src_topic, {letter.src_partition: [original]}, normalizer, now)
    if pass1.dead_letters:
        refused = pass1.dead_letters[0]
        return LetterReplay(letter, Outcome.STILL_INVALID, None, f"{refused.reason}: {refused.detail}")
    _, _, normalized = pass1.events[0]
    event_id = normalized[0]  # normalized[EVENT_ID], spelled so mypy knows the type
    rooms = RoomDirectory(
        default_class=settings.default_retention_class, busy_min_occupancy=settings.busy_room_min_occupancy
    )
    await rooms.load(conn, pass1.rooms)
    deletions = Deletions()
    await deletions.load(conn)
    batch, stats = build_batch(
        pass1,
        consumer_group=settings.consumer_group,
        rooms=rooms,
        horizons=await writable_since(conn, now.date()),
        now=now,
        deletions=deletions,
    )
    if stats.expired_by_class:
        cls = next(iter(stats.expired_by_class))
        return LetterReplay(letter, Outcome.EXPIRED, event_id, f"older than what {cls} keeps")
    if stats.suppressed_by_reason:
        return LetterReplay(letter, Outcome.DELETED, event_id, next(iter(stats.suppressed_by_reason)))
    # no offsets: the writer neither fences on nor moves any consumer group's offsets of record
    batch.first_offsets.clear()
    batch.next_offsets.clear()
    writer = BatchWriter(
        _single(conn),
        partitions,
        deletions=deletions,
        classify=rooms.classify,
        late_window_seconds=settings.seal_late_window_seconds,
        # a replayed event may complete a window: its alerts are raised in its transaction, as ingest's
        detectors=Detectors(settings_ttl_seconds=0.0) if settings.detectors_enabled else None,
    )
    try:
        async with conn.transaction():  # a savepoint, undone unless the event is in the logs
            written = _in_the_logs(await writer.write(batch, now))
    except _Undo as u:
        return LetterReplay(letter, u.outcome, event_id, u.detail)
    if written.stored:
        stored_class = batch.rows[0][ROW_CLASS]
        return LetterReplay(letter, Outcome.STORED, event_id, f"stored as a {stored_class} log row")
    return LetterReplay(letter, Outcome.DUPLICATE, event_id, "already stored with the same content")


def _no_fingerprint(letter: StoredDeadLetter) -> str:
    kept = f"only its size ({letter.raw_bytes} bytes)" if letter.raw_bytes is not None else "nothing"
    return (
        f"not replayed: this dead letter kept {kept} of the record received, no SHA-256, so nothing shows "
        f"that the record now at {letter.source} is the one set aside"
    )


def _another_record(letter: StoredDeadLetter, raw: bytes | None) -> str | None:
    """Why the record read back (its value `raw`) is not the one the letter set aside; None when it is."""
    sha256, size = fingerprint(raw)
    if sha256 == letter.raw_sha256 and (letter.raw_bytes is None or size == letter.raw_bytes):
        return None
    if size is None:
        differ = "it has no value"
    elif size != letter.raw_bytes:
        differ = f"SHA-256 and size differ: {size} bytes, {letter.raw_bytes} set aside"
    else:
        differ = "SHA-256 differs"
    return (
        f"the record now at {letter.source} is not the one set aside ({differ}): the topic was recreated "
        "or moved; nothing stored"
    )


def _in_the_logs(written: WriteOutcome) -> WriteOutcome:
    """`written` when the event is in the logs now; otherwise raise _Undo saying why."""
    if written.conflicts:
        raise _Undo(Outcome.CONFLICTING_DUPLICATE, written.conflicts[0].detail)
    if written.rejected:
        raise _Undo(Outcome.REJECTED, written.rejected[0].detail)
    if written.day_sealed:
        raise _Undo(Outcome.DAY_SEALED, written.day_sealed[0].detail)
    if written.suppressed:
        raise _Undo(Outcome.DELETED, next(iter(written.suppressed)))
    if written.expired:
        raise _Undo(Outcome.EXPIRED, "its day was being dropped by retention")
    if not (written.stored or written.duplicates):
        raise _Undo(Outcome.REJECTED, "nothing was written")
    return written


class _Undo(Exception):
    def __init__(self, outcome: Outcome, detail: str) -> None:
        super().__init__(detail)
        self.outcome = outcome
        self.detail = detail


class _SingleConnection:
    """What BatchWriter uses of a pool, handing out one connection: the one inside the replay's transaction,
    so that the writer's transaction is a savepoint of it."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    @contextlib.asynccontextmanager
    async def acquire(self) -> AsyncIterator[asyncpg.Connection]:
        yield self._conn


def _single(conn: asyncpg.Connection) -> asyncpg.Pool:
    return cast(asyncpg.Pool, _SingleConnection(conn))


async def fetch_originals(
    settings: Settings, sources: Iterable[Source]
) -> dict[Source, ConsumerRecord | Missing]:
    """The records at these coordinates, read from Kafka (no consumer group, nothing committed)."""
    wanted: dict[TopicPartition, set[int]] = {}
    for s in sources:
        wanted.setdefault(TopicPartition(s.topic, s.partition), set()).add(s.offset)
    found: dict[Source, ConsumerRecord | Missing] = {}
    if not wanted:
        return found
    consumer = AIOKafkaConsumer(
        **KafkaConnection.of(settings).kwargs(),
        enable_auto_commit=False,
        group_id=None,
        auto_offset_reset="none",
        # as the worker reads (pipeline.ingest.fetcher): an aborted transaction's record is never replayed
        isolation_level="read_committed",
    )
    try:
        async with kafka_errors(settings):
            await consumer.start()
            # Let the consumer's own background task take its first step: stopped before that, aiokafka's
            # stop() raises CancelledError (aio-libs/aiokafka#647), as it did at the end of every replay on
            # Apache Kafka (no partition found, nothing awaited between start and stop).
            await asyncio.sleep(0)
            partitions = await _partitions(consumer, {tp.topic for tp in wanted})
            known = {tp for tp in wanted if tp.partition in partitions[tp.topic]}
            for tp in set(wanted) - known:
                why = (
                    f"Kafka has no partition {tp.partition} of topic {tp.topic} (any more)"
                    if partitions[tp.topic]
                    else f"Kafka has no topic {tp.topic} (any more), or does not let this client describe it"
                )
                for offset in wanted.pop(tp):
                    found[Source(tp.topic, tp.partition, offset)] = Missing(why)
            if wanted:
                consumer.assign(list(wanted))
                begins = await consumer.beginning_offsets(list(wanted))
                for tp, offsets in wanted.items():
                    found.update(await _read(consumer, tp, sorted(offsets), begins[tp]))
    finally:
        await consumer.stop()
    return found


async def _partitions(consumer: AIOKafkaConsumer, topics: set[str]) -> dict[str, set[int]]:
    """The partition ids of each topic (empty: the brokers describe no such topic to this client).

    A consumer that subscribes to nothing knows no topic after start(): it bootstraps with a metadata request
    for no topics, which Apache Kafka answers with none (Tansu with all of them), so `partitions_for_topic()`
    is empty until the consumer asks again. It asks for all topics rather than by name: a request naming a
    deleted topic would let a broker with auto-creation on create it again. A topic just recreated may be
    missing from some broker's metadata for a moment: asked again until _METADATA_SECONDS.
    """
    client = consumer._client  # aiokafka has no public call that refreshes a consumer's metadata
    deadline = time.monotonic() + _METADATA_SECONDS
    while True:
        await client.force_metadata_update()  # no topics tracked: a request for all of them
        found: dict[str, set[int]] = {t: set(consumer.partitions_for_topic(t) or ()) for t in topics}
        if all(found.values()) or time.monotonic() >= deadline:
            return found
        await asyncio.sleep(0.2)


async def _read(
    consumer: AIOKafkaConsumer, tp: TopicPartition, offsets: list[int], earliest: int
) -> dict[Source, ConsumerRecord | Missing]:
    out: dict[Source, ConsumerRecord | Missing] = {}
    pending = []
    for offset in offsets:
        if offset < earliest:
            out[Source(tp.topic, tp.partition, offset)] = Missing(
                f"Kafka no longer holds it: the earliest record of {tp.topic}/{tp.partition} is at offset "
                f"{earliest} (deleted by the topic's retention, or the topic was recreated or its broker "
                "restarted empty)"
            )
        else:
            pending.append(offset)
    while pending:
        target = pending[0]
        batch = await _fetch_from(consumer, tp, target)
        if batch is None:
            out[Source(tp.topic, tp.partition, target)] = Missing(
                f"Kafka does not hold offset {target} of {tp.topic}/{tp.partition} (out of range: the "
                "topic's retention passed, or it was recreated)"
            )
            pending.remove(target)
            continue
        by_offset = {m.offset: m for m in batch}
        last = batch[-1].offset if batch else None
        for offset in list(pending):
            if offset in by_offset:
                out[Source(tp.topic, tp.partition, offset)] = by_offset[offset]
                pending.remove(offset)
            elif offset == target or (last is not None and offset < last):
                why = "no record at that offset" if batch else "the broker returned nothing from that offset"
                out[Source(tp.topic, tp.partition, offset)] = Missing(why)
                pending.remove(offset)
    return out


async def _fetch_from(
    consumer: AIOKafkaConsumer, tp: TopicPartition, offset: int
) -> list[ConsumerRecord] | None:
    """Records from `offset` on (empty: none came in time); None when the partition lacks that offset."""
    consumer.seek(tp, offset)
    deadline = time.monotonic() + _FETCH_SECONDS
    try:
        while time.monotonic() < deadline:
            batch: list[ConsumerRecord] = (await consumer.getmany(tp, timeout_ms=500)).get(tp, [])
            if batch:
                return batch
            end = consumer.highwater(tp)
            if end is not None and offset >= end:
                return None  # past the end: some brokers answer that with nothing rather than an error
    except OffsetOutOfRangeError:
        return None
    return []
