"""A run that stops between the steps of a drop (killed, or a lock timeout) leaves nothing half-done.

Whatever step a run reached (the detach recorded, detach pending, detached), the day's rows are no longer
live data (queries through `events` / `dead_letters` do not see them), `retention check` still counts
them, and the next run finishes the drop and writes its ledger row exactly once.
"""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import pytest
from conftest import Connect, StoreDeadLetters, StoreEvents
from retention_support import NOON, TODAY, days_ago, make_partitions_ahead, until_waiting

from pipeline.retention import (
    check_retention,
    detach,
    ledger,
    maintain,
    partition_status,
    place_hold,
    read_ledger,
    set_retention_days,
)
from pipeline.retention.catalog import StoredPartition, list_partitions
from pipeline.settings import Settings
from pipeline.storage import catalog

WAIT_UNTIL_KILLED_MS = 600_000
EVENTS_DAY = f"events_public_p{days_ago(15):%Y%m%d}"
DEAD_LETTERS_DAY = f"dead_letters_p{days_ago(8):%Y%m%d}"


async def _live_rows(conn: asyncpg.Connection) -> tuple[int, int]:
    """Rows queries see through the partitioned tables: (old events, old dead letters)."""
    events = await conn.fetchval("SELECT count(*) FROM events WHERE room_id IN ('h', 'x')")
    dead_letters = await conn.fetchval("SELECT count(*) FROM dead_letters WHERE received_at < $1", NOON)
    return events, dead_letters


async def _ledger_rows(conn: asyncpg.Connection, partition: str) -> int:
    return sum(1 for e in await read_ledger(conn) if e.partition_name == partition)


@pytest.mark.parametrize(
    ("blocker", "partition", "left"),
    [
        pytest.param("class_reader", EVENTS_DAY, "detach_pending", id="waiting-for-readers-of-the-class"),
        pytest.param("day_reader", DEAD_LETTERS_DAY, "detach_pending", id="waiting-for-a-reader-of-the-day"),
        pytest.param("hold", EVENTS_DAY, "detached", id="waiting-for-a-hold-being-placed"),
    ],
)
async def test_a_run_killed_mid_drop_is_finished_by_the_next_run(
    conn: asyncpg.Connection,
    settings: Settings,
    store_events: StoreEvents,
    store_dead_letters: StoreDeadLetters,
    connect: Connect,
    blocker: str,
    partition: str,
    left: str,
) -> None:
    await store_events("public", days_ago(15), {"h": 2, "x": 3})
    await store_events("public", TODAY, {"today": 1})
    await make_partitions_ahead(conn, settings.partitions_ahead_days)
    other = await connect()
    blocking = other.transaction()
    if blocker == "day_reader":
        await store_dead_letters(days_ago(8), 4)
        await blocking.start()
        await other.fetchval(f"SELECT count(*) FROM {DEAD_LETTERS_DAY}")
    elif blocker == "class_reader":
        await blocking.start()
        await other.fetchval("SELECT count(*) FROM events WHERE retention_class = 'public'")
    else:  # support is placing a hold on room h: not committed yet
        await blocking.start()
        await place_hold(other, "h", reason="case 12", requested_by="support:ana", now=NOON)
    monitor = await connect()
    maintenance_pid = conn.get_server_pid()

    run = asyncio.create_task(maintain(conn, settings, now=NOON, lock_timeout_ms=WAIT_UNTIL_KILLED_MS))
    await until_waiting(monitor, maintenance_pid)
    await monitor.execute("SELECT pg_terminate_backend($1)", maintenance_pid)  # the worker died here
    killed = await run
    await blocking.commit()

    assert killed.error is not None and killed.dropped == []
    assert await catalog.state_of(monitor, partition) == left
    # out of the live data, yet still stored: check counts it, the metrics' state counts it
    rows = 4 if partition == DEAD_LETTERS_DAY else 5
    assert await _live_rows(monitor) == ((5, 0) if partition == DEAD_LETTERS_DAY else (0, 0))
    check = await check_retention(monitor, today=TODAY, dead_letter_retention_days=7)
    [offending] = [o for o in check.offending if o.name == partition]
    assert offending.rows == rows and "the next run drops it" in offending.why
    parent = "dead_letters" if partition == DEAD_LETTERS_DAY else "events_public"
    status = await partition_status(monitor, today=TODAY, dead_letter_retention_days=7)
    assert [s.expired for s in status if s.table == parent] == [1]
    assert await _ledger_rows(monitor, partition) == 0

    finisher = await connect()
    report = await maintain(finisher, settings, now=NOON)

    assert report.outcome == "ok", report.render()
    [done] = [d for d in report.dropped if d.partition == partition]
    assert (done.row_count, done.resumed) == (rows, True)
    if blocker == "hold":
        assert done.rows_held == 2  # the hold committed meanwhile: honoured by the run that finished it
        assert await monitor.fetchval("SELECT count(*) FROM held_events WHERE room_id = 'h'") == 2
    assert await monitor.fetchval("SELECT to_regclass($1)", partition) is None
    assert await monitor.fetchval("SELECT count(*) FROM retention_detaching") == 0
    assert not (await check_retention(monitor, today=TODAY, dead_letter_retention_days=7)).overdue
    again = await maintain(finisher, settings, now=NOON)
    assert again.dropped == [] and again.outcome == "ok"
    assert await _ledger_rows(monitor, partition) == 1


