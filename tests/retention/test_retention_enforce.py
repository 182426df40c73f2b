"""Enforcement: each class drops exactly its expired days, dead letters too, proven by the ledger."""

from __future__ import annotations

from datetime import timedelta

import asyncpg
from conftest import StoreDeadLetters, StoreEvents
from prometheus_client import CollectorRegistry
from retention_support import NOON, TODAY, at_noon, days_ago, dead_letter_days, event_days

from pipeline.metrics import IngestMetrics
from pipeline.retention import RetentionMetrics, check_retention, maintain, read_ledger, set_retention_days
from pipeline.settings import Settings
from pipeline.storage import db

CLASSES = {"busy_public": 3, "public": 14, "private": 30}


async def test_each_class_drops_exactly_its_expired_days(
    conn: asyncpg.Connection,
    settings: Settings,
    store_events: StoreEvents,
    store_dead_letters: StoreDeadLetters,
) -> None:
    stored = [days_ago(n) for n in range(33)]  # today and the 32 days before it
    for cls in CLASSES:
        for day in stored:
            await store_events(cls, day, {"room-a": 2, "room-b": 1})
    for n in range(10):
        await store_dead_letters(days_ago(n), 4)

    report = await maintain(conn, settings, now=NOON)

    assert report.outcome == "ok", report.render()
    for cls, keep in CLASSES.items():
        horizon = TODAY - timedelta(days=keep)
        kept = [d for d in stored if d >= horizon]
        made_ahead = [TODAY + timedelta(days=i) for i in (1, 2)]
        assert await event_days(conn, cls) == sorted(kept + made_ahead), cls
        # the oldest day kept is exactly `keep` days back: rows stay at least `keep` full days
        assert min(await event_days(conn, cls)) == days_ago(keep)
    assert await dead_letter_days(conn) == [days_ago(n) for n in range(7, -3, -1)]
    # rows of days kept are all still there
    since = at_noon(days_ago(14)) - timedelta(hours=12)
    assert await conn.fetchval("SELECT count(*) FROM events_public WHERE occurred_at >= $1", since) == 15 * 3

    expected = {("events", cls, d) for cls, keep in CLASSES.items() for d in stored if d < days_ago(keep)}
    expected |= {("dead_letters", None, days_ago(n)) for n in (8, 9)}
    assert {(d.table, d.retention_class, d.day) for d in report.dropped} == expected


async def test_ledger_rows_match_what_was_dropped(
    conn: asyncpg.Connection,
    settings: Settings,
    store_events: StoreEvents,
    store_dead_letters: StoreDeadLetters,
) -> None:
    await store_events("busy_public", days_ago(4), {"r1": 5, "r2": 7})
    await store_events("busy_public", days_ago(5), {"r1": 1})
    await store_events("busy_public", days_ago(3), {"r1": 9})  # kept
    await store_dead_letters(days_ago(8), 3)

    report = await maintain(conn, settings, now=NOON)
    entries = await read_ledger(conn, run_id=report.run_id)

    assert sorted((e.table_name, e.partition_name, e.day, e.row_count, e.rows_held) for e in entries) == [
        ("dead_letters", "dead_letters_p20260312", days_ago(8), 3, 0),
        ("events", "events_busy_public_p20260315", days_ago(5), 1, 0),
        ("events", "events_busy_public_p20260316", days_ago(4), 12, 0),
    ]
    assert all(e.action == "drop_partition" and e.as_of == TODAY for e in entries)
    assert {e.retention_days for e in entries if e.table_name == "events"} == {3}
    assert {e.retention_days for e in entries if e.table_name == "dead_letters"} == {7}
    # each ledger row is a partition that no longer exists
    for e in entries:
        assert await conn.fetchval("SELECT to_regclass($1)", e.partition_name) is None
    run = await conn.fetchrow("SELECT * FROM maintenance_runs WHERE run_id = $1", report.run_id)
    assert run["outcome"] == "ok" and run["partitions_dropped"] == 3 and run["rows_deleted"] == 16
    # the ledger is append-only
    for sql in ("DELETE FROM deletion_ledger", "UPDATE deletion_ledger SET row_count = 0"):
        try:
            await conn.execute(sql)
        except asyncpg.InsufficientPrivilegeError:
            pass
        else:
            raise AssertionError(f"{sql} was allowed")

    again = await maintain(conn, settings, now=NOON)
    assert again.dropped == [] and again.outcome == "ok"
    assert len(await read_ledger(conn)) == 3


