"""Fetching from the events topic: one group consumer, batches taken in chunks, a generation fence.

Who calls it: the ingest service's loop (`poll`, `idle`), its checkpoint (`seek`, `committed`, `commit`,
`highwater`) and its topic watch (`consumer`). Its rebalance listener calls the `Rebalancing` it is given:
`on_revoked` before the partitions move, `on_assigned` after; aiokafka logs and swallows errors raised
there, so the fetcher keeps the first one and the next `poll` raises it (a bug must end the loop, not idle
in it).

What it guarantees to the loop:
- Records fetched between a revoke and the following assignment are never handed out, nor are those of a
  poll a rebalance straddled (`poll` answers None): the new assignment seeks, and they come again.
- It never resets a position itself (`auto_offset_reset="none"`): an offset out of range, or a partition
  without a position, raises `PositionLost` naming the partitions, for the checkpoint to judge.
- It reads committed records only (`isolation_level="read_committed"`): a room server whose Kafka client
  publishes in transactions (exactly-once producers, Kafka Streams or Connect in front of us) has its aborted
  transactions' records skipped, never stored. Each poll also says where the consumer reads each held
  partition next (`Polled.positions`): past the last record handed out where it skipped records no one
  writes (transaction markers, aborted transactions, records compacted away), so that the offsets of record
  can move past them too (else a partition ending in a transaction marker would never be caught up).
- A poll takes aiokafka's buffer `FETCH_CHUNK_RECORDS` at a time with a yield between chunks: unpacking a
  20,000-record fetch in one call held the event loop for 100-200 ms, during which the write in flight
  could not send its next statement and PostgreSQL idled.
- A consumer holding no partition is not polled (aiokafka's getmany waits for an assignment without a
  bound, and a member never assigned would never see its stop).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError, NoOffsetForPartitionError, OffsetOutOfRangeError
from aiokafka.structs import OffsetAndMetadata

from pipeline.kafka_client import KafkaConnection
from pipeline.metrics import IngestMetrics
from pipeline.settings import Settings

__all__ = ["FETCH_CHUNK_RECORDS", "Fetcher", "Polled", "PositionLost", "Rebalancing"]

log = logging.getLogger("roomlogs.ingest")

#: Records taken from aiokafka's buffer per `getmany` call.
FETCH_CHUNK_RECORDS = 1_000


class Rebalancing(Protocol):
    """What the fetcher's rebalance listener calls (the ingest service)."""

    async def on_revoked(self, revoked: set[TopicPartition]) -> None: ...

    async def on_assigned(self, assigned: set[TopicPartition]) -> None: ...


class PositionLost(Exception):
    """The broker has no record at these partitions' positions (out of range), or a partition has none."""

    def __init__(self, partitions: set[TopicPartition], cause: Exception) -> None:
        super().__init__(f"positions lost at {sorted(tp.partition for tp in partitions)}: {cause!r}")
        self.partitions = partitions
        self.cause = cause


@dataclass(slots=True)
class Polled:
    """Records of one poll, by partition, and the generation they were fetched under; `positions`: where
    the consumer reads each held partition next, as the poll left it (past the last record handed out
    where records no one writes followed it: transaction markers, aborted transactions, compacted gaps)."""

    records: dict[int, list[Any]]
    generation: int
    positions: dict[int, int] = field(default_factory=dict)


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, fetcher: Fetcher, rebalancing: Rebalancing) -> None:
        self._fetcher = fetcher
        self._rebalancing = rebalancing

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        self._fetcher.generation += 1
        self._fetcher.rebalancing = True
        try:
            await self._rebalancing.on_revoked(revoked)
        except Exception as e:
            self._fetcher.failed(e)
            raise

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self._fetcher.generation += 1
        try:
            await self._rebalancing.on_assigned(assigned)
        except Exception as e:
            self._fetcher.failed(e)
            raise
        finally:
            self._fetcher.rebalancing = False


