"""The witness: every daily head also on a Kafka topic of its own (ROOMLOGS_SEAL_HEADS_TOPIC).

Who calls it: the sealing run publishes each new head (`publisher`; at least once: a head is recorded as
published only once the broker acknowledged it); `roomlogs seals heads --from-kafka` prints the topic's
copies; `roomlogs verify --db --witness` compares them with the database's heads. The topic is kept
forever (retention.ms=-1) and compacted; its records are the signed statements themselves, so a copy
outside the database shows a history that was rewritten there, even by someone holding the database and
the signing key (a re-signed forgery differs from what the topic holds).

Record: key the day and the statement's SHA-256 (`2026-12-01/<hex>`), value the signed statement (canonical
JSON), headers `roomlogs.signature` and `roomlogs.key_id`. Keyed by statement, compaction removes only
copies of the same head (republished); a day's other head (a rewrite, or the day sealed again after a
restore) is a record beside the original, which it never removes. (Keyed by day alone, as before, the
cleaner would in time keep only the rewrite, and the witness would agree with it. Records published so
far under the day alone are kept: nothing is published under those keys any more.)

A witness that is not the one the heads were published to: each publication records the broker's id of the
topic (migration 0020). `judge` compares the topic found (its id; for brokers that give none, whether its
log is shorter than the heads it acknowledged) with the incarnation published to last: Tansu restarted
empty, the topic deleted and recreated, a new cluster. The sealing run then republishes every signed head
to the new topic (safe: a head cannot be forged without the key, and a head the old witness held is the
same bytes); `verify --witness` and `roomlogs status` say the witness is new until it has them all, and
`verify` says from when the new witness attests the heads it was given again.
"""

from __future__ import annotations

import time
import uuid
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
from pipeline.storage.seals import UNKNOWN_TOPIC_ID, Incarnation, StoredHead

__all__ = [
    "Publisher",
    "WitnessLog",
    "Witnessed",
    "WitnessedHead",
    "ensure_topic",
    "incarnation",
    "judge",
    "publisher",
    "read_heads",
    "record_key",
]

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


@dataclass(frozen=True, slots=True)
class WitnessLog:
    """The witness topic as the broker has it now."""

    topic: str
    #: the broker's id of this incarnation of the topic (None: the broker gives none)
    topic_id: uuid.UUID | None
    #: the offset after its last record (0: empty, or no such topic); compaction never lowers it
    end: int
    exists: bool


@dataclass(frozen=True, slots=True)
class Witnessed:
    log: WitnessLog
    heads: list[WitnessedHead]


async def describe(probe: LogProbe, topic: str) -> WitnessLog:
    found = await probe.describe(topic, [0])
    part = found.partitions.get(0)
    return WitnessLog(topic, found.topic_id, part.end if part else 0, found.exists)


def judge(latest: Incarnation | None, log: WitnessLog) -> str | None:
    """What says the topic is not the incarnation heads were published to last (None: it is, as far as can
    be told, or nothing was published yet)."""
    if latest is None:
        return None
    was = "" if latest.topic_id == UNKNOWN_TOPIC_ID else f" (topic id {latest.topic_id})"
    acknowledged = (
        f"acknowledged {latest.heads} daily head(s){was}, the last at {latest.last_at:%Y-%m-%d %H:%M:%S}"
    )
    if not log.exists:
        return f"the witness topic {log.topic} does not exist; it {acknowledged}"
    if log.topic_id is not None and latest.topic_id not in (UNKNOWN_TOPIC_ID, log.topic_id):
        return (
            f"the witness topic {log.topic} is a new one (topic id {log.topic_id}): the one that "
            f"{acknowledged} is gone (a broker started empty, the topic recreated, another cluster)"
        )
    if log.end < latest.heads:
        return (
            f"the witness topic {log.topic} holds {log.end} record(s), fewer than the heads it "
            f"{acknowledged}: it is a new one (a broker started empty, the topic recreated, another cluster)"
        )
    return None


def incarnation(
    latest: Incarnation | None, log: WitnessLog, changed: str | None
) -> tuple[uuid.UUID, set[uuid.UUID]]:
    """(the id to record publications to this topic under, the ids whose publications this topic holds)."""
    if changed is not None or latest is None:
        now = log.topic_id or (uuid.uuid4() if changed else UNKNOWN_TOPIC_ID)
        return now, {now}
    now = log.topic_id or latest.topic_id
    return now, {now, latest.topic_id}


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
    when missing) is made at the first head, so a run with nothing to publish costs nothing. `await
    publisher.log()`: the topic as the broker has it now (a probe of its own, kept open; the topic made when
    missing). `close()`."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._producer: AIOKafkaProducer | None = None
        self._probe: LogProbe | None = None

    async def log(self) -> WitnessLog:
        """The topic as the broker has it now, made first when missing (so that its id is the one the
        heads about to be published get recorded under)."""
        if self._probe is None:
            probe = LogProbe(self._settings)
            await probe.start()
            self._probe = probe
        found = await describe(self._probe, self._settings.seal_heads_topic)
        if not found.exists:
            await ensure_topic(self._settings)
            found = await describe(self._probe, self._settings.seal_heads_topic)
        return found

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
            key=record_key(head),
            value=head.statement,
            headers=[("roomlogs.signature", head.signature), ("roomlogs.key_id", head.key_id.encode())],
        )

    async def close(self) -> None:
        if self._probe is not None:
            await self._probe.stop()
            self._probe = None
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None


def record_key(head: StoredHead) -> bytes:
    """A head's key on the witness topic: its day and its statement's hash (see the module docstring)."""
    return f"{head.day.isoformat()}/{statement_hash(head.statement).hex()}".encode()


@asynccontextmanager
async def publisher(settings: Settings) -> AsyncIterator[Publisher]:
    """`async with publisher(settings) as publish: await publish(head)`."""
    out = Publisher(settings)
    try:
        yield out
    finally:
        await out.close()


async def read_heads(settings: Settings) -> Witnessed:
    """Every head the witness topic holds, in order (a later copy of a day follows an earlier one), and
    which incarnation of the topic holds them."""
    consumer = AIOKafkaConsumer(
        **KafkaConnection.of(settings).kwargs(),
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    try:
        async with kafka_errors(settings):
            await consumer.start()  # (one that could not start still holds a client: stopped below)
        async with LogProbe(settings) as probe:  # the true end (Tansu's ListOffsets answers less)
            log = await describe(probe, settings.seal_heads_topic)
        if not log.end:
            return Witnessed(log, [])
        tp = TopicPartition(settings.seal_heads_topic, 0)
        consumer.assign([tp])
        end = log.end
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
        return Witnessed(log, out)
    finally:
        await consumer.stop()
