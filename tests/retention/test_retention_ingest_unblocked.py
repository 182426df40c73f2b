"""Retention never makes ingest wait: ingest's COPY goes on while partitions are detached and dropped.

Ingest here is what the writer does: binary COPY into `events` and `dead_letters` (the partitioned
parents), in a transaction, from a connection of its own. Whether it waited for a lock is read from
PostgreSQL (`pg_stat_activity`, `pg_locks`, `pg_blocking_pids`), not from the clock.
"""

from __future__ import annotations

import asyncio

import asyncpg
import pytest
from conftest import Connect, StoreDeadLetters, StoreEvents
from retention_support import (
    BLOCKS_WRITES,
    NOON,
    TODAY,
    days_ago,
    dead_letter_records,
    event_records,
    finishes_or_waits,
    lock_wait,
    make_partitions_ahead,
    relation_locks,
    until_waiting,
)

from pipeline.retention import maintain, read_ledger
from pipeline.settings import Settings
from pipeline.storage.batch import DEAD_LETTER_COLUMNS, EVENT_COLUMNS

#: Longer than any test: a drop that waits for a reader keeps waiting until the test releases the reader.
WAIT_FOR_READER_MS = 600_000
EXPIRED = f"events_public_p{days_ago(15):%Y%m%d}"
TODAY_PARTITION = f"events_public_p{TODAY:%Y%m%d}"


async def _ingest(ingest: asyncpg.Connection, n: int) -> None:
    """One batch as the writer stores it: COPY today's events and dead letters (the caller's transaction)."""
    await ingest.copy_records_to_table(
        "events", records=event_records("public", TODAY, {"live": n}), columns=EVENT_COLUMNS
    )
    await ingest.copy_records_to_table(
        "dead_letters", records=dead_letter_records(TODAY, n), columns=DEAD_LETTER_COLUMNS
    )


@pytest.mark.parametrize(
    "reads",
    [
        pytest.param(f"SELECT count(*) FROM {EXPIRED}", id="reader-of-the-expired-partition"),
        pytest.param(
            "SELECT count(*) FROM events WHERE retention_class = 'public'", id="reader-of-the-class"
        ),
    ],
)
async def test_ingest_writes_while_a_drop_waits_for_a_long_reader(
    conn: asyncpg.Connection,
    settings: Settings,
    store_events: StoreEvents,
    store_dead_letters: StoreDeadLetters,
    connect: Connect,
    reads: str,
) -> None:
    await store_dead_letters(days_ago(8), 2)  # expired too: dropped by the same run
    await store_events("public", days_ago(15), {"old": 3})
    await store_events("public", TODAY, {"live": 1})
    await make_partitions_ahead(conn, settings.partitions_ahead_days)
    reader = await connect()
    reading = reader.transaction()
    await reading.start()
    await reader.fetchval(reads)  # its transaction keeps ACCESS SHARE on what it read until it ends
    monitor, ingest = await connect(), await connect()
    maintenance_pid, ingest_pid = conn.get_server_pid(), ingest.get_server_pid()

    run = asyncio.create_task(maintain(conn, settings, now=NOON, lock_timeout_ms=WAIT_FOR_READER_MS))
    try:
        await until_waiting(monitor, maintenance_pid)  # the drop now waits for the reader
        writing = ingest.transaction()
        await writing.start()
        copied = asyncio.create_task(_ingest(ingest, 50))
        ingest_waited = await finishes_or_waits(copied, monitor, ingest_pid)
        ingest_holds = await relation_locks(monitor, ingest_pid)
        maintenance_holds = await relation_locks(monitor, maintenance_pid)
        still_waiting = await lock_wait(monitor, maintenance_pid)
        await writing.commit()
    finally:
        await reading.rollback()
        report = await run

    assert ingest_waited is None, f"ingest waited for a lock while retention ran: {ingest_waited}"
    assert still_waiting is not None  # the batch was stored while the drop was still waiting for the reader
    # ingest writes with ROW EXCLUSIVE on the parents and today's partitions...
    written = {rel for rel, _, _ in ingest_holds}
    assert {("events", "RowExclusiveLock", True), ("events_public", "RowExclusiveLock", True)} <= ingest_holds
    assert {
        (TODAY_PARTITION, "RowExclusiveLock", True),
        ("dead_letters", "RowExclusiveLock", True),
    } <= ingest_holds
    # ...and the waiting drop neither holds nor waits for any lock on those tables that writes would wait for
    assert [lock for lock in maintenance_holds if lock[0] in written and lock[1] in BLOCKS_WRITES] == []
    assert report.outcome == "ok", report.render()
    assert {d.partition for d in report.dropped} == {EXPIRED, f"dead_letters_p{days_ago(8):%Y%m%d}"}
    assert sorted(e.partition_name for e in await read_ledger(conn)) == sorted(
        d.partition for d in report.dropped
    )
    assert await conn.fetchval("SELECT count(*) FROM events WHERE room_id = 'live'") == 51
    assert await conn.fetchval("SELECT count(*) FROM dead_letters") == 50


