"""RoomEventPublisher against the session's real broker: what a room server relies on.

The tests that talk to a broker run on both lanes: Tansu, and the 3-node Apache Kafka cluster where the
publisher runs as room servers should (idempotence on, acks=all, replication 3, min.insync.replicas=2).
"""

from __future__ import annotations

import asyncio
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import codec
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.structs import ConsumerRecord
from broker_lanes import BrokerLane
from prometheus_client import CollectorRegistry

from pipeline.errors import ContractError, MissingDependencyError, PublisherClosedError
from pipeline.events.contract import EventType
from pipeline.events.reasons import Reason
from pipeline.publisher import BrokerUnavailableError, DeliveryError, RoomEventPublisher
from pipeline.publisher import client as client_module
from pipeline.publisher import events as ev
from pipeline.settings import Settings
from pipeline.stack import EmbeddedKafka, free_port

pytestmark = pytest.mark.broker_semantics

TopicFactory = Callable[..., Awaitable[str]]
Consume = Callable[..., Awaitable[list[ConsumerRecord]]]
ANN = ev.user("u-ann", "Ann", avatar_id="av-1", avatar_url="https://cdn.example.net/a/1.png")
BOB = ev.user("u-bob", "Bob")


@pytest.fixture
async def topic(topic_factory: TopicFactory) -> str:
    return await topic_factory(partitions=3)


@pytest.fixture
def idempotent(kafka_broker: BrokerLane) -> bool:
    """Idempotence as room servers should run it on this lane's broker (on with Apache Kafka)."""
    return kafka_broker.idempotent_producer


@pytest.fixture
async def publisher(kafka_bootstrap: str, topic: str, idempotent: bool) -> AsyncIterator[RoomEventPublisher]:
    async with RoomEventPublisher(bootstrap=kafka_bootstrap, topic=topic, idempotent=idempotent) as pub:
        yield pub


def _stamp(offset_seconds: float = 0.0) -> str:
    moment = datetime.now(UTC) + timedelta(seconds=offset_seconds)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _chat(room: str, n: int) -> dict[str, Any]:
    return ev.chat_message(room, ANN, f"message {n}", event_id=str(uuid.uuid4()), occurred_at=_stamp())


async def test_events_arrive_exactly_as_sent_and_each_room_in_order(
    publisher: RoomEventPublisher, consume: Consume, topic: str
) -> None:
    sent: list[dict[str, Any]] = []
    for n in range(300):
        room = f"room-{n % 12}"
        event = _chat(room, n)
        if n % 50 == 0:
            event = ev.moderation(EventType.MOD_MUTE, room, BOB, ANN, "spam", duration_seconds=600,
                                  event_id=str(uuid.uuid4()), occurred_at=_stamp())  # fmt: skip
        sent.append(event)
        await publisher.send(event)
    await publisher.flush()
    assert (publisher.sent, publisher.acked, publisher.failed, publisher.in_flight) == (300, 300, 0, 0)

    records = await consume(topic, 300)
    assert len(records) == 300
    received = {orjson.loads(r.value)["event_id"]: orjson.loads(r.value) for r in records}
    assert received == {e["event_id"]: e for e in sent}

    partitions_of_room: dict[bytes, set[int]] = defaultdict(set)
    order_in_room: dict[bytes, list[str]] = defaultdict(list)
    for record in sorted(records, key=lambda r: (r.partition, r.offset)):
        partitions_of_room[record.key].add(record.partition)
        order_in_room[record.key].append(orjson.loads(record.value)["event_id"])
    assert all(len(p) == 1 for p in partitions_of_room.values())
    assert len({next(iter(p)) for p in partitions_of_room.values()}) > 1  # rooms do spread over partitions
    for key, ids in order_in_room.items():
        assert ids == [e["event_id"] for e in sent if e["room_id"].encode() == key]


