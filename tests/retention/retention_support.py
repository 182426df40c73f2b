"""Constants and catalog helpers shared by the retention tests (fixtures are in conftest.py)."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

import asyncpg

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