async def test_changing_a_class_retention_at_runtime_changes_what_is_dropped(
    conn: asyncpg.Connection, settings: Settings, store_events: StoreEvents
) -> None:
    for n in range(0, 16):
        await store_events("public", days_ago(n), {"room": 1})
    first = await maintain(conn, settings, now=NOON)
    assert [d.day for d in first.dropped] == [days_ago(15)]

    assert await set_retention_days(conn, "public", 5, changed_by="dpo@example.org", reason="policy v2") == (
        14,
        5,
    )
    second = await maintain(conn, settings, now=NOON)

    assert sorted(d.day for d in second.dropped) == [days_ago(n) for n in range(14, 5, -1)]
    assert min(await event_days(conn, "public")) == days_ago(5)
    assert {e.retention_days for e in await read_ledger(conn, run_id=second.run_id)} == {5}
    audit = await conn.fetchrow("SELECT old_days, new_days, changed_by, reason FROM retention_class_changes")
    assert tuple(audit) == (14, 5, "dpo@example.org", "policy v2")

    # lengthening keeps what is still there longer (and cannot bring back what is gone)
    await set_retention_days(conn, "public", 30, changed_by="dpo@example.org")
    third = await maintain(conn, settings, now=NOON + timedelta(days=3))
    assert third.dropped == []
    assert min(await event_days(conn, "public")) == days_ago(5)


async def test_dry_run_drops_nothing_and_lists_what_it_would(
    conn: asyncpg.Connection,
    settings: Settings,
    store_events: StoreEvents,
    store_dead_letters: StoreDeadLetters,
) -> None:
    await store_events("busy_public", days_ago(4), {"r1": 3})
    await store_events("busy_public", days_ago(2), {"r1": 1})
    await store_dead_letters(days_ago(9), 2)
    tables = "SELECT relname FROM pg_class WHERE relnamespace = current_schema()::regnamespace ORDER BY 1"
    before = [r["relname"] for r in await conn.fetch(tables)]

    report = await maintain(conn, settings, now=NOON, dry_run=True)

    assert report.dry_run and report.dropped == [] and report.created == 0
    assert sorted((d.partition, d.row_count) for d in report.would_drop) == [
        ("dead_letters_p20260311", 2),
        ("events_busy_public_p20260316", 3),
    ]
    assert [r["relname"] for r in await conn.fetch(tables)] == before
    assert await conn.fetchval("SELECT count(*) FROM maintenance_runs") == 0
    assert await read_ledger(conn) == []
    assert "would drop events_busy_public_p20260316 (3 rows" in report.render()


async def test_check_says_yes_with_the_offending_partitions_then_no_after_enforcement(
    conn: asyncpg.Connection,
    settings: Settings,
    store_events: StoreEvents,
    store_dead_letters: StoreDeadLetters,
) -> None:
    await store_events("private", days_ago(31), {"r": 2})
    await store_events("private", days_ago(30), {"r": 2})
    await store_dead_letters(days_ago(8), 1)

    before = await check_retention(conn, today=TODAY, dead_letter_retention_days=7)
    assert before.overdue
    assert [(o.name, o.rows) for o in before.offending] == [
        ("dead_letters_p20260312", 1),
        ("events_private_p20260217", 2),
    ]
    assert before.render().startswith("yes: 2 item(s)")

    await maintain(conn, settings, now=NOON)
    after = await check_retention(conn, today=TODAY, dead_letter_retention_days=7)
    assert not after.overdue and after.render().startswith("no:")
    # tomorrow the private day 30 back expires too
    assert [
        o.name
        for o in (
            await check_retention(conn, today=TODAY + timedelta(days=1), dead_letter_retention_days=7)
        ).offending
    ] == ["events_private_p20260218"]


