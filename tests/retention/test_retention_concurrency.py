"""Maintenance among other sessions: a second maintainer, a long reader, a hold placed mid-drop."""

from __future__ import annotations

import asyncio

import asyncpg
from conftest import Connect, StoreEvents
from prometheus_client import CollectorRegistry
from retention_support import NOON, TODAY, days_ago, event_days

from pipeline.retention import (
    RetentionMetrics,
    check_retention,
    maintain,
    maintenance_lock,
    place_hold,
    read_ledger,
)
from pipeline.settings import Settings

LOCK_TIMEOUT_MS = 300


async def test_a_second_maintainer_reports_and_does_nothing(
    conn: asyncpg.Connection, settings: Settings, store_events: StoreEvents, connect: Connect
) -> None:
    await store_events("busy_public", days_ago(5), {"r": 1})
    other = await connect()
    assert await maintenance_lock(other)  # another worker is mid-run
    registry = CollectorRegistry()

    report = await maintain(conn, settings, RetentionMetrics(registry), now=NOON)

    assert report.outcome == "skipped" and report.skipped == "another maintainer is running"
    assert report.dropped == [] and report.created == 0
    assert days_ago(5) in await event_days(conn, "busy_public")
    assert registry.get_sample_value("roomlogs_maintenance_skipped_total") == 1
    assert registry.get_sample_value("roomlogs_maintenance_last_success_timestamp_seconds") == 0
    assert "skipped: another maintainer is running" in report.render()

    await other.close()  # the other worker finished (or died): its session lock is gone with it
    assert [d.day for d in (await maintain(conn, settings, now=NOON)).dropped] == [days_ago(5)]


async def test_two_maintainers_at_once_never_drop_twice(
    conn: asyncpg.Connection, settings: Settings, store_events: StoreEvents, connect: Connect
) -> None:
    for n in range(4, 12):
        await store_events("busy_public", days_ago(n), {"r": 2})
    a, b = await connect(), await connect()

    reports = await asyncio.gather(maintain(a, settings, now=NOON), maintain(b, settings, now=NOON))

    assert all(r.error is None for r in reports), [r.render() for r in reports]
    dropped = [d.partition for r in reports for d in r.dropped]
    assert len(dropped) == len(set(dropped)) == 8
    assert sorted(e.partition_name for e in await read_ledger(conn)) == sorted(dropped)


async def test_a_long_reader_defers_the_drop_and_the_next_run_finishes_it(
    conn: asyncpg.Connection, settings: Settings, store_events: StoreEvents, connect: Connect
) -> None:
    await store_events("public", days_ago(15), {"r": 3})
    await store_events("private", days_ago(31), {"r": 2})
    reader = await connect()
    reading = reader.transaction()
    await reading.start()
    # an open transaction that has read the partition holds ACCESS SHARE on it until it ends
    assert await reader.fetchval("SELECT count(*) FROM events_public_p20260305") == 3
    registry = CollectorRegistry()

    report = await maintain(
        conn, settings, RetentionMetrics(registry), now=NOON, lock_timeout_ms=LOCK_TIMEOUT_MS
    )

    assert report.outcome == "partial"
    [deferred] = report.deferred
    assert (deferred.partition, deferred.reason) == ("events_public_p20260305", "lock_timeout")
    assert f"events_public_p20260305 in use by another session (pid {reader.get_server_pid()})" in (
        deferred.detail
    )
    # the detach had begun: the day left the live data, though its rows are still stored
    assert deferred.state == "detach_pending"
    assert "deferred events_public_p20260305: lock_timeout" in report.render()
    assert "nothing has expired" not in report.render()
    assert await conn.fetchval("SELECT count(*) FROM events WHERE retention_class = 'public'") == 0
    assert [d.partition for d in report.dropped] == ["events_private_p20260217"]  # others still dropped
    assert [e.partition_name for e in await read_ledger(conn)] == [
        "events_private_p20260217"
    ]  # nothing half-done
    assert (
        await conn.fetchval("SELECT outcome FROM maintenance_runs WHERE run_id = $1", report.run_id)
        == "partial"
    )
    assert (
        registry.get_sample_value("roomlogs_retention_partitions_deferred_total", {"table": "events_public"})
        == 1
    )
    assert registry.get_sample_value("roomlogs_expired_partitions", {"table": "events_public"}) == 1
    check = await check_retention(conn, today=TODAY, dead_letter_retention_days=7)
    assert [(o.name, o.rows) for o in check.offending] == [("events_public_p20260305", 3)]
    assert "detach pending" in check.render()

    await reading.rollback()  # the reader is done
    retry = await maintain(conn, settings, now=NOON, lock_timeout_ms=LOCK_TIMEOUT_MS)

    assert retry.outcome == "ok"
    assert [(d.partition, d.row_count, d.resumed) for d in retry.dropped] == [
        ("events_public_p20260305", 3, True)
    ]
    assert [e.partition_name for e in await read_ledger(conn)] == [
        "events_private_p20260217",
        "events_public_p20260305",
    ]
    assert not (await check_retention(conn, today=TODAY, dead_letter_retention_days=7)).overdue


