"""`roomlogs partitions` / `roomlogs retention` as an operator, cron or support runs them.

The commands read the real clock (they are the wiring layer), so rows here are placed relative to the real
UTC day. Each command runs in a thread, as `main()` would run it: with its own event loop and connection.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from conftest import Connect, StoreEvents
from retention_support import days_ago

from pipeline.cli.retention import COMMANDS, add_commands
from pipeline.retention import RetentionError, maintenance_lock
from pipeline.settings import Settings


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="roomlogs")
    add_commands(parser.add_subparsers(dest="command"))
    return parser.parse_args(argv)


async def roomlogs(settings: Settings, capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    args = _parse(list(argv))
    code = await asyncio.to_thread(COMMANDS[args.command], settings, args)
    return code, capsys.readouterr().out


async def test_check_then_enforce_then_check(
    conn: asyncpg.Connection,
    settings: Settings,
    store_events: StoreEvents,
    capsys: pytest.CaptureFixture[str],
) -> None:
    today = datetime.now(UTC).date()
    old = days_ago(5, today)
    await store_events("busy_public", old, {"r": 3})
    await store_events("busy_public", today, {"r": 1})
    name = f"events_busy_public_p{old:%Y%m%d}"

    code, out = await roomlogs(settings, capsys, "retention", "check")
    assert code == 1
    assert out.startswith("yes: 1 item(s)") and f"{name}  (3 rows)" in out
    code, out = await roomlogs(
        settings, capsys, "retention", "check", "--as-of", str(old + timedelta(days=3))
    )
    assert code == 0 and out.startswith("no:")  # on its last day of retention nothing is late

    # a bare `roomlogs retention` drops nothing: it lists what would go and asks for --apply
    code, out = await roomlogs(settings, capsys, "retention")
    assert code == 1 and f"would drop {name} (3 rows, retention 3 days)" in out
    assert out.rstrip().endswith("nothing was dropped; to drop these now: roomlogs retention enforce --apply")
    code, out = await roomlogs(settings, capsys, "retention", "enforce")
    assert code == 1 and f"would drop {name}" in out
    code, out = await roomlogs(settings, capsys, "retention", "enforce", "--dry-run", "--as-of", str(old))
    assert code == 0 and "nothing has expired" in out
    assert await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", name)

    code, out = await roomlogs(settings, capsys, "retention", "enforce", "--apply")
    assert code == 0, out
    assert f"dropped {name} (3 rows" in out and "outcome: ok" in out
    assert await conn.fetchval("SELECT to_regclass($1) IS NULL", name)

    code, out = await roomlogs(settings, capsys, "retention", "check")
    assert code == 0 and out.startswith("no:")
    code, out = await roomlogs(settings, capsys, "retention", "ledger")
    assert code == 0 and name in out and "drop_partition" in out


async def test_apply_on_the_retention_command_itself_drops_too(
    conn: asyncpg.Connection,
    settings: Settings,
    store_events: StoreEvents,
    capsys: pytest.CaptureFixture[str],
) -> None:
    old = days_ago(5, datetime.now(UTC).date())
    await store_events("busy_public", old, {"r": 2})
    code, out = await roomlogs(settings, capsys, "retention", "--apply")
    assert code == 0 and f"dropped events_busy_public_p{old:%Y%m%d} (2 rows" in out


async def test_enforcing_by_another_clock_or_both_ways_at_once_is_refused(
    conn: asyncpg.Connection, settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    future = str(datetime.now(UTC).date() + timedelta(days=60))
    with pytest.raises(RetentionError, match="not accepted with --apply"):
        await roomlogs(settings, capsys, "retention", "enforce", "--apply", "--as-of", future)
    with pytest.raises(RetentionError, match="give one of them"):
        await roomlogs(settings, capsys, "retention", "--dry-run", "enforce", "--apply")


async def test_a_deferred_drop_is_named_with_its_reason_not_nothing_has_expired(
    conn: asyncpg.Connection,
    settings: Settings,
    store_events: StoreEvents,
    capsys: pytest.CaptureFixture[str],
    connect: Connect,
    caplog: pytest.LogCaptureFixture,
) -> None:
    old = days_ago(5, datetime.now(UTC).date())
    name = f"events_busy_public_p{old:%Y%m%d}"
    await store_events("busy_public", old, {"r": 2})
    reader = await connect()
    reading = reader.transaction()
    await reading.start()
    await reader.fetchval(f"SELECT count(*) FROM {name}")  # an operator's long query on that very day

    with caplog.at_level(logging.INFO, logger="roomlogs.retention"):
        code, out = await roomlogs(settings, capsys, "retention", "enforce", "--apply")
    await reading.rollback()

    assert code == 1
    assert "nothing has expired" not in out
    expected = (
        f"deferred {name}: lock_timeout: {name} in use by another session (pid {reader.get_server_pid()})"
    )
    assert expected in out and "the next run finishes it" in out
    assert "outcome: partial" in out
    # the worker's log says it once: one record for the run, naming the partition once
    records = [r.getMessage() for r in caplog.records if name in r.getMessage()]
    assert len(records) == 1 and records[0].count(f"deferred {name}") == 1


async def test_second_maintainer_exits_zero_and_says_why(
    conn: asyncpg.Connection, settings: Settings, capsys: pytest.CaptureFixture[str], connect: Connect
) -> None:
    other = await connect()
    assert await maintenance_lock(other)
    code, out = await roomlogs(settings, capsys, "retention", "enforce", "--apply")
    assert code == 0 and "skipped: another maintainer is running" in out


async def test_support_places_lists_and_releases_a_hold(
    conn: asyncpg.Connection, settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = await roomlogs(
        settings, capsys, "retention", "hold", "place", "room-42", "--reason", "case 7", "--by", "support:ana"
    )
    assert code == 0 and out.startswith("hold 1 placed on room room-42")
    code, out = await roomlogs(settings, capsys, "retention", "hold", "list")
    assert code == 0 and "room-42" in out and "support:ana" in out and "case 7" in out
    assert await roomlogs(settings, capsys, "retention", "hold") == (code, out)  # alone: the same list

    code, out = await roomlogs(settings, capsys, "retention", "hold", "release", "1", "--by", "support:bo")
    assert code == 0 and "fall back to normal retention" in out
    code, out = await roomlogs(settings, capsys, "retention", "hold", "list")
    assert out.strip() == "no holds"
    code, out = await roomlogs(settings, capsys, "retention", "hold", "list", "--all")
    assert "by support:bo" in out
    with pytest.raises(RetentionError, match="refused by PostgreSQL"):
        await roomlogs(
            settings, capsys, "retention", "hold", "place", "r" * 300, "--reason", "x", "--by", "y"
        )


async def test_operator_changes_a_class_retention(
    conn: asyncpg.Connection, settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = await roomlogs(settings, capsys, "retention", "classes", "set", "public", "7", "--by", "dpo")
    assert code == 0 and "public: 14 -> 7 days" in out
    code, out = await roomlogs(settings, capsys, "retention", "classes", "list")
    assert "public       7 days" in out
    assert await roomlogs(settings, capsys, "retention", "classes") == (code, out)  # alone: the same list
    with pytest.raises(RetentionError, match="no retention class 'nope'"):
        await roomlogs(settings, capsys, "retention", "classes", "set", "nope", "7", "--by", "dpo")


async def test_partitions_creates_ahead_and_reports(
    conn: asyncpg.Connection,
    settings: Settings,
    store_events: StoreEvents,
    capsys: pytest.CaptureFixture[str],
) -> None:
    today = datetime.now(UTC).date()
    await store_events("public", days_ago(20, today), {"r": 1})

    code, out = await roomlogs(settings, capsys, "partitions")

    assert code == 0
    lines = out.splitlines()
    assert lines[0] == f"created 14 partition(s) for {today} .. +2 days"
    row = next(line.split() for line in lines if line.startswith("events_public "))
    assert row == [
        "events_public",
        "public",
        "14d",
        "4",
        str(days_ago(20, today)),
        str(today + timedelta(days=2)),
        "yes",
        "2",
        "1",
    ]
    code, out = await roomlogs(settings, capsys, "partitions", "--report-only")
    assert "created" not in out
