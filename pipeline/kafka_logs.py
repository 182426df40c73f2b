"""What the broker holds of a topic right now: which log it is (its topic id), where each partition's log
starts and ends, and the record at a given offset.

Who calls it: the ingest service on every assignment (pipeline.ingest.positions judges the offsets of record
against it before any record is fenced off), `roomlogs status` and `roomlogs offsets`. One `LogProbe` holds
one consumer of its own: no consumer group, nothing committed, positions of no other consumer touched.

Why a request of our own: aiokafka asks for Metadata up to version 5, which carries no topic ids (they came
with version 10, KIP-516). `TopicIdRequest` asks for version 12 where the broker speaks it (Apache Kafka
since 2.8 and Tansu do; every incarnation of a topic gets a new id, on Tansu also after a restart) and the
probe answers `topic_id=None` where it does not; the last record written (pipeline.storage.batch.RecordMark)
then tells an incarnation apart.

End offsets: ListOffsets(latest) alone is not enough. Tansu answers it with the base offset of the last
record batch (847 for a partition holding 1,000 records), while fetch responses carry the true high
watermark; `describe` takes the larger of the two (equal on Apache Kafka).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from io import BytesIO
from types import TracebackType
from typing import Any, NamedTuple

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import IncompatibleBrokerVersion, KafkaError, OffsetOutOfRangeError
from aiokafka.protocol.abstract import AbstractType
from aiokafka.protocol.api import Request, RequestStruct, Response
from aiokafka.protocol.types import (
    Boolean,
    CompactArray,
    CompactString,
    Int16,
    Int32,
    Schema,
    TaggedFields,
)

from pipeline.kafka_client import KafkaConnection, kafka_errors
from pipeline.settings import Settings

__all__ = ["LogProbe", "PartitionLog", "RecordMark", "TopicLog", "mark_of"]

#: How long to wait for the broker to hand over the record at one offset, or a high watermark.
FETCH_SECONDS = 10.0
_NO_TOPIC_ID = bytes(16)


class RecordMark(NamedTuple):
    """A record as the offsets of record remember it: enough to recognise it in the log later."""

    offset: int
    timestamp_ms: int
    #: CRC-32 of the record's value (0 for an empty value)
    crc32: int


def mark_of(record: Any) -> RecordMark:
    """The mark of an aiokafka ConsumerRecord (what the ingest stage stores of its last record)."""
    return RecordMark(record.offset, record.timestamp, zlib.crc32(record.value or b""))


@dataclass(frozen=True, slots=True)
class PartitionLog:
    partition: int
    #: the first offset the broker still holds (records below it were deleted by retention, or never were)
    start: int
    #: the offset after the last record (the high watermark)
    end: int


@dataclass(frozen=True, slots=True)
class TopicLog:
    topic: str
    #: the broker's id of this incarnation of the topic; None when the broker gives none
    topic_id: uuid.UUID | None
    #: by partition; empty when the topic does not exist
    partitions: dict[int, PartitionLog] = field(default_factory=dict)

    @property
    def exists(self) -> bool:
        return bool(self.partitions)


#: How long `LogProbe.committed` waits for the group's offsets (aiokafka retries a missing coordinator for
#: ever): a diagnosis command answers without them rather than hang on a degraded cluster.
COMMITTED_TIMEOUT_SECONDS = 10.0


class LogProbe:
    """`async with LogProbe(settings) as probe:` then `describe`, `records_at`, `offsets_for_time`."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._consumer = AIOKafkaConsumer(
            **KafkaConnection.of(settings).kwargs(),
            enable_auto_commit=False,
            group_id=None,
            auto_offset_reset="none",
        )
        #: one question at a time: the answers assign and seek the probe's one consumer
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        try:
            async with kafka_errors(self._settings):
                await self._consumer.start()
        except BaseException:
            await self._consumer.stop()  # a consumer that could not start still holds a client
            raise

    async def stop(self) -> None:
        await self._consumer.stop()

    async def __aenter__(self) -> LogProbe:
        await self.start()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def _metadata(self, topic: str) -> tuple[uuid.UUID | None, list[int]] | None:
        """(topic id, partitions) from Metadata v12, which never creates the topic; None when the broker
        does not speak it. A topic that does not exist has no partitions."""
        client = self._consumer._client
        try:
            answer = await client.send(client.get_random_node(), TopicIdRequest([topic]))
        except (IncompatibleBrokerVersion, NotImplementedError):
            return None
        for error_code, name, raw_id, _internal, partitions, *_ in answer.topics:
            if name == topic and not error_code:
                topic_id = None if raw_id == _NO_TOPIC_ID else uuid.UUID(bytes=raw_id)
                return topic_id, sorted(p[1] for p in partitions)
        return None, []

    async def partitions(self, topic: str) -> tuple[uuid.UUID | None, list[int]]:
        """(topic id, partitions) of the topic as the broker shows it now (no partitions: no such topic)."""
        async with self._lock:
            return await self._partitions(topic)

    async def _partitions(self, topic: str) -> tuple[uuid.UUID | None, list[int]]:
        found = await self._metadata(topic)
        if found is not None:
            return found
        client = self._consumer._client
        client.add_topic(topic)
        await client.force_metadata_update()
        return None, sorted(self._consumer.partitions_for_topic(topic) or ())

    async def committed(self, group: str, topic: str, partitions: Iterable[int]) -> dict[int, int | None]:
        """`group`'s offsets of `topic` committed to Kafka (informational for roomlogs: PostgreSQL holds the
        offsets of record; a group offset past them means the database is behind). Asked as the worker asks
        (OffsetFetch through a consumer of the group that never joins it, so no rebalance: Tansu answers
        that, not the admin client's request). Empty when the broker does not say within
        `COMMITTED_TIMEOUT_SECONDS` (no coordinator, no right to describe the group): what depends on it is
        then not judged, never judged wrongly. aiokafka's own retry lines are held back meanwhile."""
        consumer = AIOKafkaConsumer(
            **KafkaConnection.of(self._settings).kwargs(), group_id=group, enable_auto_commit=False
        )
        aiokafka_log = logging.getLogger("aiokafka")
        level = aiokafka_log.level
        aiokafka_log.setLevel(logging.CRITICAL)
        out: dict[int, int | None] = {}
        try:
            async with asyncio.timeout(COMMITTED_TIMEOUT_SECONDS):
                await consumer.start()
                for p in partitions:
                    out[p] = await consumer.committed(TopicPartition(topic, p))
        except (KafkaError, TimeoutError, OSError):
            return {}
        finally:
            await consumer.stop()
            aiokafka_log.setLevel(level)
        return out

    async def describe(self, topic: str, partitions: Iterable[int] | None = None) -> TopicLog:
        """The topic's id and, per partition (all, or those asked that exist), where its log starts and
        ends. Asking never creates the topic where the broker tells topic ids (where it does not, a broker
        with auto-creation on may create it, as any client's metadata request would)."""
        async with self._lock:
            return await self._describe(topic, partitions)

    async def _describe(self, topic: str, partitions: Iterable[int] | None) -> TopicLog:
        consumer = self._consumer
        topic_id, listed = await self._partitions(topic)
        known = set(listed)
        wanted = sorted(known if partitions is None else set(partitions) & known)
        if not wanted:
            return TopicLog(topic, topic_id)
        tps = [TopicPartition(topic, p) for p in wanted]
        starts = await consumer.beginning_offsets(tps)
        listed = await consumer.end_offsets(tps)
        ends = await self._high_watermarks(listed)
        return TopicLog(
            topic,
            topic_id,
            {tp.partition: PartitionLog(tp.partition, starts[tp], ends[tp]) for tp in tps},
        )

    async def _high_watermarks(self, listed: Mapping[TopicPartition, int]) -> dict[TopicPartition, int]:
        """max(ListOffsets(latest), the high watermark a fetch from there reports), per partition."""
        consumer = self._consumer
        consumer.assign(list(listed))
        for tp, offset in listed.items():
            consumer.seek(tp, offset)
        deadline = time.monotonic() + FETCH_SECONDS
        try:
            while time.monotonic() < deadline and any(consumer.highwater(tp) is None for tp in listed):
                try:
                    await consumer.getmany(timeout_ms=200)
                except OffsetOutOfRangeError:
                    break  # the log moved under us: ListOffsets' answer is the best we have
            return {tp: max(offset, consumer.highwater(tp) or 0) for tp, offset in listed.items()}
        finally:
            self._park()

    def _park(self) -> None:
        """Stop fetching between questions. Pause, not assign([]): unassigning a partition whose fetch the
        broker holds (Tansu, on an empty partition) makes the consumer's stop() wait minutes for it."""
        self._consumer.pause(*self._consumer.assignment())

    async def records_at(self, topic: str, offsets: Mapping[int, int]) -> dict[int, RecordMark | None]:
        """Per partition, the mark of the record at the given offset; None where the broker does not hold a
        record at exactly that offset (deleted, past the end, or a gap such as a transaction marker)."""
        async with self._lock:
            return await self._records_at(topic, offsets)

    async def _records_at(self, topic: str, offsets: Mapping[int, int]) -> dict[int, RecordMark | None]:
        consumer = self._consumer
        out: dict[int, RecordMark | None] = {}
        for partition, offset in offsets.items():
            tp = TopicPartition(topic, partition)
            consumer.assign([tp])
            consumer.seek(tp, offset)
            out[partition] = None
            deadline = time.monotonic() + FETCH_SECONDS
            try:
                while time.monotonic() < deadline:
                    got = (await consumer.getmany(tp, timeout_ms=300, max_records=1)).get(tp, [])
                    if got:
                        if got[0].offset == offset:
                            out[partition] = mark_of(got[0])
                        break
                    end = consumer.highwater(tp)
                    if end is not None and offset >= end:
                        break  # past the end: some brokers answer that with nothing rather than an error
            except OffsetOutOfRangeError:
                pass
            finally:
                self._park()
        return out

    async def offsets_for_time(
        self, topic: str, partitions: Iterable[int], at_ms: int
    ) -> dict[int, int | None]:
        """Per partition, the first offset whose record's timestamp is at or after `at_ms` (None: none is)."""
        tps = [TopicPartition(topic, p) for p in partitions]
        async with self._lock:
            found = await self._consumer.offsets_for_times(dict.fromkeys(tps, at_ms))
        return {tp.partition: (None if found[tp] is None else found[tp].offset) for tp in tps}


