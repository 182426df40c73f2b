"""Constants and catalog helpers shared by the retention tests (fixtures are in conftest.py)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Mapping
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import asyncpg

from pipeline.retention import load_classes
from pipeline.storage.batch import DEAD_LETTER_COLUMNS
from pipeline.storage.partitions import PartitionManager

#: The tests' "today"; maintenance runs at noon UTC on it unless a test says otherwise.
TODAY = date(2026, 3, 20)
NOON = datetime.combine(TODAY, time(12, 0), tzinfo=UTC)


def days_ago(n: int, today: date = TODAY) -> date:
    return today - timedelta(days=n)


def at_noon(day: date) -> datetime:
    return datetime.combine(day, time(12, 0), tzinfo=UTC)


async def event_days(conn: asyncpg.Connection, cls: str) -> list[date]:
    """The days `events_<cls>` has a partition for, from the catalog."""
    rows = await conn.fetch(
        """SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
            WHERE i.inhparent = to_regclass($1)""",
        f"events_{cls}",
    )
    return sorted(datetime.strptime(r["relname"][-8:], "%Y%m%d").replace(tzinfo=UTC).date() for r in rows)


async def dead_letter_days(conn: asyncpg.Connection) -> list[date]:
    rows = await conn.fetch(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = to_regclass('dead_letters')"
    )
    return sorted(datetime.strptime(r["relname"][-8:], "%Y%m%d").replace(tzinfo=UTC).date() for r in rows)


def event_records(cls: str, day: date, per_room: Mapping[str, int]) -> list[tuple[Any, ...]]:
    """`events` rows (EVENT_COLUMNS order) spread over that UTC day: {room_id: rows}."""
    start = datetime.combine(day, time.min, tzinfo=UTC)
    records = []
    offset = 0
    for room_id, n in per_room.items():
        for i in range(n):
            offset += 1
            at = start + timedelta(seconds=(i * 7919 + offset) % 86_400)
            records.append(
                (
                    uuid.uuid4(),
                    at,
                    cls,
                    room_id,
                    "chat_message",
                    1,
                    f"u{i % 5}",
                    None,
                    f"hello {i}",
                    {"text": f"hello {i}"},
                    0,
                    offset,
                )
            )
    return records


def dead_letter_records(day: date, n: int) -> list[tuple[Any, ...]]:
    """`dead_letters` rows (DEAD_LETTER_COLUMNS order) received at 06:00 UTC that day."""
    at = datetime.combine(day, time(6, 0), tzinfo=UTC)
    row = {"received_at": at, "reason": "invalid_json", "detail": "not json", "src_topic": "roomlogs.events"}
    # by column name: the columns beyond these (what is kept of the received bytes) may be left empty
    return [
        tuple({**row, "src_partition": 0, "src_offset": i}.get(c) for c in DEAD_LETTER_COLUMNS)
        for i in range(n)
    ]


# --- locks, as PostgreSQL itself reports them ---------------------------------------------------------
#: Lock modes that conflict with ROW EXCLUSIVE, the lock INSERT and COPY take (PostgreSQL's conflict table):
#: a session holding or queued for one of these on a table makes every writer of that table wait.
BLOCKS_WRITES = frozenset({"ShareLock", "ShareRowExclusiveLock", "ExclusiveLock", "AccessExclusiveLock"})


async def relation_locks(monitor: asyncpg.Connection, pid: int) -> set[tuple[str, str, bool]]:
    """(table, mode, granted) of every table lock backend `pid` holds or waits for (pg_locks)."""
    rows = await monitor.fetch(
        """SELECT c.relname::text AS rel, l.mode, l.granted
             FROM pg_locks l JOIN pg_class c ON c.oid = l.relation
            WHERE l.pid = $1 AND l.locktype = 'relation' AND c.relkind IN ('r', 'p')""",
        pid,
    )
    return {(r["rel"], r["mode"], r["granted"]) for r in rows}


async def lock_wait(monitor: asyncpg.Connection, pid: int) -> str | None:
    """What backend `pid` is waiting for and who holds it (pg_stat_activity), or None if it is not waiting
    for a lock."""
    row = await monitor.fetchrow(
        """SELECT wait_event, pg_blocking_pids(pid) AS blockers FROM pg_stat_activity
            WHERE pid = $1 AND wait_event_type = 'Lock'""",
        pid,
    )
    return None if row is None else f"{row['wait_event']} lock held by pid {row['blockers']}"


async def until_waiting(monitor: asyncpg.Connection, pid: int) -> str:
    """Return once backend `pid` waits for a lock (what it waits for). A state to wait for, not a time."""
    while True:
        waiting = await lock_wait(monitor, pid)
        if waiting is not None:
            return waiting
        await asyncio.sleep(0.01)


async def finishes_or_waits(task: asyncio.Task[Any], monitor: asyncpg.Connection, pid: int) -> str | None:
    """Watch backend `pid` run `task`: None when the task finished without the backend ever being seen
    waiting for a lock, else what it was waiting for. A statement that waits for a lock another session
    keeps (a test holds it) waits until it is released, so that wait is always seen."""
    while not task.done():
        waiting = await lock_wait(monitor, pid)
        if waiting is not None:
            return waiting
        await asyncio.sleep(0.002)
    task.result()
    return None


async def make_partitions_ahead(conn: asyncpg.Connection, days_ahead: int) -> None:
    """What every maintenance run but the first of a UTC day finds: the days ahead exist already."""
    manager = PartitionManager()
    await manager.load(conn)
    await manager.premake(conn, sorted(await load_classes(conn)), TODAY, days_ahead)