async def test_a_reader_of_the_whole_class_costs_one_lock_timeout_not_one_per_partition(
    conn: asyncpg.Connection, settings: Settings, store_events: StoreEvents, connect: Connect
) -> None:
    for n in range(4, 14):
        await store_events("busy_public", days_ago(n), {"r": 1})
    reader = await connect()
    reading = reader.transaction()
    await reading.start()
    await reader.fetchval("SELECT count(*) FROM events WHERE retention_class = 'busy_public'")

    report = await maintain(conn, settings, now=NOON, lock_timeout_ms=LOCK_TIMEOUT_MS)
    await reading.rollback()

    assert len(report.deferred) == 10 and report.dropped == []
    first, *rest = report.deferred
    # the oldest day's detach began and waited for the reader; the others were not even tried (a class
    # table may have one pending detach at a time), so the run waited once, not once per partition
    assert first.state == "detach_pending" and f"(pid {reader.get_server_pid()})" in first.detail
    assert {(d.state, d.detail) for d in rest} == {
        ("attached", f"events_busy_public in use (see {first.partition})")
    }
    again = await maintain(conn, settings, now=NOON, lock_timeout_ms=LOCK_TIMEOUT_MS)
    assert again.outcome == "ok" and len(again.dropped) == 10
    assert [d.resumed for d in again.dropped] == [True] + [False] * 9


async def test_a_hold_being_placed_during_the_run_is_never_raced(
    conn: asyncpg.Connection, settings: Settings, store_events: StoreEvents, connect: Connect
) -> None:
    # Support is placing a hold (not committed yet) while maintenance runs: the drop must not go ahead
    # without it, so it waits (up to the lock timeout) for the hold's transaction, and defers if needed.
    await store_events("busy_public", days_ago(5), {"h": 2, "x": 1})
    support = await connect()
    placing = support.transaction()
    await placing.start()
    await place_hold(support, "h", reason="case", requested_by="support:ana", now=NOON)

    report = await maintain(conn, settings, now=NOON, lock_timeout_ms=LOCK_TIMEOUT_MS)

    assert [(d.partition, d.reason) for d in report.deferred] == [
        ("events_busy_public_p20260315", "lock_timeout")
    ]
    assert "legal_holds in use by another session" in report.deferred[0].detail
    # taken out of `events` already, its rows kept until the drop can honour the hold
    assert report.deferred[0].state == "detached"
    await placing.commit()
    retry = await maintain(conn, settings, now=NOON, lock_timeout_ms=LOCK_TIMEOUT_MS)
    assert [(d.row_count, d.rows_held) for d in retry.dropped] == [(3, 2)]
    assert await conn.fetchval("SELECT count(*) FROM held_events WHERE room_id = 'h'") == 2
