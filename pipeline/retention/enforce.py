"""The deleting steps of a maintenance run: drop expired day partitions, purge released holds' rows.

Who calls it: `pipeline.retention.maintenance` only, with the maintenance lock held and a run id recorded.
Each partition is one transaction, in this order:

1. `SET LOCAL lock_timeout`; lock the class table (`LOCK TABLE ONLY`), then the partition, both ACCESS
   EXCLUSIVE: the order DROP itself and queries take them, so a drop never deadlocks with a reader or a
   writer; it waits at most the lock timeout, then the partition is deferred to the next run;
2. lock `legal_holds` SHARE: a hold being placed right now is either committed before (and honoured) or
   waits until this partition is gone; it is never half-applied;
3. count the rows exactly (for the ledger) and copy the held rooms' rows to `held_events`;
4. `DROP TABLE`, append the ledger row, commit.

Cost for ingest: while steps 1-4 run, writes of the partition's class wait. The DROP itself takes
milliseconds whatever the rows; the exact count grows with them (about 0.2 s for a day of a million rows
here, see bench/retention.py), once per class and day.

Released holds: preserved rows whose rooms have no active hold and whose class's retention has passed are
deleted in one transaction authorized with `roomlogs.authorized_deletion` (the only DELETE retention
does; `held_events` is small and not partitioned), one ledger row per class and day.
"""

from __future__ import annotations

import logging
import time
import uuid
from datetime import date

import asyncpg

from pipeline.retention import ledger
from pipeline.retention.catalog import EVENTS, count_rows, ident
from pipeline.retention.exceptions import HeldRowsSchemaError
from pipeline.retention.metrics import RetentionMetrics
from pipeline.retention.plan import ExpiredPartition, RetentionPlan
from pipeline.retention.report import DeferredPartition, DroppedPartition, MaintenanceReport, PurgedHeld
from pipeline.storage.db import CONNECTION_ERRORS

__all__ = ["counts", "drop_expired", "purge_released_holds"]

log = logging.getLogger("roomlogs.retention")


async def drop_expired(
    conn: asyncpg.Connection,
    plan: RetentionPlan,
    run_id: uuid.UUID,
    metrics: RetentionMetrics | None,
    report: MaintenanceReport,
    lock_timeout_ms: int,
) -> None:
    columns = await _held_columns(conn) if any(e.partition.table == EVENTS for e in plan.expired) else []
    #: parents a reader kept us from locking: their other partitions would wait just as long, so the run
    #: waits at most one lock timeout per parent (plus one per partition a reader holds directly)
    blocked: set[str] = set()
    for exp in plan.expired:
        sp = exp.partition
        waits_for = sp.parent if sp.parent in blocked else None
        if sp.table == EVENTS and "legal_holds" in blocked:
            waits_for = "legal_holds"
        if waits_for:
            _defer(report, metrics, exp, "lock_timeout", f"{waits_for} held by another session (see above)")
            continue
        try:
            dropped = await _drop_one(conn, exp, run_id, report.as_of, columns, lock_timeout_ms)
        except _LockTimeout as e:
            if e.what != sp.name:
                blocked.add(e.what)
            detail = f"{e.what} held by another session for over {lock_timeout_ms} ms"
            _defer(report, metrics, exp, "lock_timeout", detail)
            continue
        except asyncpg.DeadlockDetectedError:
            _defer(report, metrics, exp, "deadlock", "")
            continue
        except asyncpg.UndefinedTableError:
            log.info("%s was dropped by someone else meanwhile", sp.name)
            continue
        except asyncpg.PostgresError as e:
            if isinstance(e, CONNECTION_ERRORS):
                raise
            log.warning("dropping %s failed: %s: %s", sp.name, type(e).__name__, e)
            _defer(report, metrics, exp, "error", f"{type(e).__name__} (SQLSTATE {e.sqlstate})")
            if metrics is not None:
                metrics.failures.labels("drop").inc()
            continue
        report.dropped.append(dropped)
        if metrics is not None:
            metrics.partitions_dropped.labels(sp.parent).inc()
            metrics.rows_deleted.labels(sp.parent).inc(dropped.rows_deleted)
            metrics.rows_held.inc(dropped.rows_held)


def _defer(
    report: MaintenanceReport,
    metrics: RetentionMetrics | None,
    exp: ExpiredPartition,
    reason: str,
    detail: str,
) -> None:
    sp = exp.partition
    report.deferred.append(DeferredPartition(sp.table, sp.retention_class, exp.day, sp.name, reason, detail))
    if metrics is not None:
        metrics.partitions_deferred.labels(sp.parent).inc()
    log.info("deferred dropping %s to the next run: %s %s", sp.name, reason, detail)


class _LockTimeout(Exception):
    """lock_timeout expired while taking the lock on `what` (the partition's transaction rolled back)."""

    def __init__(self, what: str) -> None:
        super().__init__(what)
        self.what = what