async def test_a_catch_all_partition_is_reported_not_trusted(
    conn: asyncpg.Connection, settings: Settings, store_events: StoreEvents
) -> None:
    # roomlogs makes no DEFAULT partition; if someone attaches one, its rows are under no retention rule
    await store_events("public", days_ago(1), {"r": 1})
    await conn.execute("CREATE TABLE events_public_default PARTITION OF events_public DEFAULT")
    await conn.execute(
        """INSERT INTO events (event_id, occurred_at, retention_class, room_id, event_type, schema_version,
                               payload, src_partition, src_offset)
           VALUES (gen_random_uuid(), $1, 'public', 'r', 'chat_message', 1, '{}'::jsonb, 0, 1)""",
        NOON - timedelta(days=400),
    )
    registry = CollectorRegistry()
    metrics = RetentionMetrics(registry)

    report = await maintain(conn, settings, metrics, now=NOON)
    result = await check_retention(conn, today=TODAY, dead_letter_retention_days=7)

    assert report.unruled == ["events_public_default: a DEFAULT (catch-all) partition: rows of any day"]
    assert await conn.fetchval("SELECT to_regclass('events_public_default')") is not None  # never guessed at
    assert [(o.name, o.rows) for o in result.offending] == [("events_public_default", 1)]
    assert registry.get_sample_value("roomlogs_catchall_partition_rows") == 1


async def test_metrics_report_the_lifecycle(
    conn: asyncpg.Connection,
    settings: Settings,
    store_events: StoreEvents,
    store_dead_letters: StoreDeadLetters,
) -> None:
    registry = CollectorRegistry()
    IngestMetrics(registry)  # both live in the worker's registry: no name may collide
    metrics = RetentionMetrics(registry)
    await store_events("busy_public", days_ago(5), {"r": 4})
    await store_events("busy_public", days_ago(3), {"r": 1})
    await store_dead_letters(days_ago(1), 1)

    await maintain(conn, settings, metrics, now=NOON)

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, labels)

    assert value("roomlogs_partitions_ahead_days", table="events_busy_public") == 2
    assert value("roomlogs_partitions_ahead_days", table="events_private") == 2
    assert value("roomlogs_partitions_ahead_days", table="dead_letters") == 2
    assert value("roomlogs_oldest_partition_age_seconds", table="events_busy_public") == 3.5 * 86_400
    assert value("roomlogs_oldest_partition_age_seconds", table="events_private") == 0.5 * 86_400
    assert value("roomlogs_retention_period_seconds", table="events_busy_public") == 3 * 86_400
    assert value("roomlogs_retention_period_seconds", table="dead_letters") == 7 * 86_400
    assert value("roomlogs_expired_partitions", table="events_busy_public") == 0
    assert value("roomlogs_retention_partitions_dropped_total", table="events_busy_public") == 1
    assert value("roomlogs_retention_rows_deleted_total", table="events_busy_public") == 4
    # today .. today+2 for each class and dead letters, plus the class tables events_public / events_private
    assert value("roomlogs_maintenance_partitions_created_total") == 4 * 3 + 2
    assert value("roomlogs_maintenance_last_success_timestamp_seconds") == NOON.timestamp()
    assert value("roomlogs_maintenance_failures_total", stage="run") == 0
    assert value("roomlogs_catchall_partition_rows") == 0
    assert value("roomlogs_legal_holds_active") == 0


async def test_the_worker_entry_point_uses_the_pool_and_refreshes_the_ingest_cache(
    settings: Settings, conn: asyncpg.Connection, store_events: StoreEvents, postgres_dsn: str, pg_schema: str
) -> None:
    from pipeline.retention import run_maintenance
    from pipeline.storage.partitions import PartitionManager

    await store_events("busy_public", days_ago(9), {"r": 1})
    cache = PartitionManager()
    await cache.load(conn)
    pool = await db.create_pool(postgres_dsn, pg_schema, 2)
    try:
        report = await run_maintenance(
            pool, settings, RetentionMetrics(CollectorRegistry()), now=NOON, partitions=cache
        )
    finally:
        await pool.close()
    assert [d.day for d in report.dropped] == [days_ago(9)]
    assert ("busy_public", days_ago(9)) not in cache.event_days()
    assert ("busy_public", TODAY + timedelta(days=2)) in cache.event_days()
