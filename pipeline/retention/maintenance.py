"""One maintenance run: create partitions ahead, drop expired ones, keep held rooms' rows, write the ledger.

Who calls it: the worker's maintenance timer (`run_maintenance`, every `maintenance_interval_seconds`) and
`roomlogs retention` / `roomlogs partitions` (`maintain` on a connection of their own). The caller passes
the clock (`now`); nothing below reads it.

A run, in order:
1. takes a session advisory lock for the schema with pg_try_advisory_lock; when another maintainer (another
   worker, a cron job) holds it, the run reports "another maintainer is running" and does nothing;
2. creates partitions for today .. today + `partitions_ahead_days`, for every class and for dead letters;
3. drops every expired day partition (see `enforce`): DETACH PARTITION ... CONCURRENTLY, then one
   transaction on the detached table: rows counted, rows of held rooms copied to `held_events`, DROP TABLE,
   ledger row. Ingest keeps writing throughout. A lock timeout (a long reader) defers the partition to the
   next run, which resumes where this one stopped; no lock wait is longer than the timeout;
4. deletes preserved rows of rooms no longer held once they are past their class's retention (the only
   DELETE in retention, authorized with `roomlogs.authorized_deletion`, written to the ledger);
5. records the run in `maintenance_runs` (idle runs are forgotten after 30 days) and refreshes the metrics.

Failure semantics: an unexpected PostgreSQL error on one partition is reported and that partition retried
next run; the others proceed. If PostgreSQL becomes unreachable (or the process dies) the run stops with
`report.error` set (never raises for it). A partition can then be left detach pending or detached but not
dropped: out of the live data, its rows still stored. `retention_detaching` remembers it, `retention
check` counts it, and the next run finishes it (see `detach`), writing its ledger row once.

Never DELETE from a partition, and no detached table is left behind on purpose. There is no catch-all
partition to maintain (see `pipeline.storage.partitions`).
"""

from __future__ import annotations

import logging
import time
import uuid
from datetime import UTC, date, datetime, timedelta

import asyncpg

from pipeline.logs import outage_log
from pipeline.retention import ledger
from pipeline.retention.catalog import EVENTS, count_rows
from pipeline.retention.enforce import counts, drop_expired, purge_released_holds
from pipeline.retention.exceptions import HeldRowsSchemaError
from pipeline.retention.metrics import RetentionMetrics
from pipeline.retention.plan import plan_retention
from pipeline.retention.report import (
    SKIPPED_LOCKED,
    DroppedPartition,
    MaintenanceReport,
    PurgedHeld,
)
from pipeline.retention.status import observe
from pipeline.settings import Settings
from pipeline.storage import event_ids
from pipeline.storage.classes import class_names, retention_days
from pipeline.storage.db import CONNECTION_ERRORS, CUT_SHORT_ERRORS, gone, lost
from pipeline.storage.holds import active_rooms
from pipeline.storage.partitions import PartitionManager, day_start

__all__ = ["DROP_LOCK_TIMEOUT_MS", "maintain", "maintenance_lock", "owns_log_tables", "run_maintenance"]

log = logging.getLogger("roomlogs.retention")
#: an unreachable PostgreSQL is logged when it goes and when it is back, not by every run in between
_outage = outage_log("PostgreSQL")

