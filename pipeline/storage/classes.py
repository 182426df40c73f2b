"""Retention classes (table `retention_classes`, audited in `retention_class_changes`): the one module that
reads and writes them.

Who calls it: retention (listing the classes, judging partitions, changing a class's days through
`pipeline.retention.policy.set_retention_days`, which checks the request first), the worker (preflight:
is the default class one of them; premaking partitions for every class), the ingest stage (each class's
horizon, refreshed every minute), replay (`pipeline.storage.partitions.writable_since`) and the query API
(a room's retention). A class's name follows `pipeline.settings.RETENTION_CLASS_NAME`; its days lie in
1..`MAX_RETENTION_DAYS` (both CHECKs of migration 0001). What the days mean: pipeline/retention_rules.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg

__all__ = [
    "MAX_RETENTION_DAYS",
    "RetentionClass",
    "class_names",
    "load_classes",
    "retention_days",
    "update_retention_days",
]

#: The CHECK on retention_classes.retention_days.
MAX_RETENTION_DAYS = 3650


@dataclass(frozen=True, slots=True)
class RetentionClass:
    name: str
    retention_days: int
    description: str
    updated_at: datetime


async def load_classes(conn: asyncpg.Connection) -> dict[str, RetentionClass]:
    """Every class, by name (in name order)."""
    rows = await conn.fetch(
        "SELECT name, retention_days, description, updated_at FROM retention_classes ORDER BY name"
    )
    return {
        r["name"]: RetentionClass(r["name"], r["retention_days"], r["description"], r["updated_at"])
        for r in rows
    }


async def retention_days(conn: asyncpg.Connection) -> dict[str, int]:
    """Each class's retention in days, by name (in name order)."""
    rows = await conn.fetch("SELECT name, retention_days FROM retention_classes ORDER BY name")
    return {r["name"]: r["retention_days"] for r in rows}


async def class_names(conn: asyncpg.Connection) -> list[str]:
    """The classes' names, in order."""
    return [r["name"] for r in await conn.fetch("SELECT name FROM retention_classes ORDER BY name")]


async def update_retention_days(
    conn: asyncpg.Connection, name: str, days: int, *, changed_by: str, reason: str
) -> int | None:
    """Set class `name` to `days` and append the audit row, in one transaction; return the old days, or
    None (and change nothing) when there is no such class. The caller checks `days` and `changed_by`."""
    async with conn.transaction():
        old: int | None = await conn.fetchval(
            "SELECT retention_days FROM retention_classes WHERE name = $1 FOR UPDATE", name
        )
        if old is None:
            return None
        await conn.execute(
            """UPDATE retention_classes SET retention_days = $2, updated_at = clock_timestamp()
                WHERE name = $1""",
            name,
            days,
        )
        await conn.execute(
            """INSERT INTO retention_class_changes (name, old_days, new_days, changed_by, reason)
               VALUES ($1, $2, $3, $4, $5)""",
            name,
            old,
            days,
            changed_by,
            reason,
        )
    return old