async def test_each_send_returns_a_future_that_says_where_its_event_was_acknowledged(
    publisher: RoomEventPublisher, consume: Consume, topic: str
) -> None:
    """A room server (or a fault harness) that must know which events arrived awaits their deliveries."""
    sent = [_chat(f"room-{n % 5}", n) for n in range(60)]
    deliveries = [await publisher.send(event) for event in sent]
    acknowledged = await asyncio.gather(*deliveries)
    pairs = zip(acknowledged, sent, strict=True)
    where = {(md.partition, md.offset): event["event_id"] for md, event in pairs}
    records = await consume(topic, 60)
    assert where == {(r.partition, r.offset): orjson.loads(r.value)["event_id"] for r in records}


async def test_missing_envelope_fields_are_filled_without_touching_the_callers_dict(
    publisher: RoomEventPublisher, consume: Consume, topic: str
) -> None:
    event = ev.user_entered("room-fill", ANN)
    del event["schema_version"]
    before = dict(event)
    await publisher.send(event)
    await publisher.flush()
    assert event == before

    (record,) = await consume(topic, 1)
    doc = orjson.loads(record.value)
    assert uuid.UUID(doc["event_id"]).version == 7
    assert doc["schema_version"] == 1
    assert doc["occurred_at"].endswith("Z")
    assert abs(datetime.fromisoformat(doc["occurred_at"]) - datetime.now(UTC)) < timedelta(minutes=1)
    assert record.key == b"room-fill"


@pytest.mark.parametrize(
    ("event", "reason"),
    [
        (ev.envelope(EventType.CHAT_MESSAGE, "room-x", None, {"text": "hi"}), Reason.MISSING_FIELD),
        (
            ev.envelope("chat.whisper", "room-x", ANN, {"text": "psst", "recipient": BOB}),
            Reason.PRIVATE_MESSAGE,
        ),
        (ev.chat_message("room-x", ANN, "hi", occurred_at=_stamp(3600)), Reason.TIMESTAMP_IN_FUTURE),
        (ev.chat_message("room-x", ANN, "x" * 70_000), Reason.OVERSIZE),
        (ev.user_left("room-x", ANN, "teleported"), Reason.INVALID_VALUE),
        (ev.envelope("room.teleport", "room-x", ANN, {}), Reason.UNKNOWN_TYPE),
        (ev.chat_message("room-x", ANN, "hi") | {"actor": "u-ann"}, Reason.WRONG_TYPE),
        (
            ev.envelope(EventType.CHAT_MESSAGE, "room-x", ANN, {"text": "hi", "tags": {"a"}}),
            Reason.INVALID_VALUE,
        ),
    ],
    ids=[
        "no-actor",
        "whisper",
        "future",
        "oversize",
        "bad-how",
        "unknown-type",
        "actor-not-object",
        "not-json",
    ],
)
async def test_an_event_that_breaks_the_contract_raises_and_nothing_is_sent(
    publisher: RoomEventPublisher, consume: Consume, topic: str, event: dict[str, Any], reason: Reason
) -> None:
    with pytest.raises(ContractError) as caught:
        await publisher.send(event)
    assert caught.value.reason == reason
    assert publisher.sent == 0

    marker = _chat("room-x", 1)
    await publisher.send(marker)
    await publisher.flush()
    records = await consume(topic, 1)
    assert [orjson.loads(r.value) for r in records] == [marker]


async def test_close_delivers_every_buffered_event(
    kafka_bootstrap: str, consume: Consume, topic: str, idempotent: bool
) -> None:
    publisher = RoomEventPublisher(
        bootstrap=kafka_bootstrap, topic=topic, idempotent=idempotent,
        linger_seconds=30.0, max_batch_bytes=1024 * 1024,
    )  # fmt: skip
    await publisher.start()
    for n in range(2000):
        await publisher.send(_chat(f"room-{n % 7}", n))
    assert publisher.acked < publisher.sent == 2000  # still lingering in the producer's buffers
    await publisher.close()  # sends them now, not after the 30-second linger (the test timeout is shorter)
    assert (publisher.acked, publisher.failed) == (2000, 0)

    records = await consume(topic, 2000)
    assert len(records) == 2000
    assert len({orjson.loads(r.value)["event_id"] for r in records}) == 2000