async def _drop_one(
    conn: asyncpg.Connection,
    exp: ExpiredPartition,
    run_id: uuid.UUID,
    as_of: date,
    columns: list[str],
    lock_timeout_ms: int,
) -> DroppedPartition:
    sp = exp.partition
    started = time.perf_counter()
    async with conn.transaction():
        await conn.execute(f"SET LOCAL lock_timeout = {int(lock_timeout_ms)}")
        # Parent first, then the partition: the order DROP and queries take them (no deadlock).
        await _lock(conn, f"LOCK TABLE ONLY {ident(sp.parent)} IN ACCESS EXCLUSIVE MODE", sp.parent)
        await _lock(conn, f"LOCK TABLE {ident(sp.name)} IN ACCESS EXCLUSIVE MODE", sp.name)
        held_rows = 0
        if sp.table == EVENTS:
            await _lock(conn, "LOCK TABLE legal_holds IN SHARE MODE", "legal_holds")
            held = [
                r["room_id"]
                for r in await conn.fetch(
                    "SELECT DISTINCT room_id FROM legal_holds WHERE released_at IS NULL"
                )
            ]
            total, held_rows = await counts(conn, sp.name, held)
            if held_rows:
                cols = ", ".join(columns)
                await conn.execute(
                    f"""INSERT INTO held_events ({cols}, preserved_by)
                        SELECT {cols}, $2 FROM {ident(sp.name)} WHERE room_id = ANY($1::text[])
                        ON CONFLICT DO NOTHING""",
                    held,
                    run_id,
                )
        else:
            total = await count_rows(conn, sp.name)
        drop_started = time.perf_counter()
        await conn.execute(f"DROP TABLE {ident(sp.name)}")
        drop_seconds = time.perf_counter() - drop_started
        await ledger.record(
            conn,
            run_id=run_id,
            action=ledger.DROP_PARTITION,
            table_name=sp.table,
            retention_class=sp.retention_class,
            day=exp.day,
            partition_name=sp.name,
            row_count=total,
            rows_held=held_rows,
            retention_days=exp.retention_days,
            as_of=as_of,
        )
    return DroppedPartition(
        sp.table,
        sp.retention_class,
        exp.day,
        sp.name,
        total,
        held_rows,
        exp.retention_days,
        seconds=time.perf_counter() - started,
        drop_seconds=drop_seconds,
    )


async def _lock(conn: asyncpg.Connection, sql: str, what: str) -> None:
    try:
        await conn.execute(sql)
    except asyncpg.LockNotAvailableError as e:
        raise _LockTimeout(what) from e


async def counts(conn: asyncpg.Connection, partition: str, held: list[str]) -> tuple[int, int]:
    """(all rows, rows of held rooms). Two queries: a bare count(*) is several times faster than one with a
    per-row filter, and the held rooms' rows are found through the room index."""
    total = await count_rows(conn, partition)
    if not held or not total:
        return total, 0
    n = await conn.fetchval(f"SELECT count(*) FROM {ident(partition)} WHERE room_id = ANY($1::text[])", held)
    return total, int(n)


async def _held_columns(conn: asyncpg.Connection) -> list[str]:
    """The columns of `events`, all of which `held_events` must have (else preserving would lose data)."""
    rows = await conn.fetch(
        """SELECT table_name::text AS t, column_name::text AS c FROM information_schema.columns
            WHERE table_schema = current_schema() AND table_name IN ('events', 'held_events')
            ORDER BY ordinal_position"""
    )
    events = [r["c"] for r in rows if r["t"] == "events"]
    held = {r["c"] for r in rows if r["t"] == "held_events"}
    missing = [c for c in events if c not in held]
    if missing:
        raise HeldRowsSchemaError(
            f"held_events lacks column(s) {', '.join(missing)} of events; add them in a migration "
            "before retention can preserve held rooms' rows"
        )
    return [f'"{c}"' for c in events]


async def purge_released_holds(
    conn: asyncpg.Connection,
    plan: RetentionPlan,
    run_id: uuid.UUID,
    metrics: RetentionMetrics | None,
    report: MaintenanceReport,
    lock_timeout_ms: int,
) -> None:
    """Delete preserved rows whose rooms are no longer held and which are past their class's retention."""
    try:
        async with conn.transaction():
            await conn.execute(f"SET LOCAL lock_timeout = {int(lock_timeout_ms)}")
            await conn.execute("LOCK TABLE legal_holds IN SHARE MODE")
            await conn.execute("SET LOCAL roomlogs.authorized_deletion = 'on'")
            rows = await conn.fetch(
                """WITH gone AS (
                       DELETE FROM held_events h
                        USING retention_classes rc
                        WHERE rc.name = h.retention_class
                          AND h.occurred_at < (($1::date - rc.retention_days)::timestamp AT TIME ZONE 'UTC')
                          AND NOT EXISTS (SELECT 1 FROM legal_holds l
                                           WHERE l.room_id = h.room_id AND l.released_at IS NULL)
                    RETURNING h.retention_class, (h.occurred_at AT TIME ZONE 'UTC')::date AS day,
                              rc.retention_days)
                   SELECT retention_class, day, min(retention_days) AS retention_days, count(*) AS n
                     FROM gone GROUP BY 1, 2 ORDER BY 1, 2""",
                report.as_of,
            )
            for r in rows:
                await ledger.record(
                    conn,
                    run_id=run_id,
                    action=ledger.PURGE_HELD,
                    table_name="held_events",
                    retention_class=r["retention_class"],
                    day=r["day"],
                    partition_name=None,
                    row_count=r["n"],
                    rows_held=0,
                    retention_days=r["retention_days"],
                    as_of=report.as_of,
                )
    except (asyncpg.LockNotAvailableError, asyncpg.DeadlockDetectedError) as e:
        log.info("deferred deleting released holds' rows to the next run: %s", type(e).__name__)
        if metrics is not None:
            metrics.partitions_deferred.labels("held_events").inc()
        for h in plan.held_expired:
            report.deferred.append(
                DeferredPartition("held_events", h.retention_class, h.day, "held_events", "lock_timeout")
            )
        return
    report.purged_held = [PurgedHeld(r["retention_class"], r["day"], r["n"]) for r in rows]
    if metrics is not None:
        metrics.rows_deleted.labels("held_events").inc(sum(r["n"] for r in rows))