class Fetcher:
    def __init__(self, settings: Settings, kafka: KafkaConnection, metrics: IngestMetrics) -> None:
        s = settings
        self.topic = s.events_topic
        self._metrics = metrics
        self._max_records = s.batch_max_events
        self._wait_seconds = s.batch_max_wait_seconds
        self.consumer = AIOKafkaConsumer(
            **kafka.kwargs(),
            group_id=s.consumer_group,
            enable_auto_commit=False,
            auto_offset_reset="none",  # never reset a position silently: see the module docstring
            isolation_level="read_committed",  # never an aborted transaction's records
            max_partition_fetch_bytes=8 * 1024 * 1024,
            fetch_max_bytes=64 * 1024 * 1024,
            max_poll_interval_ms=300_000,
            session_timeout_ms=int(s.kafka_session_timeout_seconds * 1000),
            heartbeat_interval_ms=max(100, int(s.kafka_session_timeout_seconds * 1000 / 6)),
            group_instance_id=s.kafka_group_instance_id if s.kafka_static_membership else None,
        )
        #: moved by every revoke and assignment (and by the service when it re-positions partitions):
        #: what was fetched under another generation is not written
        self.generation = 0
        #: between a revoke and the end of the following assignment
        self.rebalancing = False
        self._failure: BaseException | None = None

    # --- lifecycle -------------------------------------------------------------------------------------
    async def start(self, rebalancing: Rebalancing) -> None:
        # Subscribed after start(): aiokafka's start() of a subscribed consumer waits for an assignment,
        # and a member the broker never assigns (pipeline/ingest/watch.py) would hang there, unseen.
        await self.consumer.start()
        self.consumer.subscribe([self.topic], listener=_Listener(self, rebalancing))

    async def stop(self) -> None:
        await self.consumer.stop()

    def failed(self, error: BaseException) -> None:
        """An error in a rebalance callback: raised by the next poll."""
        if self._failure is None:
            self._failure = error

    # --- the loop's side -------------------------------------------------------------------------------
    def assignment(self) -> set[TopicPartition]:
        return set(self.consumer.assignment())

    def partitions(self) -> list[int]:
        return sorted(tp.partition for tp in self.consumer.assignment())

    async def poll(self, stopping: asyncio.Event) -> Polled | None:
        """Up to `batch_max_events` records (empty: none came within `batch_max_wait_seconds`); None when
        what was fetched is not ours to write (a rebalance came in between). Raises PositionLost."""
        if self._failure is not None:
            raise self._failure
        consumer = self.consumer
        if not consumer.assignment():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), max(self._wait_seconds, 0.05))
            return Polled({}, self.generation)
        fetched = await self._getmany(
            int(self._wait_seconds * 1000), min(self._max_records, FETCH_CHUNK_RECORDS)
        )
        generation = self.generation
        if self.rebalancing:
            return None
        total = sum(len(msgs) for msgs in fetched.values())
        while fetched and total < self._max_records:
            await asyncio.sleep(0)  # let the write in flight send its next statement
            try:
                more = await self._getmany(0, min(self._max_records - total, FETCH_CHUNK_RECORDS))
            except PositionLost:
                break  # raised again by the next poll, and judged then
            if self.rebalancing or generation != self.generation:
                return None
            if not more:
                break
            for tp, msgs in more.items():
                fetched.setdefault(tp, []).extend(msgs)
                total += len(msgs)
        # (no await since the last getmany: the positions are those of the records handed out)
        return Polled({tp.partition: msgs for tp, msgs in fetched.items()}, generation, self._positions())

    def _positions(self) -> dict[int, int]:
        """The consumer's position of each held partition that has one. (aiokafka's `position()` is a
        coroutine that waits for a position to be known; its state is read here, at once, as it does.)"""
        subscription = self.consumer._subscription.subscription
        assignment = None if subscription is None else subscription.assignment
        if assignment is None:
            return {}
        out: dict[int, int] = {}
        for tp in self.consumer.assignment():
            state = assignment.state_value(tp)
            if state is not None and state.has_valid_position:
                out[tp.partition] = state.position
        return out

    async def _getmany(self, timeout_ms: int, max_records: int) -> dict[TopicPartition, list[Any]]:
        try:
            got: dict[TopicPartition, list[Any]] = await self.consumer.getmany(
                timeout_ms=timeout_ms, max_records=max_records
            )
        except (OffsetOutOfRangeError, NoOffsetForPartitionError) as e:
            found = e.args[0] if e.args and isinstance(e.args[0], dict) else {}
            held = self.consumer.assignment()
            raise PositionLost({tp for tp in found if tp in held} or set(held), e) from e
        return got

    async def idle(self, seconds: float) -> None:
        """Wait while staying a live group member: poll with every partition paused."""
        consumer = self.consumer
        consumer.pause(*consumer.assignment())
        try:
            got = await consumer.getmany(timeout_ms=int(seconds * 1000))
        except (OffsetOutOfRangeError, NoOffsetForPartitionError):
            return  # judged at the loop's next poll
        for tp, msgs in got.items():  # partitions assigned during the wait were not paused: un-read them
            consumer.seek(tp, msgs[0].offset)

    def resume_all(self) -> None:
        self.consumer.resume(*self.consumer.assignment())

    # --- the checkpoint's side -------------------------------------------------------------------------
    def seek(self, partition: int, offset: int) -> bool:
        """Read `partition` from `offset` next; False when it is not held (any more)."""
        tp = TopicPartition(self.topic, partition)
        if tp not in self.consumer.assignment():
            return False
        self.consumer.seek(tp, offset)
        return True

    def highwater(self, partition: int) -> int | None:
        tp = TopicPartition(self.topic, partition)
        return self.consumer.highwater(tp) if tp in self.consumer.assignment() else None

    async def committed(self, partitions: Iterable[int]) -> dict[int, int | None]:
        """The group's offsets committed to Kafka (None where none, or Kafka would not say)."""
        out: dict[int, int | None] = {}
        for p in partitions:
            try:
                out[p] = await self.consumer.committed(TopicPartition(self.topic, p))
            except KafkaError:
                out[p] = None
        return out

    async def commit(self, next_offsets: Mapping[int, int]) -> dict[int, int]:
        """Commit the held partitions' offsets to Kafka: informational only (PostgreSQL holds the offsets
        of record), so a refusal is logged and skipped. Returns what was offered."""
        held = self.consumer.assignment()
        offsets = {
            TopicPartition(self.topic, p): OffsetAndMetadata(nxt, "")
            for p, nxt in next_offsets.items()
            if TopicPartition(self.topic, p) in held
        }
        if not offsets:
            return {}
        started = time.perf_counter()
        try:
            await self.consumer.commit(offsets)
        except KafkaError as e:
            log.info("Kafka offset commit skipped (%s); PostgreSQL offsets stand", type(e).__name__)
        self._metrics.commit_seconds.observe(time.perf_counter() - started)
        return {tp.partition: o.offset for tp, o in offsets.items()}
