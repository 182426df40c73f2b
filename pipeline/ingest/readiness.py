"""Readiness of an ingest worker: can it ingest right now? Served at /readyz by the worker app.

Not ready: ingest paused for an outage, PostgreSQL unreachable, no Kafka broker answering, or a problem the
topic watch found (pipeline/ingest/watch.py: the events topic missing, this worker left out of its group's
assignment while partitions wait). Having no partitions is not a failure by itself (a group with more
workers than partitions has idle ones: `idle` says so). `notices` names what the judgement of the offsets
of record found while it lasts (pipeline/ingest/positions.py: a new log being read again, records deleted
unread found lately, the database behind Kafka): ingest is working, and says what it is doing about it.
Each check is live and bounded (`PROBE_SECONDS`); an answer is reused for `CACHE_SECONDS` because probes
come often.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import asyncpg
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from pipeline.storage.db import CONNECTION_ERRORS

PROBE_SECONDS = 2.0
CACHE_SECONDS = 1.0


class Readiness:
    def __init__(self) -> None:
        self._answer: dict[str, Any] = {}
        self._at = 0.0

    async def check(
        self,
        pool: asyncpg.Pool,
        producer: AIOKafkaProducer | None,
        *,
        paused: bool,
        partitions: list[int],
        problem: str | None = None,
        idle: str | None = None,
        notices: list[dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        now = time.monotonic()
        if self._answer and now - self._at < CACHE_SECONDS:
            return self._answer
        postgres, kafka = await asyncio.gather(_probe_postgres(pool), _probe_kafka(producer))
        if problem is None:  # what stops ingest, in words (the topic watch's finding comes first)
            if postgres is not None:
                problem = f"PostgreSQL is {postgres}: ingest waits for it"
            elif kafka is not None:
                problem = f"no Kafka broker answers ({kafka}): ingest waits for it"
            elif paused:
                problem = "ingest is paused (an outage is being waited out)"
        self._answer = {
            "ready": not paused and postgres is None and kafka is None and problem is None,
            "paused": paused,
            "postgres": "ok" if postgres is None else postgres,
            "kafka": "ok" if kafka is None else kafka,
            "partitions": partitions,
            "problem": problem,
            "idle": idle if not partitions else None,
            "notices": notices or [],
        }
        self._at = now
        return self._answer


async def _probe_postgres(pool: asyncpg.Pool) -> str | None:
    try:
        async with asyncio.timeout(PROBE_SECONDS):
            async with pool.acquire() as conn:
                await conn.fetchval("SELECT 1")
    except CONNECTION_ERRORS as e:  # TimeoutError among them
        return f"unreachable: {type(e).__name__}"
    return None


async def _probe_kafka(producer: AIOKafkaProducer | None) -> str | None:
    if producer is None:
        return "not started"
    try:
        async with asyncio.timeout(PROBE_SECONDS):
            await producer.client.fetch_all_metadata()
    except (TimeoutError, KafkaError, OSError) as e:
        return f"unreachable: {type(e).__name__}"
    return None
