"""One maintenance run: create partitions ahead, drop expired ones, keep held rooms' rows, write the ledger.

Who calls it: the worker's maintenance timer (`run_maintenance`, every `maintenance_interval_seconds`) and
`roomlogs retention` / `roomlogs partitions` (`maintain` on a connection of their own). The caller passes
the clock (`now`); nothing below reads it.

A run, in order:
1. takes a session advisory lock for the schema with pg_try_advisory_lock; when another maintainer (another
   worker, a cron job) holds it, the run reports "another maintainer is running" and does nothing;
2. creates partitions for today .. today + `partitions_ahead_days`, for every class and for dead letters;
3. drops every expired day partition, each in its own transaction:
   `SET LOCAL lock_timeout`, lock the class table then the partition (ACCESS EXCLUSIVE, the order a DROP
   takes them, so no deadlock with queries), lock `legal_holds` (SHARE: a hold placed now waits for this
   drop to commit, so it is never half-applied), count the rows, copy the rows of held rooms into
   `held_events`, `DROP TABLE`, write the ledger row, commit. A lock timeout (a long reader) rolls the
   partition's transaction back and defers it to the next run; nothing waits longer than the timeout;
4. deletes preserved rows of rooms no longer held once they are past their class's retention (the only
   DELETE in retention, authorized with `roomlogs.authorized_deletion`, written to the ledger);
5. records the run in `maintenance_runs` (idle runs are forgotten after 30 days) and refreshes the metrics.

Failure semantics: an unexpected PostgreSQL error on one partition is reported and that partition retried
next run; the others proceed. If PostgreSQL becomes unreachable the run stops with `report.error` set
(never raises for it); nothing half-done survives, because each step is one transaction.

Never DETACH, never DELETE from a partition: a dropped partition is gone, and a detached one would still
hold every row. There is no catch-all partition to maintain (see `pipeline.storage.partitions`).
"""

from __future__ import annotations

import logging
import time
import uuid
from datetime import UTC, date, datetime, timedelta

import asyncpg

from pipeline.retention import ledger
from pipeline.retention.catalog import EVENTS, count_rows, ident
from pipeline.retention.exceptions import HeldRowsSchemaError
from pipeline.retention.metrics import RetentionMetrics
from pipeline.retention.plan import ExpiredPartition, RetentionPlan, plan_retention
from pipeline.retention.policy import load_classes
from pipeline.retention.report import (
    SKIPPED_LOCKED,
    DeferredPartition,
    DroppedPartition,
    MaintenanceReport,
    PurgedHeld,
)
from pipeline.retention.status import observe
from pipeline.settings import Settings
from pipeline.storage.db import CONNECTION_ERRORS
from pipeline.storage.partitions import PartitionManager

__all__ = ["DROP_LOCK_TIMEOUT_MS", "maintain", "maintenance_lock", "run_maintenance"]

log = logging.getLogger("roomlogs.retention")

#: How long a DROP may wait for a reader's lock before the partition is deferred to the next run. Ingest
#: writes of the same class queue behind a waiting DROP, so this is also the longest stall it can cause.
DROP_LOCK_TIMEOUT_MS = 1_000
#: How long the record of a run that changed nothing is kept (runs that did something are kept for good).
IDLE_RUN_HISTORY_DAYS = 30
#: Advisory lock key: (namespace, hashtext(schema)), so schemas (and test runs) never block each other.
_LOCK_NAMESPACE = 0x726C7274  # "rlrt"


async def run_maintenance(
    pool: asyncpg.Pool,
    settings: Settings,
    metrics: RetentionMetrics | None,
    *,
    now: datetime,
    dry_run: bool = False,
    partitions: PartitionManager | None = None,
    lock_timeout_ms: int = DROP_LOCK_TIMEOUT_MS,
) -> MaintenanceReport:
    """The worker timer's entry point: one run on a pooled connection. Never raises for PostgreSQL trouble.

    Pass the ingest loop's PartitionManager as `partitions` so its cache learns of what was created and
    dropped.
    """
    try:
        async with pool.acquire() as conn:
            return await maintain(
                conn,
                settings,
                metrics,
                now=now,
                dry_run=dry_run,
                partitions=partitions,
                lock_timeout_ms=lock_timeout_ms,
            )
    except CONNECTION_ERRORS as e:
        if metrics is not None:
            metrics.failures.labels("run").inc()
        log.warning("maintenance could not get a connection: %s: %s", type(e).__name__, e)
        return MaintenanceReport(as_of=_today(now), dry_run=dry_run, error=f"{type(e).__name__}: {e}")


async def maintain(
    conn: asyncpg.Connection,
    settings: Settings,
    metrics: RetentionMetrics | None = None,
    *,
    now: datetime,
    dry_run: bool = False,
    partitions: PartitionManager | None = None,
    lock_timeout_ms: int = DROP_LOCK_TIMEOUT_MS,
) -> MaintenanceReport:
    """One run on `conn` (see the module docstring). A dry run changes nothing and takes no lock."""
    started = time.perf_counter()
    report = MaintenanceReport(as_of=_today(now), dry_run=dry_run)
    try:
        if dry_run:
            await _dry_run(conn, settings, report)
        elif not await maintenance_lock(conn):
            report.skipped = SKIPPED_LOCKED
            if metrics is not None:
                metrics.skipped.inc()
        else:
            try:
                await _enforce(conn, settings, metrics, report, partitions, lock_timeout_ms)
            finally:
                await _unlock(conn)
        if metrics is not None:
            await observe(
                conn, metrics, now=now, dead_letter_retention_days=settings.dead_letter_retention_days
            )
    except CONNECTION_ERRORS as e:
        report.error = f"PostgreSQL unavailable: {type(e).__name__}: {e}"
    except (asyncpg.PostgresError, HeldRowsSchemaError) as e:
        report.error = f"{type(e).__name__}: {e}"
    report.duration_seconds = time.perf_counter() - started
    if metrics is not None:
        metrics.duration.set(report.duration_seconds)
        if report.error:
            metrics.failures.labels("run").inc()
        elif not report.skipped and not dry_run:
            metrics.last_success.set(now.timestamp())
    if report.error:
        log.warning("maintenance failed: %s", report.error)
    elif report.dropped or report.deferred or report.purged_held:
        log.info("%s", report.render())
    return report


