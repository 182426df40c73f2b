"""Replaying dead letters once their producer or the contract is fixed: exactly once, audited.

Who calls it: `roomlogs dead-letters replay` (an operator, naming who they are with `--by`).

Dead letters keep no raw bytes (schemas/README.md), so a replay reads the original record back from Kafka
by its source coordinates; a record the topic no longer holds (its retention passed) cannot be replayed and
is recorded as `not_in_kafka`. The record is normalized with the current contract, classified and filtered
as ingest does (pipeline.ingest.prepare: expired, deleted) and written by the ingest writer
(pipeline.storage.writer.BatchWriter: event-id registry, room state by event version, authorized
deletions, partitions), so a replayed event is stored at most once, whether it is replayed twice or also
re-consumed by a worker.

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

from pipeline.events.normalize import Normalizer
from pipeline.ingest.prepare import build_batch, normalize_records
from pipeline.ingest.rooms import RoomDirectory
from pipeline.kafka_client import client_kwargs, kafka_errors
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
    originals = await fetch_originals(settings, [d.source for d in letters])
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
            result = await _one(settings, conn, letter, originals[letter.source], normalizer, partitions, now)
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
    if isinstance(original, Missing):
        return LetterReplay(letter, Outcome.NOT_IN_KAFKA, None, original.why)
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
    writer = BatchWriter(_single(conn), partitions, deletions=deletions, classify=rooms.classify)
    try:
        async with conn.transaction():  # a savepoint, undone unless the event is in the logs
            written = _in_the_logs(await writer.write(batch, now))
    except _Undo as u:
        return LetterReplay(letter, u.outcome, event_id, u.detail)
    if written.stored:
        stored_class = batch.rows[0][ROW_CLASS]
        return LetterReplay(letter, Outcome.STORED, event_id, f"stored as a {stored_class} log row")
    return LetterReplay(letter, Outcome.DUPLICATE, event_id, "already stored with the same content")


def _in_the_logs(written: WriteOutcome) -> WriteOutcome:
    """`written` when the event is in the logs now; otherwise raise _Undo saying why."""
    if written.conflicts:
        raise _Undo(Outcome.CONFLICTING_DUPLICATE, written.conflicts[0].detail)
    if written.rejected:
        raise _Undo(Outcome.REJECTED, written.rejected[0].detail)
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
        **client_kwargs(settings), enable_auto_commit=False, group_id=None, auto_offset_reset="none"
    )
    try:
        async with kafka_errors(settings):
            await consumer.start()
            known = {
                tp for tp in wanted if tp.partition in (consumer.partitions_for_topic(tp.topic) or set())
            }
            for tp in set(wanted) - known:
                for offset in wanted.pop(tp):
                    found[Source(tp.topic, tp.partition, offset)] = Missing(
                        f"Kafka has no partition {tp.partition} of topic {tp.topic} (any more)"
                    )
            if wanted:
                consumer.assign(list(wanted))
                begins = await consumer.beginning_offsets(list(wanted))
                for tp, offsets in wanted.items():
                    found.update(await _read(consumer, tp, sorted(offsets), begins[tp]))
    finally:
        await consumer.stop()
    return found


async def _read(
    consumer: AIOKafkaConsumer, tp: TopicPartition, offsets: list[int], earliest: int
) -> dict[Source, ConsumerRecord | Missing]:
    out: dict[Source, ConsumerRecord | Missing] = {}
    pending = []
    for offset in offsets:
        if offset < earliest:
            out[Source(tp.topic, tp.partition, offset)] = Missing(
                f"Kafka no longer holds it: the earliest record of {tp.topic}/{tp.partition} is at offset "
                f"{earliest} (the topic's retention has passed)"
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