# --- Metadata version 12: topic ids (KIP-516) -------------------------------------------------------------
class Uuid(AbstractType[bytes]):  # type: ignore[misc]
    """The protocol's 16-byte UUID (all zeros: none)."""

    @classmethod
    def encode(cls, value: bytes) -> bytes:
        return bytes(value)

    @classmethod
    def decode(cls, data: BytesIO) -> bytes:
        return data.read(16)


class MetadataResponse_v12(Response):  # type: ignore[misc]
    API_KEY = 3
    API_VERSION = 12
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        (
            "brokers",
            CompactArray(
                ("node_id", Int32),
                ("host", CompactString("utf-8")),
                ("port", Int32),
                ("rack", CompactString("utf-8")),
                ("tags", TaggedFields),
            ),
        ),
        ("cluster_id", CompactString("utf-8")),
        ("controller_id", Int32),
        (
            "topics",
            CompactArray(
                ("error_code", Int16),
                ("name", CompactString("utf-8")),
                ("topic_id", Uuid),
                ("is_internal", Boolean),
                (
                    "partitions",
                    CompactArray(
                        ("error_code", Int16),
                        ("partition_index", Int32),
                        ("leader_id", Int32),
                        ("leader_epoch", Int32),
                        ("replica_nodes", CompactArray(Int32)),
                        ("isr_nodes", CompactArray(Int32)),
                        ("offline_replicas", CompactArray(Int32)),
                        ("tags", TaggedFields),
                    ),
                ),
                ("topic_authorized_operations", Int32),
                ("tags", TaggedFields),
            ),
        ),
        ("tags", TaggedFields),
    )


class MetadataRequest_v12(RequestStruct):  # type: ignore[misc]
    FLEXIBLE_VERSION = True
    API_KEY = 3
    API_VERSION = 12
    RESPONSE_TYPE = MetadataResponse_v12
    SCHEMA = Schema(
        (
            "topics",
            CompactArray(("topic_id", Uuid), ("name", CompactString("utf-8")), ("tags", TaggedFields)),
        ),
        ("allow_auto_topic_creation", Boolean),
        ("include_topic_authorized_operations", Boolean),
        ("tags", TaggedFields),
    )


class TopicIdRequest(Request[MetadataRequest_v12]):  # type: ignore[misc]
    """Metadata of the named topics at version 12, never creating them."""

    API_KEY = 3

    def __init__(self, topics: list[str]) -> None:
        self._topics = topics

    def build(self, request_struct_class: type[MetadataRequest_v12]) -> MetadataRequest_v12:
        return request_struct_class([(_NO_TOPIC_ID, t, {}) for t in self._topics], False, False, {})
