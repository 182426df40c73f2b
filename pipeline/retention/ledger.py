"""Proof of deletion: the maintenance runs and the deletion ledger (append-only tables, see 0002).

Each ledger row is written in the same transaction as the deletion it records, so a row exists if and
only if the deletion committed: `drop_partition` rows carry the row count taken under the partition's
exclusive lock just before the DROP, and how many of those rows were preserved for legal holds;
`purge_held` rows record preserved rows deleted after their holds were released.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date, datetime

import asyncpg

__all__ = ["LastRun", "LedgerEntry", "finish_run", "last_run", "read_ledger", "record", "start_run"]

DROP_PARTITION = "drop_partition"
PURGE_HELD = "purge_held"


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    entry_id: int
    run_id: uuid.UUID
    action: str
    table_name: str
    retention_class: str | None
    day: date
    partition_name: str | None
    row_count: int
    rows_held: int
    retention_days: int
    as_of: date
    dropped_at: datetime

    @property
    def rows_deleted(self) -> int:
        """Rows gone from the database (a dropped partition's rows minus those preserved for holds)."""
        return self.row_count - self.rows_held


async def start_run(conn: asyncpg.Connection, run_id: uuid.UUID, as_of: date) -> None:
    await conn.execute("INSERT INTO maintenance_runs (run_id, as_of) VALUES ($1, $2)", run_id, as_of)


async def finish_run(
    conn: asyncpg.Connection,
    run_id: uuid.UUID,
    *,
    outcome: str,
    created: int,
    dropped: int,
    deferred: int,
    rows_deleted: int,
    rows_held: int,
    detail: str,
) -> None:
    await conn.execute(
        """UPDATE maintenance_runs
              SET finished_at = clock_timestamp(), outcome = $2, partitions_created = $3,
                  partitions_dropped = $4, partitions_deferred = $5, rows_deleted = $6, rows_held = $7,
                  detail = $8
            WHERE run_id = $1""",
        run_id,
        outcome,
        created,
        dropped,
        deferred,
        rows_deleted,
        rows_held,
        detail,
    )


async def record(
    conn: asyncpg.Connection,
    *,
    run_id: uuid.UUID,
    action: str,
    table_name: str,
    retention_class: str | None,
    day: date,
    partition_name: str | None,
    row_count: int,
    rows_held: int,
    retention_days: int,
    as_of: date,
) -> None:
    """Append one ledger row; call inside the transaction that performs the deletion."""
    await conn.execute(
        """INSERT INTO deletion_ledger (run_id, action, table_name, retention_class, day, partition_name,
                                        row_count, rows_held, retention_days, as_of)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)""",
        run_id,
        action,
        table_name,
        retention_class,
        day,
        partition_name,
        row_count,
        rows_held,
        retention_days,
        as_of,
    )


async def read_ledger(
    conn: asyncpg.Connection,
    *,
    run_id: uuid.UUID | None = None,
    since_day: date | None = None,
    limit: int = 1000,
) -> list[LedgerEntry]:
    """The newest `limit` ledger rows, oldest first; optionally of one run, or of days from `since_day`."""
    rows = await conn.fetch(
        """SELECT * FROM (
               SELECT entry_id, run_id, action, table_name, retention_class, day, partition_name, row_count,
                      rows_held, retention_days, as_of, dropped_at
                 FROM deletion_ledger
                WHERE ($1::uuid IS NULL OR run_id = $1) AND ($2::date IS NULL OR day >= $2)
                ORDER BY entry_id DESC
                LIMIT $3) newest
            ORDER BY entry_id""",
        run_id,
        since_day,
        limit,
    )
    return [LedgerEntry(**dict(r)) for r in rows]


@dataclass(frozen=True, slots=True)
class LastRun:
    """The newest maintenance run recorded (runs that held the maintenance lock, i.e. the owner's)."""

    run_id: uuid.UUID
    started_at: datetime
    finished_at: datetime | None
    #: running | ok | partial | failed
    outcome: str


async def last_run(conn: asyncpg.Connection) -> LastRun | None:
    row = await conn.fetchrow(
        """SELECT run_id, started_at, finished_at, outcome FROM maintenance_runs
            ORDER BY started_at DESC LIMIT 1"""
    )
    return LastRun(**dict(row)) if row is not None else None
