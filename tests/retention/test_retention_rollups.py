"""A day of events dropped by retention takes its rollup tables (migration 0016) with it, in the same
transaction; a run that stopped after detaching the day of events, or with a rollup table left detach
pending, is finished by the next run; the rollups of the days kept are untouched."""

from __future__ import annotations

import uuid
from datetime import date

import asyncpg
from conftest import Connect, StoreEvents
from retention_support import NOON, TODAY, days_ago
from rollup_support import assert_rollups_match_rows

from pipeline.retention import detach, ledger, maintain
from pipeline.retention.catalog import list_partitions
from pipeline.settings import Settings
from pipeline.storage import catalog, rollups

EXPIRED = days_ago(15)  # public keeps 14 days
KEPT = days_ago(2)
EVENTS_DAY = f"events_public_p{EXPIRED:%Y%m%d}"


async def _states(conn: asyncpg.Connection, day: date) -> list[str | None]:
    """The state of the day's room_hours and room_day_actors tables (None: dropped)."""
    return [await catalog.state_of(conn, name) for _, _, name in rollups.day_partitions("public", day)]


async def _rolled_up(conn: asyncpg.Connection) -> int:
    return int(await conn.fetchval("SELECT coalesce(sum(events), 0) FROM room_hours"))


async def test_a_dropped_day_takes_its_rollups_with_it(
    conn: asyncpg.Connection, settings: Settings, store_events: StoreEvents
) -> None:
    await store_events("public", EXPIRED, {"r1": 3, "r2": 2})
    await store_events("public", KEPT, {"r1": 4})
    assert await _rolled_up(conn) == 9

    report = await maintain(conn, settings, now=NOON)

    assert [d.partition for d in report.dropped] == [EVENTS_DAY], report.render()
    assert await _states(conn, EXPIRED) == [None, None]
    assert await _states(conn, KEPT) == ["attached", "attached"]
    assert await _rolled_up(conn) == 4
    await assert_rollups_match_rows(conn)


async def test_a_run_that_died_after_detaching_the_day_of_events_drops_its_rollups_next(
    conn: asyncpg.Connection, settings: Settings, store_events: StoreEvents
) -> None:
    await store_events("public", EXPIRED, {"r1": 3})
    await store_events("public", KEPT, {"r1": 4})
    [sp] = [p for p in await list_partitions(conn) if p.name == EVENTS_DAY]
    run_id = uuid.uuid4()
    await ledger.start_run(conn, run_id, TODAY)
    await detach.begin(conn, sp, 14, run_id, TODAY)
    await detach.concurrently(conn, sp, 1_000)  # then the run died: its rollups are still attached
    assert await _states(conn, EXPIRED) == ["attached", "attached"]

    report = await maintain(conn, settings, now=NOON)

    assert [(d.partition, d.resumed) for d in report.dropped] == [(EVENTS_DAY, True)], report.render()
    assert await _states(conn, EXPIRED) == [None, None]
    await assert_rollups_match_rows(conn)


async def test_a_rollup_table_left_detach_pending_is_finished_by_the_next_run(
    conn: asyncpg.Connection, settings: Settings, store_events: StoreEvents, connect: Connect
) -> None:
    await store_events("public", EXPIRED, {"r1": 3})
    await store_events("public", KEPT, {"r1": 4})
    reader = await connect()
    reading = reader.transaction()
    await reading.start()
    await reader.fetchval("SELECT count(*) FROM room_hours WHERE retention_class = 'public'")  # the calendar

    stopped = await maintain(conn, settings, now=NOON, lock_timeout_ms=300)

    assert stopped.dropped == [] and stopped.outcome == "partial", stopped.render()
    assert "room_hours_public" in stopped.render()
    assert await catalog.state_of(conn, EVENTS_DAY) == "detached"
    assert await _states(conn, EXPIRED) == ["detach_pending", "attached"]
    await reading.commit()

    report = await maintain(conn, settings, now=NOON)

    assert [(d.partition, d.resumed) for d in report.dropped] == [(EVENTS_DAY, True)], report.render()
    assert await _states(conn, EXPIRED) == [None, None]
    assert await _rolled_up(conn) == 4
    await assert_rollups_match_rows(conn)
