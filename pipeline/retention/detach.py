"""Taking an expired day partition out of its parent without blocking ingest: DETACH ... CONCURRENTLY.

Who calls it: `pipeline.retention.enforce` (with the maintenance lock held), and `plan` (`unfinished`).
This module owns the table `retention_detaching` (migration 0006): one row per partition whose detach a
run has begun and whose drop has not committed yet.

Why: `DROP TABLE` of a partition, and a plain `DETACH PARTITION`, take ACCESS EXCLUSIVE on the parent
(`events_<class>`, `dead_letters`); while they wait for a reader's lock every ingest COPY into the parent
queues behind them. `DETACH PARTITION ... CONCURRENTLY` takes SHARE UPDATE EXCLUSIVE on the parent, which
does not conflict with the ROW EXCLUSIVE lock of INSERT/COPY, so ingest keeps writing throughout. It runs
in two transactions of its own (never inside a transaction block):
1. mark the partition "detach pending" and commit: from then on new queries through the parent do not see
   it (its rows are no longer live data), though it still holds every row;
2. wait, holding no lock, for the transactions that were using the parent; then take ACCESS EXCLUSIVE on
   the partition alone (waits only for sessions reading that table directly) and finish the detach.
If step 2 is interrupted (a lock timeout, a cancel, a crash) the partition stays detach pending, and only
`DETACH ... FINALIZE` completes it (which waits for every older snapshot, holding SHARE UPDATE EXCLUSIVE on
the parent meanwhile). A parent may have only one pending detach at a time.

Crash safety: the `retention_detaching` row is committed before step 1 and deleted in the transaction that
drops the detached table and writes its ledger row. So whatever step a run stops at, the next run finds
the row and finishes that partition (FINALIZE if pending, then drop), and the ledger row is written once.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date

import asyncpg

from pipeline.retention.catalog import StoredPartition
from pipeline.storage.catalog import ident

__all__ = ["Detaching", "begin", "concurrently", "finalize", "forget", "holders", "unfinished"]


@dataclass(frozen=True, slots=True)
class Detaching:
    """A detach begun by a run and not finished by a drop (a row of `retention_detaching`)."""

    partition_name: str
    table_name: str
    parent: str
    retention_class: str | None
    day: date
    #: the retention the partition had expired under when the detach began
    retention_days: int
    run_id: uuid.UUID
    as_of: date


async def unfinished(conn: asyncpg.Connection) -> dict[str, Detaching]:
    """Detaches begun and not finished, by partition name."""
    rows = await conn.fetch(
        """SELECT partition_name, table_name, parent, retention_class, day, retention_days, run_id, as_of
             FROM retention_detaching"""
    )
    return {r["partition_name"]: Detaching(**dict(r)) for r in rows}


async def begin(
    conn: asyncpg.Connection, sp: StoredPartition, retention_days: int, run_id: uuid.UUID, as_of: date
) -> None:
    """Record (and commit) that this run is about to take `sp` out; call outside any transaction."""
    await conn.execute(
        """INSERT INTO retention_detaching (partition_name, table_name, parent, retention_class, day,
                                            retention_days, run_id, as_of)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
           ON CONFLICT (partition_name) DO UPDATE
              SET retention_days = EXCLUDED.retention_days, run_id = EXCLUDED.run_id,
                  as_of = EXCLUDED.as_of, began_at = clock_timestamp()""",
        sp.name,
        sp.table,
        sp.parent,
        sp.retention_class,
        sp.day,
        retention_days,
        run_id,
        as_of,
    )


async def forget(conn: asyncpg.Connection, partition_name: str) -> None:
    """Delete the record; inside the transaction that drops the table, or when the table is gone."""
    await conn.execute("DELETE FROM retention_detaching WHERE partition_name = $1", partition_name)


async def concurrently(conn: asyncpg.Connection, sp: StoredPartition, lock_timeout_ms: int) -> None:
    """`DETACH PARTITION ... CONCURRENTLY`; each lock wait is bounded by `lock_timeout_ms`.

    Raises asyncpg.LockNotAvailableError when a wait timed out: the partition is then either still
    attached (step 1 gave up) or detach pending (step 2 did); `pipeline.storage.catalog.state_of` says which.
    """
    await _outside_transaction(
        conn,
        f"ALTER TABLE {ident(sp.parent)} DETACH PARTITION {ident(sp.name)} CONCURRENTLY",
        lock_timeout_ms,
    )


async def finalize(conn: asyncpg.Connection, sp: StoredPartition, lock_timeout_ms: int) -> None:
    """Complete an interrupted detach (`DETACH PARTITION ... FINALIZE`); LockNotAvailableError on timeout."""
    async with conn.transaction():
        await conn.execute(f"SET LOCAL lock_timeout = {int(lock_timeout_ms)}")
        await conn.execute(f"ALTER TABLE {ident(sp.parent)} DETACH PARTITION {ident(sp.name)} FINALIZE")


async def holders(conn: asyncpg.Connection, name: str) -> list[int]:
    """Backend pids of other sessions holding a lock on table `name` right now (for messages)."""
    rows = await conn.fetch(
        """SELECT DISTINCT pid FROM pg_locks
            WHERE relation = to_regclass($1) AND granted AND pid <> pg_backend_pid() ORDER BY pid""",
        ident(name),
    )
    return [r["pid"] for r in rows]


async def _outside_transaction(conn: asyncpg.Connection, sql: str, lock_timeout_ms: int) -> None:
    # CONCURRENTLY refuses to run in a transaction block, so SET LOCAL is not available: set the session's
    # lock_timeout around it (a pooled connection must not keep it).
    await conn.execute(f"SET lock_timeout = {int(lock_timeout_ms)}")
    try:
        await conn.execute(sql)
    finally:
        if not conn.is_closed():
            await conn.execute("RESET lock_timeout")
