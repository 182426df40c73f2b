"""Legal holds: held rooms survive retention, every other room in the same partition is deleted on time."""

from __future__ import annotations

from datetime import timedelta

import asyncpg
import pytest
from conftest import StoreEvents
from prometheus_client import CollectorRegistry
from retention_support import NOON, TODAY, days_ago, event_days

from pipeline.retention import (
    HoldNotFoundError,
    InvalidHoldError,
    RetentionMetrics,
    check_retention,
    list_holds,
    maintain,
    place_hold,
    read_ledger,
    release_hold,
)
from pipeline.settings import Settings


async def _rooms_stored(conn: asyncpg.Connection, table: str) -> dict[str, int]:
    rows = await conn.fetch(f"SELECT room_id, count(*) AS n FROM {table} GROUP BY 1 ORDER BY 1")
    return {r["room_id"]: r["n"] for r in rows}


async def test_held_room_survives_while_other_rooms_in_the_same_partition_are_dropped(
    conn: asyncpg.Connection, settings: Settings, store_events: StoreEvents
) -> None:
    expired, kept = days_ago(15), days_ago(2)
    await store_events("public", expired, {"held-room": 4, "other-1": 10, "other-2": 6})
    await store_events("public", kept, {"held-room": 2, "other-1": 3})
    hold = await place_hold(conn, "held-room", reason="case 2026-117", requested_by="support:ana", now=NOON)
    registry = CollectorRegistry()

    report = await maintain(conn, settings, RetentionMetrics(registry), now=NOON)

    assert [(d.partition, d.row_count, d.rows_held) for d in report.dropped] == [
        ("events_public_p20260305", 20, 4)
    ]
    assert expired not in await event_days(conn, "public")  # the partition is gone, not detached
    assert await _rooms_stored(conn, "held_events") == {"held-room": 4}
    assert await _rooms_stored(conn, "events") == {"held-room": 2, "other-1": 3}  # not expired: untouched
    # the preserved rows are whole rows, readable with the live ones
    assert await conn.fetchval("SELECT count(*) FROM stored_events WHERE room_id = 'held-room'") == 6
    assert await conn.fetchval("SELECT count(*) FROM stored_events WHERE held AND body IS NOT NULL") == 4
    [entry] = await read_ledger(conn)
    assert (entry.row_count, entry.rows_held, entry.rows_deleted) == (20, 4, 16)
    assert registry.get_sample_value("roomlogs_retention_rows_held_total") == 4
    assert (
        registry.get_sample_value("roomlogs_retention_rows_deleted_total", {"table": "events_public"}) == 16
    )
    assert registry.get_sample_value("roomlogs_held_rows_stored") == 4
    assert registry.get_sample_value("roomlogs_legal_holds_active") == 1
    # rows kept for an active hold are not "older than retention" in the check's sense
    assert not (await check_retention(conn, today=TODAY, dead_letter_retention_days=7)).overdue
    # held rows can neither be edited nor deleted without authorization
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await conn.execute("DELETE FROM held_events")
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await conn.execute("UPDATE held_events SET body = 'x'")
    assert hold.active


async def test_held_rows_stay_across_runs_while_the_hold_is_active(
    conn: asyncpg.Connection, settings: Settings, store_events: StoreEvents
) -> None:
    await store_events("busy_public", days_ago(4), {"h": 3, "x": 3})
    await place_hold(conn, "h", reason="police request", requested_by="support:bo", now=NOON)
    await maintain(conn, settings, now=NOON)
    for later in (1, 10, 100):
        report = await maintain(conn, settings, now=NOON + timedelta(days=later))
        assert report.purged_held == []
    assert await _rooms_stored(conn, "held_events") == {"h": 3}


