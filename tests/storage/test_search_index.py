"""Chat search indexes on sealed days, against a real PostgreSQL: maintenance builds them on the sealed
day's partitions only; the API's text search finds the same rows with them as without them, and reads them
on the sealed day while the live day is searched as before; a build that gave up leaves an invalid index,
which the next run rebuilds; retention still drops an indexed partition, index and all.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from db_roles import login_as

from pipeline.api.params import EventFilters, TimeRange
from pipeline.api.queries.events import ordered_select, room_events, room_query
from pipeline.errors import ConfigurationError
from pipeline.evidence.keys import SealKey
from pipeline.retention import maintain
from pipeline.sealing.run import seal_closed_days, seal_in_maintenance
from pipeline.settings import Secret, Settings
from pipeline.storage import db
from pipeline.storage.batch import EVENT_COLUMNS
from pipeline.storage.migrate import migrate
from pipeline.storage.partitions import PartitionManager, event_partition
from pipeline.storage.search_index import build_sealed, index_name, search_indexes

NOW = datetime.now(UTC)
TODAY = NOW.date()
SEALED = TODAY - timedelta(days=2)
#: enough rows that the planner prefers the index for a rare word (it would not on a handful)
PER_DAY = 3000
WORDS = ("hello", "room", "party", "über", "ÜBER", "dance", "gift", "world")
ODD_LINES = ("100% legit_offer", "robert'); DROP TABLE events;--", "naïve Straße", "t_o and back\\slash")
#: what the API is asked: rare words, no hit, LIKE's own characters, case and accents
SEARCHES = ("legit", "nothing-matches-this", "100%", "t_o", "%%%", "'); DROP", "über", "straße", "\\sl", "o")


def day_rows(cls: str, day: date, n: int, rng: random.Random) -> list[tuple[Any, ...]]:
    at = datetime.combine(day, time.min, tzinfo=UTC)
    rows = []
    for i in range(n):
        body: str | None = " ".join(rng.choices(WORDS, k=4)) if i % 10 else None  # some rows carry no text
        if i % 97 == 0:
            body = ODD_LINES[(i // 97) % len(ODD_LINES)]
        moment = at + timedelta(seconds=i * 86_000 / n)
        rows.append((uuid.uuid4(), moment, cls, f"r{i % 3}", "chat.message", 1, f"u{i % 7}", None, body,
                     {"text": body}, 0, i))  # fmt: skip
    return rows


@pytest.fixture
async def conn(postgres_dsn: str, pg_schema: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await db.connect(postgres_dsn, pg_schema)
    await migrate(connection, pg_schema)
    try:
        yield connection
    finally:
        await connection.close()


@pytest.fixture
def settings(postgres_dsn: str, pg_schema: str) -> Settings:
    return Settings(postgres_dsn=Secret(postgres_dsn), postgres_schema=pg_schema)


@pytest.fixture
def key(tmp_path: Path) -> SealKey:
    return SealKey.generate(tmp_path / "seal.pem")


async def store(conn: asyncpg.Connection, records: list[tuple[Any, ...]]) -> None:
    manager = PartitionManager()
    await manager.load(conn)
    await manager.ensure(conn, {(r[2], r[1].date()) for r in records})
    await conn.copy_records_to_table("events", records=records, columns=EVENT_COLUMNS)
    await conn.execute("ANALYZE events")


async def world(conn: asyncpg.Connection) -> None:
    """A sealed day with rows of two classes (two leaf partitions) and a live day, each PER_DAY rows."""
    rng = random.Random(17)
    await store(conn, day_rows("public", SEALED, PER_DAY, rng) + day_rows("private", SEALED, 40, rng))
    await store(conn, day_rows("public", TODAY, PER_DAY, rng))


async def searches(conn: asyncpg.Connection) -> dict[str, list[uuid.UUID]]:
    """Each of SEARCHES in room r1 over both days, newest first, as the API runs it (all pages)."""
    rng = TimeRange(datetime.combine(SEALED, time.min, tzinfo=UTC), NOW + timedelta(days=1))
    found = {}
    for text in SEARCHES:
        rows = await room_events(conn, "r1", rng, EventFilters(text=text), "desc", None, 5_000)
        found[text] = [r["event_id"] for r in rows]
    return found


async def plan(conn: asyncpg.Connection, text: str) -> str:
    """EXPLAIN of the API's text search for `text` in room r1 over both days, planned for its pattern."""
    rng = TimeRange(datetime.combine(SEALED, time.min, tzinfo=UTC), NOW + timedelta(days=1))
    q = room_query("r1", rng, EventFilters(text=text), "desc", None)
    async with conn.transaction(readonly=True):
        await conn.execute("SET LOCAL plan_cache_mode = force_custom_plan")
        return "\n".join(r[0] for r in await conn.fetch("EXPLAIN " + ordered_select(q, "desc", 101), *q.args))


async def test_sealing_indexes_the_sealed_days_partitions_and_never_the_live_day(
    conn: asyncpg.Connection, settings: Settings, key: SealKey
) -> None:
    await world(conn)
    pool = await db.create_pool(settings.postgres_dsn.get(), settings.postgres_schema, 1)
    try:
        report = await seal_in_maintenance(pool, settings, key, None)
        assert report is not None and report.days == [SEALED] and report.search is not None
        built = {b.partition for b in report.search.built}
        again = await seal_in_maintenance(pool, settings, key, None)
    finally:
        await pool.close()
    sealed = {event_partition("public", SEALED), event_partition("private", SEALED)}
    assert built == sealed
    assert await search_indexes(conn) == dict.fromkeys(sealed, True)  # the live day has none
    assert again is not None and again.search is not None and again.search.built == []  # built once