@pytest.mark.parametrize("partition", [EVENTS_DAY, DEAD_LETTERS_DAY])
async def test_a_day_detached_by_a_run_that_died_before_dropping_it_is_dropped_once(
    conn: asyncpg.Connection,
    settings: Settings,
    store_events: StoreEvents,
    store_dead_letters: StoreDeadLetters,
    partition: str,
) -> None:
    await store_events("public", days_ago(15), {"x": 3})
    await store_dead_letters(days_ago(8), 4)
    # steps 1 and 2 of a run that then died: the detach recorded, then done
    [sp] = [p for p in await _stored(conn) if p.name == partition]
    run_id = await _started_run(conn)
    await detach.begin(conn, sp, 14 if sp.table == "events" else 7, run_id, TODAY)
    await detach.concurrently(conn, sp, 1_000)
    assert await catalog.state_of(conn, partition) == "detached"
    assert (await check_retention(conn, today=TODAY, dead_letter_retention_days=7)).overdue
    dry = await maintain(conn, settings, now=NOON, dry_run=True)
    assert [(d.partition, d.resumed) for d in dry.would_drop if d.partition == partition] == [
        (partition, True)
    ]

    report = await maintain(conn, settings, now=NOON)

    assert report.outcome == "ok", report.render()
    assert [(d.partition, d.resumed) for d in report.dropped if d.partition == partition] == [
        (partition, True)
    ]
    assert "detach begun by an earlier run" in report.render()
    assert await _ledger_rows(conn, partition) == 1
    assert not (await check_retention(conn, today=TODAY, dead_letter_retention_days=7)).overdue


async def test_a_detach_recorded_but_never_begun_is_decided_afresh(
    conn: asyncpg.Connection, settings: Settings, store_events: StoreEvents
) -> None:
    await store_events("public", days_ago(15), {"x": 3})
    await store_events("private", days_ago(31), {"x": 2})
    run_id = await _started_run(conn)
    stored = {p.name: p for p in await _stored(conn)}
    # a run recorded both detaches, then died before either began
    for name in (EVENTS_DAY, f"events_private_p{days_ago(31):%Y%m%d}"):
        await detach.begin(conn, stored[name], 14, run_id, TODAY)
    # meanwhile private's retention was lengthened: its day is no longer expired
    await set_retention_days(conn, "private", 60, changed_by="dpo")

    report = await maintain(conn, settings, now=NOON)

    assert [(d.partition, d.resumed) for d in report.dropped] == [(EVENTS_DAY, False)]
    assert await _ledger_rows(conn, EVENTS_DAY) == 1
    assert await conn.fetchval("SELECT count(*) FROM events WHERE retention_class = 'private'") == 2
    assert await conn.fetchval("SELECT count(*) FROM retention_detaching") == 0


async def test_a_day_detached_by_hand_is_reported_and_left_alone(
    conn: asyncpg.Connection, settings: Settings, store_events: StoreEvents
) -> None:
    await store_events("public", days_ago(3), {"x": 3})
    name = f"events_public_p{days_ago(3):%Y%m%d}"
    await conn.execute(f"ALTER TABLE events_public DETACH PARTITION {name}")

    check = await check_retention(conn, today=TODAY, dead_letter_retention_days=7)
    report = await maintain(conn, settings, now=NOON)

    [offending] = check.offending
    assert (offending.name, offending.rows) == (name, 3)
    assert "detached from events_public outside retention" in offending.why
    assert report.dropped == [] and report.unruled == [f"{name}: {offending.why}"]
    assert await catalog.state_of(conn, name) == "detached"


async def _stored(conn: asyncpg.Connection) -> list[StoredPartition]:
    return await list_partitions(conn)


async def _started_run(conn: asyncpg.Connection) -> uuid.UUID:
    run_id = uuid.uuid4()
    await ledger.start_run(conn, run_id, TODAY)
    return run_id