async def test_released_hold_falls_back_to_retention_and_is_deleted_on_the_next_run(
    conn: asyncpg.Connection, settings: Settings, store_events: StoreEvents
) -> None:
    await store_events("private", days_ago(31), {"h": 5, "x": 1})
    await store_events("private", days_ago(32), {"h": 2})
    await store_events("private", days_ago(1), {"h": 7})
    hold = await place_hold(conn, "h", reason="case 9", requested_by="support:ana", now=NOON)
    await maintain(conn, settings, now=NOON)
    assert await _rooms_stored(conn, "held_events") == {"h": 7}

    await release_hold(conn, hold.hold_id, released_by="support:ana", now=NOON + timedelta(hours=1))
    before = await check_retention(conn, today=TODAY, dead_letter_retention_days=7)
    assert [(o.name, o.day, o.rows) for o in before.offending] == [
        ("held_events", days_ago(32), 2),
        ("held_events", days_ago(31), 5),
    ]
    dry = await maintain(conn, settings, now=NOON + timedelta(hours=2), dry_run=True)
    assert [(p.day, p.rows) for p in dry.would_purge_held] == [(days_ago(32), 2), (days_ago(31), 5)]
    assert await _rooms_stored(conn, "held_events") == {"h": 7}

    report = await maintain(conn, settings, now=NOON + timedelta(hours=2))

    assert [(p.retention_class, p.day, p.rows) for p in report.purged_held] == [
        ("private", days_ago(32), 2),
        ("private", days_ago(31), 5),
    ]
    assert await _rooms_stored(conn, "held_events") == {}
    assert await _rooms_stored(conn, "events") == {"h": 7}  # its day is still within retention
    purges = [e for e in await read_ledger(conn) if e.action == "purge_held"]
    assert [(e.table_name, e.retention_class, e.day, e.row_count, e.retention_days) for e in purges] == [
        ("held_events", "private", days_ago(32), 2, 30),
        ("held_events", "private", days_ago(31), 5, 30),
    ]
    assert not (await check_retention(conn, today=TODAY, dead_letter_retention_days=7)).overdue


async def test_released_rows_wait_for_their_own_retention(
    conn: asyncpg.Connection, settings: Settings, store_events: StoreEvents
) -> None:
    # Preserved under a 3-day class, which is then lengthened: after release they stay until the new horizon.
    await store_events("busy_public", days_ago(4), {"h": 2})
    hold = await place_hold(conn, "h", reason="r", requested_by="s", now=NOON)
    await maintain(conn, settings, now=NOON)
    await conn.execute("UPDATE retention_classes SET retention_days = 10 WHERE name = 'busy_public'")
    await release_hold(conn, hold.hold_id, released_by="s", now=NOON)

    assert (await maintain(conn, settings, now=NOON + timedelta(days=6))).purged_held == []
    later = await maintain(conn, settings, now=NOON + timedelta(days=7))
    assert [(p.day, p.rows) for p in later.purged_held] == [(days_ago(4), 2)]


async def test_a_room_with_two_holds_stays_held_until_both_are_released(
    conn: asyncpg.Connection, settings: Settings, store_events: StoreEvents
) -> None:
    await store_events("busy_public", days_ago(4), {"h": 2})
    first = await place_hold(conn, "h", reason="case A", requested_by="s1", now=NOON)
    second = await place_hold(conn, "h", reason="case B", requested_by="s2", now=NOON)
    await maintain(conn, settings, now=NOON)
    await release_hold(conn, first.hold_id, released_by="s1", now=NOON)
    assert (await maintain(conn, settings, now=NOON)).purged_held == []
    await release_hold(conn, second.hold_id, released_by="s2", now=NOON)
    assert [p.rows for p in (await maintain(conn, settings, now=NOON)).purged_held] == [2]


async def test_holds_are_records_with_who_and_why(conn: asyncpg.Connection) -> None:
    hold = await place_hold(conn, "room-9", reason=" case 1 ", requested_by="support:ana", now=NOON)
    assert (hold.room_id, hold.reason, hold.requested_by, hold.placed_at) == (
        "room-9",
        "case 1",
        "support:ana",
        NOON,
    )
    with pytest.raises(InvalidHoldError):
        await place_hold(conn, "room-9", reason="  ", requested_by="support:ana", now=NOON)
    with pytest.raises(InvalidHoldError):
        await place_hold(conn, "room-9", reason="case", requested_by="", now=NOON)

    released = await release_hold(
        conn, hold.hold_id, released_by="support:bo", now=NOON + timedelta(days=1), reason="case closed"
    )
    assert (released.released_by, released.release_reason, released.active) == (
        "support:bo",
        "case closed",
        False,
    )
    with pytest.raises(HoldNotFoundError, match="already released"):
        await release_hold(conn, hold.hold_id, released_by="support:bo", now=NOON)
    with pytest.raises(HoldNotFoundError, match="no legal hold 999"):
        await release_hold(conn, 999, released_by="support:bo", now=NOON)
    assert await list_holds(conn) == []
    assert [h.hold_id for h in await list_holds(conn, include_released=True)] == [hold.hold_id]
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await conn.execute("DELETE FROM legal_holds")