async def maintenance_lock(conn: asyncpg.Connection) -> bool:
    """Try to take this schema's maintenance lock for the session of `conn`; False when someone has it."""
    return bool(
        await conn.fetchval("SELECT pg_try_advisory_lock($1, hashtext(current_schema()))", _LOCK_NAMESPACE)
    )


async def _unlock(conn: asyncpg.Connection) -> None:
    await conn.execute("SELECT pg_advisory_unlock($1, hashtext(current_schema()))", _LOCK_NAMESPACE)


def _today(now: datetime) -> date:
    return now.astimezone(UTC).date()


# --- the run --------------------------------------------------------------------------------------------
async def _enforce(
    conn: asyncpg.Connection,
    settings: Settings,
    metrics: RetentionMetrics | None,
    report: MaintenanceReport,
    partitions: PartitionManager | None,
    lock_timeout_ms: int,
) -> None:
    run_id = report.run_id = uuid.uuid4()
    await ledger.start_run(conn, run_id, report.as_of)
    try:
        await _premake(conn, settings, metrics, report, partitions)
        plan = await plan_retention(
            conn, today=report.as_of, dead_letter_retention_days=settings.dead_letter_retention_days
        )
        report.unruled = [f"{u.partition.name}: {u.why}" for u in plan.unruled]
        await _drop_expired(conn, plan, run_id, metrics, report, lock_timeout_ms)
        if plan.held_expired:
            await _purge_held(conn, plan, run_id, metrics, report, lock_timeout_ms)
    except Exception as e:
        # Record the failure when the connection still works; the error itself is reported by maintain().
        if not isinstance(e, CONNECTION_ERRORS):
            await _finish(conn, report, outcome="failed", detail=f"{type(e).__name__}: {e}")
        raise
    if partitions is not None and report.dropped:
        await partitions.load(conn)  # the ingest cache must not believe dropped days still exist
    await _finish(conn, report, outcome=report.outcome, detail="")
    # Runs that changed nothing prove nothing: keep a month of them, not one row a minute forever.
    await conn.execute(
        """DELETE FROM maintenance_runs
            WHERE as_of < $1 AND outcome = 'ok' AND partitions_created = 0 AND partitions_dropped = 0
              AND partitions_deferred = 0 AND rows_deleted = 0 AND rows_held = 0""",
        report.as_of - timedelta(days=IDLE_RUN_HISTORY_DAYS),
    )


async def _finish(conn: asyncpg.Connection, report: MaintenanceReport, *, outcome: str, detail: str) -> None:
    assert report.run_id is not None
    detail = detail or "; ".join(f"{d.partition}: {d.reason}" for d in report.deferred)
    await ledger.finish_run(
        conn,
        report.run_id,
        outcome=outcome,
        created=report.created,
        dropped=len(report.dropped),
        deferred=len(report.deferred),
        rows_deleted=report.rows_deleted,
        rows_held=report.rows_held,
        detail=detail[:2000],
    )


async def _premake(
    conn: asyncpg.Connection,
    settings: Settings,
    metrics: RetentionMetrics | None,
    report: MaintenanceReport,
    partitions: PartitionManager | None,
) -> None:
    manager = partitions
    if manager is None:
        manager = PartitionManager()
        await manager.load(conn)
    classes = sorted(await load_classes(conn))
    try:
        report.created = await manager.premake(conn, classes, report.as_of, settings.partitions_ahead_days)
    except asyncpg.PostgresError as e:
        # Not fatal: ingest creates a missing day on demand. Drops still run; premake is retried next run.
        if isinstance(e, CONNECTION_ERRORS):
            raise
        log.warning("creating partitions ahead failed: %s: %s", type(e).__name__, e)
        if metrics is not None:
            metrics.failures.labels("premake").inc()
        return
    if metrics is not None and report.created:
        metrics.partitions_created.inc(report.created)


async def _drop_expired(
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
            total, held_rows = await _counts(conn, sp.name, held)
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


async def _counts(conn: asyncpg.Connection, partition: str, held: list[str]) -> tuple[int, int]:
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


async def _purge_held(
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


# --- dry run --------------------------------------------------------------------------------------------
async def _dry_run(conn: asyncpg.Connection, settings: Settings, report: MaintenanceReport) -> None:
    plan = await plan_retention(
        conn, today=report.as_of, dead_letter_retention_days=settings.dead_letter_retention_days
    )
    report.unruled = [f"{u.partition.name}: {u.why}" for u in plan.unruled]
    held = [
        r["room_id"]
        for r in await conn.fetch("SELECT DISTINCT room_id FROM legal_holds WHERE released_at IS NULL")
    ]
    for exp in plan.expired:
        sp = exp.partition
        try:
            if sp.table == EVENTS:
                total, held_rows = await _counts(conn, sp.name, held)
            else:
                total, held_rows = await count_rows(conn, sp.name), 0
        except asyncpg.UndefinedTableError:
            continue  # dropped meanwhile
        report.would_drop.append(
            DroppedPartition(
                sp.table, sp.retention_class, exp.day, sp.name, total, held_rows, exp.retention_days
            )
        )
    report.would_purge_held = [PurgedHeld(h.retention_class, h.day, h.rows) for h in plan.held_expired]