async def test_send_waits_once_max_buffered_events_are_unacknowledged(
    kafka_bootstrap: str, consume: Consume, topic: str, idempotent: bool
) -> None:
    bound = 8
    publisher = RoomEventPublisher(
        bootstrap=kafka_bootstrap,
        topic=topic,
        idempotent=idempotent,
        linger_seconds=0.2,
        max_buffered_events=bound,
    )
    observed: list[int] = []
    stop = asyncio.Event()

    async def watch() -> None:
        while not stop.is_set():
            observed.append(publisher.in_flight)
            await asyncio.sleep(0.001)

    async with publisher:
        watcher = asyncio.create_task(watch())
        for n in range(bound):
            await publisher.send(_chat("room-bp", n))
        assert publisher.acked == 0 and publisher.in_flight == bound
        await publisher.send(_chat("room-bp", bound))  # no room left: returns only after an acknowledgement
        assert publisher.acked >= 1
        for n in range(bound + 1, 60):
            await publisher.send(_chat("room-bp", n))
            observed.append(publisher.in_flight)
        stop.set()
        await watcher
    assert max(observed) <= bound
    assert publisher.peak_in_flight == bound
    assert len(await consume(topic, 60)) == 60


async def test_flush_returns_while_other_tasks_keep_sending(publisher: RoomEventPublisher) -> None:
    stop = asyncio.Event()

    async def chatter(room: str) -> None:
        n = 0
        while not stop.is_set():
            await publisher.send(_chat(room, n))
            n += 1

    tasks = [asyncio.create_task(chatter(f"room-{i}")) for i in range(3)]
    await asyncio.sleep(0.1)
    handed_over = publisher.sent
    await asyncio.wait_for(publisher.flush(), timeout=20)  # waits for what was sent before, not for the rest
    assert publisher.acked >= handed_over > 0
    stop.set()
    await asyncio.gather(*tasks)
    await publisher.flush()
    assert publisher.acked == publisher.sent and publisher.failed == 0


async def test_send_after_close_raises(
    kafka_bootstrap: str, consume: Consume, topic: str, idempotent: bool
) -> None:
    publisher = RoomEventPublisher(bootstrap=kafka_bootstrap, topic=topic, idempotent=idempotent)
    with pytest.raises(PublisherClosedError, match="not started"):
        await publisher.send(_chat("room-c", 0))
    async with publisher:
        await publisher.send(_chat("room-c", 1))
    with pytest.raises(PublisherClosedError):
        await publisher.send(_chat("room-c", 2))
    with pytest.raises(PublisherClosedError):
        await publisher.send_raw(b"room-c", b"{}")
    await publisher.close()  # a second close is a no-op
    assert len(await consume(topic, 1)) == 1


async def test_validate_false_and_send_raw_send_bad_events_as_they_are(
    kafka_bootstrap: str, consume: Consume, topic: str, idempotent: bool
) -> None:
    broken = b'{"type": "chat.message", '
    async with RoomEventPublisher(
        bootstrap=kafka_bootstrap, topic=topic, idempotent=idempotent, validate=False
    ) as pub:
        await pub.send(ev.envelope("chat.whisper", "room-raw", ANN, {"text": "psst"}))
        await pub.send_raw(b"room-raw", broken)
    records = await consume(topic, 2)
    assert [r.value for r in records][1] == broken
    assert orjson.loads(records[0].value)["type"] == "chat.whisper"