#: How long any one lock wait of a drop (the detach's waits for other transactions on the parent, the
#: locks on the partition and on legal_holds) may last before the partition is deferred to the next run.
#: Ingest's writes never wait for these. Kept below the 2 s lock timeout of partition DDL
#: (`pipeline.storage.partitions.DDL_LOCK_TIMEOUT_MS`): a day partition ingest creates on demand on a
#: parent whose detach holds SHARE UPDATE EXCLUSIVE waits for it at most this long, and never fails for it.
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
        _outage.down(e, "maintenance retries at its next run")
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
    unavailable: BaseException | None = None
    try:
        if dry_run:
            await _dry_run(conn, settings, report)
        elif not await owns_log_tables(conn):
            # the worker's own role: partitions ahead and the id registry; drops are the owner's
            report.drops_left_to = await conn.fetchval(
                "SELECT pg_get_userbyid(relowner) FROM pg_class WHERE oid = 'events'::regclass"
            )
            await _premake(conn, settings, metrics, report, partitions)
            await _prune_event_ids(conn, report)
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
    except (*CONNECTION_ERRORS, *CUT_SHORT_ERRORS) as e:
        if not await gone(e, conn):
            raise  # improper use of asyncpg: a bug, not an outage
        report.error = f"PostgreSQL unavailable: {type(e).__name__}: {e}"
        unavailable = e
    except (asyncpg.PostgresError, HeldRowsSchemaError) as e:
        report.error = f"{type(e).__name__}: {e}"
    report.duration_seconds = time.perf_counter() - started
    if metrics is not None:
        metrics.duration.set(report.duration_seconds)
        if report.error:
            metrics.failures.labels("run").inc()
        elif not report.skipped and not dry_run:
            metrics.last_success.set(now.timestamp())
    if unavailable is not None:
        _outage.down(unavailable, "maintenance retries at its next run")
    else:
        _outage.up()
    if report.error and unavailable is None:
        log.warning("maintenance failed: %s", report.error)
    elif report.deferred:
        # one record per run naming each deferred partition and why (the CLI prints the same lines)
        log.warning("%s", report.render())
    elif report.dropped or report.purged_held:
        log.info("%s", report.render())
    return report


async def owns_log_tables(conn: asyncpg.Connection) -> bool:
    """May this session drop day partitions? DETACH ... CONCURRENTLY and DROP need the owner of the log
    tables (or a member of its role). The worker's own role (`<schema>_worker`, migration 0008) is not: a
    run on it makes partitions ahead and prunes the event-id registry, and leaves drops, held rows and the
    ledger to `roomlogs retention enforce --apply` run as the owner."""
    return bool(
        await conn.fetchval(
            "SELECT pg_has_role(current_user, relowner, 'USAGE') FROM pg_class WHERE oid = 'events'::regclass"
        )
    )


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
        await drop_expired(conn, plan, run_id, metrics, report, lock_timeout_ms)
        if plan.held_expired:
            await purge_released_holds(conn, plan, run_id, metrics, report, lock_timeout_ms)
        await _prune_event_ids(conn, report)
    except Exception as e:
        # Record the failure when the connection still works; the error itself is reported by maintain().
        if not lost(e, conn):
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


async def _prune_event_ids(conn: asyncpg.Connection, report: MaintenanceReport) -> None:
    """Forget ids of events no class could accept again: older than the longest retention, and a day.

    The registry (pipeline/storage/event_ids.py) holds ids, times and fingerprints, no log content; it is
    pruned row by row (in chunks) because a partitioned table could not keep an id unique on its own.
    """
    days = await retention_days(conn)
    if not days:
        return
    longest = max(days.values())
    cutoff = day_start(report.as_of - timedelta(days=longest + 1))
    report.ids_pruned = await event_ids.prune(conn, cutoff)


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
    classes = sorted(await class_names(conn))
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


# --- dry run --------------------------------------------------------------------------------------------
async def _dry_run(conn: asyncpg.Connection, settings: Settings, report: MaintenanceReport) -> None:
    plan = await plan_retention(
        conn, today=report.as_of, dead_letter_retention_days=settings.dead_letter_retention_days
    )
    report.unruled = [f"{u.partition.name}: {u.why}" for u in plan.unruled]
    held = await active_rooms(conn)
    for exp in plan.expired:
        sp = exp.partition
        try:
            if sp.table == EVENTS:
                total, held_rows = await counts(conn, sp.name, held)
            else:
                total, held_rows = await count_rows(conn, sp.name), 0
        except asyncpg.UndefinedTableError:
            continue  # dropped meanwhile
        report.would_drop.append(
            DroppedPartition(
                sp.table,
                sp.retention_class,
                exp.day,
                sp.name,
                total,
                held_rows,
                exp.retention_days,
                resumed=exp.begun_by is not None,
            )
        )
    report.would_purge_held = [PurgedHeld(h.retention_class, h.day, h.rows) for h in plan.held_expired]
