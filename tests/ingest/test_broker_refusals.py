"""What the worker does when the Apache Kafka cluster refuses it mid-stream, and that nothing is lost.

- A dead letter too large for the dead-letter topic: stored in PostgreSQL as always, mirrored to the topic
  as a reference (its coordinates and size), and ingest goes on.
- Its read ACL revoked while it runs: the worker exits (non-zero) rather than idle; when the ACL is back, a
  restarted worker stores everything from where the last batch left off.
"""

from __future__ import annotations

import asyncio
import secrets
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiokafka.structs import ConsumerRecord
from broker_lanes import APP_USER, SecuredCluster, grant, secure_settings

from pipeline.cli.devstack import spawn_worker
from pipeline.cli.progress import wait_caught_up
from pipeline.publisher import RoomEventPublisher
from pipeline.publisher import events as ev
from pipeline.settings import Settings
from pipeline.stack import free_port
from pipeline.storage import db

pytestmark = [pytest.mark.apache_lane, pytest.mark.slow]

TopicFactory = Callable[..., Awaitable[str]]
Consume = Callable[..., Awaitable[list[ConsumerRecord]]]


def _chat(n: int) -> dict[str, Any]:
    return ev.chat_message(f"room-{n % 7}", ev.user("u-1", "Ann"), f"m{n}", event_id=str(uuid.uuid4()))


async def _fetch(settings: Settings, sql: str) -> list[Any]:
    conn = await db.connect(settings.postgres_dsn.get(), settings.postgres_schema)
    try:
        return list(await conn.fetch(sql))
    finally:
        await conn.close()


async def test_a_dead_letter_too_large_for_its_topic_is_stored_and_mirrored_as_a_reference(
    ingest_settings: Settings, ingest_worker: Any, topic_factory: TopicFactory, consume: Consume
) -> None:
    small_dlq = await topic_factory(partitions=1, prefix="dlq-small-", config={"max.message.bytes": "1200"})
    s = ingest_settings.replace(dead_letter_topic=small_dlq)
    bad = _chat(1)
    # kept in the dead letter's view; random, so that compression cannot make it fit the topic
    bad["data"]["text"] = secrets.token_urlsafe(1490)
    del bad["actor"]  # what makes it a dead letter
    async with RoomEventPublisher.from_settings(s, validate=False) as publisher:
        await publisher.send(_chat(0))
        await publisher.send(bad)
        await publisher.send(_chat(2))

    async with ingest_worker(s) as w:
        assert await w.caught_up(60)
        mirrored = await consume(small_dlq, 1)
    assert len(await _fetch(s, "SELECT event_id FROM events")) == 2  # its neighbours are stored
    assert len(await _fetch(s, "SELECT reason FROM dead_letters")) == 1  # the record of it is kept
    (reference,) = mirrored  # and the dead-letter topic says where to find it
    assert dict(reference.headers)["roomlogs.truncated"] == b"true"
    assert len(reference.value) < 1200


async def test_a_worker_whose_read_acl_is_revoked_exits_and_a_restart_loses_nothing(
    secured_cluster: SecuredCluster, ingest_settings: Settings, tmp_path: Path
) -> None:
    plain = ingest_settings
    cluster = secured_cluster.cluster
    grant(
        cluster,
        APP_USER,
        topics=[
            plain.events_topic,
            plain.dead_letter_topic,
            plain.deletions_topic,
            plain.alerts_topic,
            f"{plain.consumer_group}-app",
        ],
        groups=[plain.consumer_group],
    )
    secure = plain.replace(
        **secure_settings(secured_cluster, APP_USER),
        metrics_port=free_port(),
        worker_data_dir=str(tmp_path / "worker"),
    )
    sent: list[dict[str, Any]] = []

    async def publish(count: int) -> None:
        async with RoomEventPublisher.from_settings(plain) as publisher:
            for _ in range(count):
                event = _chat(len(sent))
                await publisher.send(event)
                sent.append(event)

    await publish(200)
    worker = spawn_worker(secure, tmp_path / "worker-1.log")
    try:
        assert await wait_caught_up(plain, 120, progress=False)
        await asyncio.to_thread(
            cluster.acl_command,
            "--remove", "--force", "--allow-principal", f"User:{APP_USER.name}", "--operation", "All",
            "--topic", plain.events_topic, "--resource-pattern-type", "prefixed",
        )  # fmt: skip
        await publish(200)
        code = await asyncio.to_thread(worker.wait, 180)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    assert code != 0, "a worker that may no longer read its topic must not idle as if healthy"

    grant(cluster, APP_USER, topics=[plain.events_topic], groups=[])
    worker = spawn_worker(secure.replace(metrics_port=free_port()), tmp_path / "worker-2.log")
    try:
        assert await wait_caught_up(plain, 120, progress=False)
    finally:
        worker.terminate()
        await asyncio.to_thread(worker.wait, 60)
    stored = [str(r["event_id"]) for r in await _fetch(plain, "SELECT event_id FROM events")]
    assert sorted(stored) == sorted(e["event_id"] for e in sent)