async def test_close_raises_when_events_were_not_delivered(tmp_path: Path) -> None:
    with EmbeddedKafka(tmp_path) as kafka:
        admin = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap)
        await admin.start()
        try:
            await admin.create_topics([NewTopic("doomed", num_partitions=1, replication_factor=1)])
        finally:
            await admin.close()
        publisher = RoomEventPublisher(
            bootstrap=kafka.bootstrap, topic="doomed", idempotent=False,
            linger_seconds=30.0, request_timeout_seconds=3.0,
        )  # fmt: skip
        await publisher.start()
        deliveries = [await publisher.send(_chat("room-lost", n)) for n in range(50)]
        await asyncio.to_thread(kafka.stop)  # the broker goes away with all 50 still buffered
        with pytest.raises(DeliveryError) as caught:
            await publisher.close()
    assert caught.value.failed == 50
    assert all(d.done() and d.exception() is not None for d in deliveries)  # each one says it failed
    assert (publisher.acked, publisher.failed, publisher.in_flight) == (0, 50, 0)
    assert caught.value.retriable


def test_from_settings_takes_the_brokers_settings() -> None:
    settings = Settings(kafka_bootstrap="kafka:9092", events_topic="ev", kafka_idempotent_producer=True,
                        kafka_compression="none", max_event_bytes=1000)  # fmt: skip
    publisher = RoomEventPublisher.from_settings(settings, linger_seconds=0.05)
    assert (publisher.bootstrap, publisher.topic, publisher.idempotent, publisher.compression) == (
        "kafka:9092", "ev", True, "none",
    )  # fmt: skip
    assert (publisher.max_event_bytes, publisher.linger_seconds) == (1000, 0.05)


async def test_start_without_a_broker_raises_broker_unavailable() -> None:
    publisher = RoomEventPublisher(bootstrap=f"127.0.0.1:{free_port()}", topic="nowhere", idempotent=False)
    with pytest.raises(BrokerUnavailableError) as caught:
        await publisher.start()
    assert caught.value.retriable


@pytest.mark.parametrize("compression", ["snappy", "lz4", "zstd"])
def test_a_compression_without_its_library_fails_with_the_fix(
    compression: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # installed with the worker (cramjam): every codec a producer may use can be sent and read
    assert codec.has_snappy() and codec.has_lz4() and codec.has_zstd()
    RoomEventPublisher(bootstrap="127.0.0.1:9092", topic="t", idempotent=False, compression=compression)
    # a room server that installed the SDK alone is told what to install
    monkeypatch.setitem(client_module._COMPRESSION_LIBRARIES, compression, (lambda: False, "cramjam"))
    with pytest.raises(MissingDependencyError, match=r"pip install 'roomlogs\[compression\]' \(or cramjam\)"):
        RoomEventPublisher(bootstrap="127.0.0.1:9092", topic="t", idempotent=False, compression=compression)


async def test_a_room_server_scrapes_what_its_publisher_sent_acked_and_lost(
    kafka_bootstrap: str, topic: str, tmp_path: Path, idempotent: bool
) -> None:
    registry = CollectorRegistry()
    async with RoomEventPublisher(
        bootstrap=kafka_bootstrap, topic=topic, idempotent=idempotent, registry=registry
    ) as publisher:
        for n in range(50):
            await publisher.send(_chat("room-m", n))
    labels = {"topic": topic}
    assert registry.get_sample_value("roomlogs_publisher_events_sent_total", labels) == 50
    assert registry.get_sample_value("roomlogs_publisher_events_acked_total", labels) == 50
    assert registry.get_sample_value("roomlogs_publisher_send_errors_total", labels) == 0
    assert registry.get_sample_value("roomlogs_publisher_buffered_events", labels) == 0

    # a broker that goes away: what could not be delivered shows up as send errors
    broker = EmbeddedKafka(tmp_path / "kafka")
    broker.start()
    lost_registry = CollectorRegistry()
    lost = RoomEventPublisher(
        bootstrap=broker.bootstrap,
        topic="t",
        idempotent=False,
        registry=lost_registry,
        linger_seconds=30.0,
        request_timeout_seconds=2.0,
    )
    await lost.start()
    for n in range(20):
        await lost.send(_chat("room-m", n))
    broker.stop()
    with pytest.raises(DeliveryError):
        await lost.close()
    assert lost_registry.get_sample_value("roomlogs_publisher_send_errors_total", {"topic": "t"}) == 20