async def test_ingest_never_waits_while_retention_drops_many_partitions(
    conn: asyncpg.Connection,
    settings: Settings,
    store_events: StoreEvents,
    store_dead_letters: StoreDeadLetters,
    connect: Connect,
) -> None:
    for n in range(4, 10):
        await store_events("busy_public", days_ago(n), {"a": 400, "b": 100})
        await store_events("public", days_ago(n + 11), {"a": 400})
        await store_dead_letters(days_ago(n + 4), 200)
    await store_events("public", TODAY, {"live": 1})
    await make_partitions_ahead(conn, settings.partitions_ahead_days)
    monitor, ingest = await connect(), await connect()
    ingest_pid = ingest.get_server_pid()
    stop = asyncio.Event()
    batches_during_run = 0

    async def keep_ingesting() -> None:
        nonlocal batches_during_run
        while not stop.is_set():
            async with ingest.transaction():
                await _ingest(ingest, 20)
            batches_during_run += 1

    run = asyncio.create_task(maintain(conn, settings, now=NOON))
    writer = asyncio.create_task(keep_ingesting())
    ingest_waited: str | None = None
    while not run.done() and ingest_waited is None:
        ingest_waited = await lock_wait(monitor, ingest_pid)
        await asyncio.sleep(0)
    stop.set()
    report = await run
    await writer

    assert ingest_waited is None, f"ingest waited for a lock while retention ran: {ingest_waited}"
    assert batches_during_run > 0
    assert report.outcome == "ok" and len(report.dropped) == 18, report.render()
    assert (
        await conn.fetchval("SELECT count(*) FROM events WHERE room_id = 'live'")
        == 1 + 20 * batches_during_run
    )


async def test_making_partitions_ahead_never_makes_ingest_wait(
    conn: asyncpg.Connection, settings: Settings, store_events: StoreEvents, connect: Connect
) -> None:
    """The first run of a day creates days ahead (and class tables) while a long reader holds the class:
    creating them must not wait for the reader, so ingest never queues behind it."""
    await store_events("public", TODAY, {"live": 1})  # the first run of the day: no partitions ahead yet
    reader = await connect()
    reading = reader.transaction()
    await reading.start()
    await reader.fetchval("SELECT count(*) FROM events")  # holds every class table and `events` itself
    monitor, ingest = await connect(), await connect()
    try:
        run = asyncio.create_task(maintain(conn, settings, now=NOON))
        maintenance_waited = await finishes_or_waits(run, monitor, conn.get_server_pid())
        assert maintenance_waited is None, f"making partitions ahead waited for: {maintenance_waited}"
        writing = ingest.transaction()
        await writing.start()
        copied = asyncio.create_task(_ingest(ingest, 5))
        ingest_waited = await finishes_or_waits(copied, monitor, ingest.get_server_pid())
        await writing.commit()
    finally:
        await reading.rollback()
    assert ingest_waited is None, f"ingest waited for a lock while retention ran: {ingest_waited}"
    report = run.result()
    assert report.created > 0 and report.error is None, report.render()