async def test_text_search_finds_the_same_rows_with_the_index_and_uses_it_on_sealed_days_only(
    conn: asyncpg.Connection, settings: Settings, key: SealKey, postgres_dsn: str, pg_schema: str
) -> None:
    await world(conn)
    await seal_closed_days(conn, settings, key, now=NOW)
    # the API's own role: it needs no grant to use the index
    api = await db.connect(await login_as(postgres_dsn, f"{pg_schema}_api"), pg_schema)
    try:
        without = await searches(api)
        assert without["legit"] and without["über"] and without["o"] and not without["nothing-matches-this"]
        report = await build_sealed(conn, today=TODAY)
        assert len(report.built) == 2 and report.deferred == []
        assert await searches(api) == without
        for text in ("nothing-matches-this", "legit"):
            explained = await plan(api, text)
            # the sealed day reads its index; the live day reads the room's rows as before
            assert f"Bitmap Index Scan on {index_name(event_partition('public', SEALED))}" in explained
            live = event_partition("public", TODAY)
            assert index_name(live) not in explained and f"on {live}_room_id_occurred_at_idx" in explained
    finally:
        await api.close()


async def test_a_build_that_gave_up_leaves_an_invalid_index_that_the_next_run_rebuilds(
    conn: asyncpg.Connection, settings: Settings, key: SealKey, postgres_dsn: str
) -> None:
    await world(conn)
    await seal_closed_days(conn, settings, key, now=NOW)
    public = event_partition("public", SEALED)
    # a transaction with an older snapshot (a long export, a backup): the build waits for it to end
    reader = await asyncpg.connect(postgres_dsn)
    try:
        async with reader.transaction(isolation="repeatable_read"):
            await reader.fetchval("SELECT 1")
            gave_up = await build_sealed(conn, today=TODAY, lock_timeout_ms=200)
    finally:
        await reader.close()
    assert {p for p, _ in gave_up.deferred} >= {public} and public not in {b.partition for b in gave_up.built}
    assert (await search_indexes(conn))[public] is False  # left behind, invalid: no query reads it
    expected = await searches(conn)  # still right meanwhile

    rebuilt = await build_sealed(conn, today=TODAY)
    assert {b.partition for b in rebuilt.built if b.rebuilt} >= {public} and rebuilt.deferred == []
    assert set((await search_indexes(conn)).values()) == {True}
    assert await searches(conn) == expected


async def test_retention_drops_an_indexed_partition_and_expired_days_are_not_indexed(
    conn: asyncpg.Connection, settings: Settings, key: SealKey
) -> None:
    rng = random.Random(3)
    await store(conn, day_rows("busy_public", SEALED, 200, rng))  # kept 3 days
    await seal_closed_days(conn, settings, key, now=NOW)
    assert [b.partition for b in (await build_sealed(conn, today=TODAY)).built] == [
        event_partition("busy_public", SEALED)
    ]
    later = NOW + timedelta(days=2)  # SEALED is past its 3 days then
    assert (await build_sealed(conn, today=later.date())).built == []
    await conn.execute(f"DROP INDEX {index_name(event_partition('busy_public', SEALED))}")
    assert (await build_sealed(conn, today=later.date())).built == []  # expired: not built again

    await build_sealed(conn, today=TODAY)
    report = await maintain(conn, settings, now=later)
    assert [(d.day, d.retention_class) for d in report.dropped if d.table == "events"] == [
        (SEALED, "busy_public")
    ]
    assert await search_indexes(conn) == {}
    assert await conn.fetchval("SELECT to_regclass($1)", event_partition("busy_public", SEALED)) is None


async def test_without_the_extensions_maintenance_says_the_fix_and_goes_on(
    postgres_dsn: str, settings: Settings, key: SealKey, caplog: pytest.LogCaptureFixture
) -> None:
    # a database of its own: dropping an extension in the shared one would take other tests' indexes along
    name = f"noext_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(postgres_dsn)
    await admin.execute(f'CREATE DATABASE "{name}"')
    dsn = postgres_dsn.rsplit("/", 1)[0] + f"/{name}"
    try:
        conn = await db.connect(dsn, settings.postgres_schema)
        try:
            await migrate(conn, settings.postgres_schema)
            await world(conn)
            await conn.execute("DROP EXTENSION btree_gin")  # e.g. a schema restored into another database
            pool = await db.create_pool(dsn, settings.postgres_schema, 1)
            there = settings.replace(postgres_dsn=Secret(dsn))
            try:
                report = await seal_in_maintenance(pool, there, key, None)
            finally:
                await pool.close()
            assert report is not None and report.days == [SEALED] and report.search is None  # sealed anyway
            assert "CREATE EXTENSION IF NOT EXISTS btree_gin SCHEMA public;" in caplog.text
            assert await search_indexes(conn) == {}
            with pytest.raises(ConfigurationError, match="btree_gin"):
                await build_sealed(conn, today=TODAY)
        finally:
            await conn.close()
    finally:
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        for role in (f"{settings.postgres_schema}_api", f"{settings.postgres_schema}_worker"):
            await admin.execute(f'DROP ROLE IF EXISTS "{role}"')
        await admin.close()
