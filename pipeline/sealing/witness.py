"""The witness: every daily head also on a Kafka topic of its own (ROOMLOGS_SEAL_HEADS_TOPIC).

Who calls it: the sealing run publishes each new head (`publisher`; at least once: a head is recorded as
published only once the broker acknowledged it); `roomlogs seals heads --from-kafka` prints the topic's
copies; `roomlogs verify --db --witness` compares them with the database's heads. The topic is kept
forever (retention.ms=-1) and compacted by day; its records are the signed statements themselves, so a
copy outside the database shows a history that was rewritten there, even by someone holding the database
and the signing key (a re-signed forgery differs from what the topic holds).

Record: key the day (ISO), value the signed statement (canonical JSON), headers `roomlogs.signature` and
`roomlogs.key_id`.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import date

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from pipeline.errors import ConfigurationError
from pipeline.evidence.statements import statement_hash
from pipeline.kafka_client import KafkaConnection, kafka_errors
from pipeline.kafka_logs import LogProbe
from pipeline.settings import Settings
from pipeline.storage.seals import StoredHead

__all__ = ["Publisher", "WitnessedHead", "ensure_topic", "publisher", "read_heads"]

TOPIC_CONFIGS = {"retention.ms": "-1", "cleanup.policy": "compact"}
_READ_SECONDS = 30.0


@dataclass(frozen=True, slots=True)
class WitnessedHead:
    day: date
    statement: bytes
    signature: bytes
    key_id: str

    @property
    def statement_hash(self) -> bytes:
        return statement_hash(self.statement)


async def ensure_topic(settings: Settings) -> None:
    admin = AIOKafkaAdminClient(**KafkaConnection.of(settings).kwargs())
    try:
        async with kafka_errors(settings):
            await admin.start()
            if settings.seal_heads_topic in await admin.list_topics():
                return
            response = await admin.create_topics(
                [
                    NewTopic(
                        settings.seal_heads_topic,
                        1,
                        settings.kafka_replication_factor,
                        topic_configs=TOPIC_CONFIGS,
                    )
                ]
            )
            for _, code, *_ in response.topic_errors:
                if code and code != TopicAlreadyExistsError.errno:
                    raise ConfigurationError(
                        f"Kafka could not create the witness topic ROOMLOGS_SEAL_HEADS_TOPIC="
                        f"{settings.seal_heads_topic!r} (error {code}): create it yourself (kept forever)"
                    )
    finally:
        await admin.close()


class Publisher:
    """`await publisher(head)` sends a head and awaits the acknowledgement; the producer (and the topic,
    when missing) is made at the first head, so a run with nothing to publish costs nothing. `close()`."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._producer: AIOKafkaProducer | None = None

    async def __call__(self, head: StoredHead) -> None:
        s = self._settings
        if self._producer is None:
            await ensure_topic(s)
            producer = AIOKafkaProducer(**KafkaConnection.of(s).kwargs(), acks="all")
            async with kafka_errors(s):
                await producer.start()
            self._producer = producer
        await self._producer.send_and_wait(
            s.seal_heads_topic,
            key=head.day.isoformat().encode(),
            value=head.statement,
            headers=[("roomlogs.signature", head.signature), ("roomlogs.key_id", head.key_id.encode())],
        )

    async def close(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None


@asynccontextmanager
async def publisher(settings: Settings) -> AsyncIterator[Publisher]:
    """`async with publisher(settings) as publish: await publish(head)`."""
    out = Publisher(settings)
    try:
        yield out
    finally:
        await out.close()


async def read_heads(settings: Settings) -> list[WitnessedHead]:
    """Every head the witness topic holds, in order (a later copy of a day follows an earlier one)."""
    consumer = AIOKafkaConsumer(
        **KafkaConnection.of(settings).kwargs(),
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    async with kafka_errors(settings):
        await consumer.start()
    try:
        async with LogProbe(settings) as probe:  # the true end (Tansu's ListOffsets answers less)
            log = await probe.describe(settings.seal_heads_topic, [0])
        if 0 not in log.partitions:
            return []
        tp = TopicPartition(settings.seal_heads_topic, 0)
        consumer.assign([tp])
        end = log.partitions[0].end
        await consumer.seek_to_beginning(tp)
        out: list[WitnessedHead] = []
        deadline = time.monotonic() + _READ_SECONDS
        while time.monotonic() < deadline and (await consumer.position(tp)) < end:
            for msgs in (await consumer.getmany(timeout_ms=500)).values():
                for m in msgs:
                    headers = dict(m.headers or ())
                    statement = bytes(m.value or b"")
                    day = date.fromisoformat(orjson.loads(statement)["day"])
                    out.append(
                        WitnessedHead(
                            day, statement, bytes(headers.get("roomlogs.signature", b"")),
                            bytes(headers.get("roomlogs.key_id", b"")).decode(),
                        )
                    )  # fmt: skip
        return out
    finally:
        await consumer.stop()
