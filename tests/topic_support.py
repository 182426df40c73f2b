"""Events, topics and rows for the tests of the offsets of record (tests/ingest/test_log_changes.py,
tests/cli/test_offsets.py): chat events with unique ids, published by room; topics made and removed on a
given broker; queries on a test's schema."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import uuid_utils
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from pipeline.settings import Settings
from pipeline.storage import db

NOW = datetime.now(UTC)


def _event(room: str, n: int) -> dict[str, Any]:
    return {
        "event_id": str(uuid_utils.uuid7()),
        "type": "chat.message",
        "schema_version": 1,
        "room_id": room,
        "occurred_at": (NOW - timedelta(seconds=600 - n * 0.01)).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "actor": {"user_id": f"u-{n % 17}"},
        "data": {"text": f"line {n}"},
    }


def events(count: int, *, start: int = 0) -> list[dict[str, Any]]:
    return [_event(f"room-{(start + i) % 23}", start + i) for i in range(count)]


async def publish(bootstrap: str, topic: str, batch: list[dict[str, Any]], *, by_room: bool = True) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        for e in batch:
            key = e["room_id"].encode() if by_room else str(random.random()).encode()
            await producer.send(topic, orjson.dumps(e), key=key)
        await producer.flush()
    finally:
        await producer.stop()


async def create_topic(bootstrap: str, topic: str, partitions: int, replication: int = 1) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        for _ in range(100):  # a topic being deleted cannot be created again at once
            response = await admin.create_topics([NewTopic(topic, partitions, replication)])
            if not any(code for _, code, *_ in response.topic_errors):
                return
            await asyncio.sleep(0.2)
        raise AssertionError(f"could not create {topic}: {response.topic_errors}")
    finally:
        await admin.close()


async def delete_topic(bootstrap: str, topic: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.delete_topics([topic])
        for _ in range(100):  # gone from every broker's metadata
            if topic not in await admin.list_topics():
                return
            await asyncio.sleep(0.2)
    finally:
        await admin.close()


async def sql(settings: Settings, query: str, *args: Any) -> list[Any]:
    conn = await db.connect(settings.postgres_dsn.get(), settings.postgres_schema)
    try:
        return list(await conn.fetch(query, *args))
    finally:
        await conn.close()


async def stored_ids(settings: Settings) -> list[str]:
    return [str(r["event_id"]) for r in await sql(settings, "SELECT event_id FROM events")]


async def changes(settings: Settings) -> list[Any]:
    return await sql(settings, "SELECT * FROM offset_changes ORDER BY change_id")


async def wait_for_rows(settings: Settings, count: int, within_seconds: float = 90.0) -> int:
    """Rows in `events`, once they reach `count` (or the time ran out)."""
    deadline = asyncio.get_running_loop().time() + within_seconds
    n = 0
    while asyncio.get_running_loop().time() < deadline:
        n = (await sql(settings, "SELECT count(*) AS n FROM events"))[0]["n"]
        if n >= count:
            return int(n)
        await asyncio.sleep(0.2)
    return int(n)
