"""The local Apache Kafka cluster: one pinned version everywhere, and faults on one node lose nothing.

The fault tests use the Apache lane's session cluster (3 nodes, replication 3, min.insync.replicas=2) and
bring the node back before they end.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka.structs import ConsumerRecord

from pipeline.errors import MissingDependencyError
from pipeline.publisher import DeliveryError, RoomEventPublisher, TopicNotFoundError
from pipeline.publisher import events as ev
from pipeline.stack.cluster import KAFKA_VERSION, KafkaCluster, broker_classpath

ROOT = Path(__file__).resolve().parents[2]
TopicFactory = Callable[..., Awaitable[str]]
Consume = Callable[..., Awaitable[list[ConsumerRecord]]]


def test_the_pom_the_compose_file_and_the_code_run_the_same_kafka() -> None:
    pom = (ROOT / "deploy" / "kafka" / "pom.xml").read_text()
    assert re.search(r"<kafka.version>([^<]+)</kafka.version>", pom).group(1) == KAFKA_VERSION  # type: ignore[union-attr]
    compose = (ROOT / "docker-compose.yml").read_text()
    assert set(re.findall(r"image: apache/kafka:(\S+)", compose)) == {KAFKA_VERSION}


def test_without_the_broker_jars_start_says_how_to_get_them(tmp_path: Path) -> None:
    with pytest.raises(MissingDependencyError, match="make kafka-broker"):
        broker_classpath(tmp_path)
    with pytest.raises(MissingDependencyError, match="make kafka-broker"):
        KafkaCluster(tmp_path / "c", nodes=1, home=tmp_path).start()


def _chat(n: int) -> dict[str, Any]:
    return ev.chat_message(f"room-{n % 5}", ev.user("u-1", "Ann"), f"m{n}", event_id=str(uuid.uuid4()))


@pytest.mark.apache_lane
@pytest.mark.slow
async def test_kill_9_of_the_partition_leader_mid_stream_loses_and_duplicates_nothing(
    apache_cluster: KafkaCluster, topic_factory: TopicFactory, consume: Consume
) -> None:
    """acks=all with idempotence: every event the publisher saw acknowledged is there once, after the
    leader of its partition was killed -9 mid-stream and restarted."""
    topic = await topic_factory(partitions=1, prefix="fault-")
    leader = await apache_cluster.leader(topic, 0)
    sent: list[dict[str, Any]] = []
    async with RoomEventPublisher(
        bootstrap=apache_cluster.bootstrap, topic=topic, idempotent=True, linger_seconds=0.01
    ) as publisher:
        for n in range(3000):
            event = _chat(n)
            await publisher.send(event)
            sent.append(event)
            if n == 1000:
                apache_cluster.kill9(leader)  # no controlled shutdown: in-flight batches are retried
            if n % 200 == 0:
                await asyncio.sleep(0.01)
        await publisher.flush()
        assert (publisher.acked, publisher.failed) == (3000, 0)
    assert await apache_cluster.leader(topic, 0) != leader  # the partition moved to a surviving replica
    await asyncio.to_thread(apache_cluster.restart, leader)
    assert apache_cluster.node(leader).running

    records = await consume(topic, len(sent), timeout_seconds=60)
    ids = [orjson.loads(r.value)["event_id"] for r in records]
    assert len(ids) == len(set(ids)) == 3000  # no duplicate from a retried batch
    assert set(ids) == {e["event_id"] for e in sent}


@pytest.mark.apache_lane
async def test_a_cleanly_stopped_node_comes_back_on_its_data(
    apache_cluster: KafkaCluster, topic_factory: TopicFactory, consume: Consume
) -> None:
    topic = await topic_factory(partitions=1, prefix="stop-")
    node = apache_cluster.nodes[-1]
    await asyncio.to_thread(apache_cluster.stop_node, node)
    assert not node.running and node.log_path.exists()
    async with RoomEventPublisher(bootstrap=apache_cluster.bootstrap, topic=topic, idempotent=True) as pub:
        for n in range(10):  # two of three replicas in sync: acks=all still succeeds
            await pub.send(_chat(n))
    await asyncio.to_thread(apache_cluster.restart, node)
    assert node.running and node.pid is not None
    assert len(await consume(topic, 10)) == 10


@pytest.mark.apache_lane
async def test_a_record_the_broker_refuses_as_too_large_is_reported_not_lost_silently(
    apache_cluster: KafkaCluster, topic_factory: TopicFactory, consume: Consume
) -> None:
    topic = await topic_factory(partitions=1, prefix="small-", config={"max.message.bytes": "4096"})
    big = ev.chat_message("room-b", ev.user("u-1", "Ann"), "x" * 1990, event_id=str(uuid.uuid4()))
    publisher = RoomEventPublisher(
        bootstrap=apache_cluster.bootstrap, topic=topic, idempotent=True, compression="none",
        linger_seconds=0.0,
    )  # fmt: skip
    await publisher.start()
    try:
        await publisher.send(_chat(1))
        await publisher.flush()
        for _ in range(3):  # one request larger than the topic allows
            await publisher.send(big)
        with pytest.raises(DeliveryError) as caught:
            await publisher.flush()
        assert type(caught.value.last_error).__name__ == "MessageSizeTooLargeError"
        assert caught.value.failed >= 1 and publisher.failed == caught.value.failed
        await publisher.send(_chat(2))  # the publisher carries on
        await publisher.flush()
    finally:
        with pytest.raises(DeliveryError):  # close() reports every event that never arrived
            await publisher.close()
    records = await consume(topic, 2 + 3 - publisher.failed)
    assert len(records) == publisher.acked == 2 + 3 - publisher.failed


@pytest.mark.apache_lane
async def test_a_missing_topic_is_named_at_start_when_auto_creation_is_off(
    apache_cluster: KafkaCluster,
) -> None:
    publisher = RoomEventPublisher(
        bootstrap=apache_cluster.bootstrap, topic="nobody-made-this", idempotent=True,
        request_timeout_seconds=3.0,
    )  # fmt: skip
    with pytest.raises(TopicNotFoundError, match="nobody-made-this"):
        await publisher.start()
