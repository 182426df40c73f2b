"""Fixtures for the retention tests: a migrated schema, a connection to it, and a way to store log rows.

Rows go in with binary COPY through the partitioned parents, into day partitions made by PartitionManager,
exactly as the ingest writer stores them. The clock is a fixed day (`retention_support.TODAY`), passed
explicitly to every call.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from datetime import date

import asyncpg
import pytest
from retention_support import dead_letter_records, event_records

from pipeline.settings import Secret, Settings
from pipeline.storage import db
from pipeline.storage.batch import DEAD_LETTER_COLUMNS, EVENT_COLUMNS
from pipeline.storage.migrate import migrate
from pipeline.storage.partitions import PartitionManager

StoreEvents = Callable[[str, date, Mapping[str, int]], Awaitable[None]]
StoreDeadLetters = Callable[[date, int], Awaitable[None]]


@pytest.fixture
async def settings(postgres_dsn: str, pg_schema: str) -> Settings:
    return Settings(
        postgres_dsn=Secret(postgres_dsn),
        postgres_schema=pg_schema,
        partitions_ahead_days=2,
        dead_letter_retention_days=7,
    )


@pytest.fixture
async def conn(postgres_dsn: str, pg_schema: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection to a freshly migrated schema (0001 + 0002)."""
    connection = await db.connect(postgres_dsn, pg_schema)
    await migrate(connection, pg_schema)
    try:
        yield connection
    finally:
        await connection.close()


Connect = Callable[[], Awaitable[asyncpg.Connection]]


@pytest.fixture
async def connect(postgres_dsn: str, pg_schema: str) -> AsyncIterator[Connect]:
    """More connections to the same schema (other maintainers, long readers); closed after the test."""
    opened: list[asyncpg.Connection] = []

    async def open_one() -> asyncpg.Connection:
        c = await db.connect(postgres_dsn, pg_schema)
        opened.append(c)
        return c

    yield open_one
    for c in opened:
        if not c.is_closed():
            await c.close()


@pytest.fixture
def store_events(conn: asyncpg.Connection) -> StoreEvents:
    """``await store_events(cls, day, {room_id: rows})``: COPY rows spread over that UTC day."""

    async def store(cls: str, day: date, per_room: Mapping[str, int]) -> None:
        manager = PartitionManager()
        await manager.load(conn)
        await manager.ensure(conn, [(cls, day)])
        await conn.copy_records_to_table(
            "events", records=event_records(cls, day, per_room), columns=EVENT_COLUMNS
        )

    return store


@pytest.fixture
def store_dead_letters(conn: asyncpg.Connection) -> StoreDeadLetters:
    async def store(day: date, n: int) -> None:
        manager = PartitionManager()
        await manager.load(conn)
        await manager.ensure(conn, [], [day])
        records = dead_letter_records(day, n)
        await conn.copy_records_to_table("dead_letters", records=records, columns=DEAD_LETTER_COLUMNS)

    return store
