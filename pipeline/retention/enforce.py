"""The deleting steps of a maintenance run: drop expired day partitions, purge released holds' rows.

Who calls it: `pipeline.retention.maintenance` only, with the maintenance lock held and a run id recorded.
Each expired partition goes in three steps (see `detach` for the mechanics and for crash safety):

1. record that the run begins detaching it (`retention_detaching`, committed);
2. `DETACH PARTITION ... CONCURRENTLY` (or `... FINALIZE` for one an earlier run left detach pending):
   the partition leaves `events_<class>` / `dead_letters`, and queries through them stop seeing its rows;
3. one transaction on the detached table: lock it ACCESS EXCLUSIVE (only sessions that read it by its own
   name can be in the way), lock `legal_holds` SHARE (a hold being placed right now is either committed
   before, and honoured, or waits until the table is gone; it is never half-applied), count the rows
   exactly, copy the held rooms' rows to `held_events`, `DROP TABLE`, append the ledger row, delete the
   step-1 record, commit.

A day of `events` takes its rollup and alert tables with it (pipeline.storage.rollups and .alerts,
migrations 0016 and 0017): after step 2 (or when a run resumes a detached day) each is detached the same
way, CONCURRENTLY (or FINALIZEd), and step 3 drops them in its transaction, so no rollup or alert outlives
the rows it counts. Ingest writes rollups and alerts through the parents, like rows: the same reasoning
keeps it from waiting.

Every lock wait is bounded by the run's lock timeout; when one expires the partition is deferred to the
next run, which resumes at the step this one reached. A partition left detach pending or detached is out
of the live data already; `retention check` still counts its rows until it is dropped.

Cost for ingest: nothing here takes a lock that ingest's writes wait for. Ingest's COPY takes ROW
EXCLUSIVE on `events`, `events_<class>` and the day it writes (today's, never an expired one); step 2
takes SHARE UPDATE EXCLUSIVE on the parent and locks only the expired partition exclusively; step 3 locks
tables ingest does not write. The one conflict is with DDL: a partition created on demand by ingest
(CREATE TABLE ... PARTITION OF takes ACCESS EXCLUSIVE on the class table) waits while step 2 holds the
parent, which is milliseconds unless step 2 is waiting for a lock, and never longer than the lock timeout.

Released holds: preserved rows whose rooms have no active hold and whose class's retention has passed are
deleted in one transaction authorized with `roomlogs.authorized_deletion` (the only DELETE retention
does; `held_events` is small and not partitioned), one ledger row per class and day.
"""

from __future__ import annotations

import dataclasses
import logging
import time
import uuid
from collections.abc import Awaitable
from datetime import date

import asyncpg

from pipeline.retention import detach, ledger
from pipeline.retention.catalog import EVENTS, StoredPartition, count_rows
from pipeline.retention.exceptions import HeldRowsSchemaError
from pipeline.retention.metrics import RetentionMetrics
from pipeline.retention.plan import ExpiredPartition, RetentionPlan
from pipeline.retention.report import DeferredPartition, DroppedPartition, MaintenanceReport, PurgedHeld
from pipeline.storage import alerts, catalog, holds, rollups
from pipeline.storage.catalog import ATTACHED, DETACH_PENDING, DETACHED, ident
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
    for name in plan.stale_detaches:
        await detach.forget(conn, name)
    columns = await _held_columns(conn) if any(e.partition.table == EVENTS for e in plan.expired) else []
    #: what a lock timeout showed to be in use (a parent, or legal_holds) -> which partition found it: the
    #: others behind it would wait just as long, so the run waits at most one lock timeout per parent
    #: (plus one per partition a reader holds directly). A parent with a detach left pending is blocked
    #: too: it can have only one at a time.
    blocked: dict[str, str] = {}
    for exp in plan.expired:
        sp = exp.partition
        waits_for = sp.parent if sp.parent in blocked else None
        if sp.table == EVENTS and holds.TABLE in blocked:
            waits_for = holds.TABLE
        if waits_for:
            _defer(report, metrics, exp, "lock_timeout", f"{waits_for} in use (see {blocked[waits_for]})")
            continue
        try:
            dropped = await _drop_one(conn, exp, run_id, report.as_of, columns, lock_timeout_ms)
        except _LockTimeout as e:
            if e.blocks:
                blocked.setdefault(e.blocks, sp.name)
            pids = ", ".join(str(p) for p in await detach.holders(conn, e.what))
            by = f"another session (pid {pids})" if pids else "another session"
            _defer(
                report,
                metrics,
                exp,
                "lock_timeout",
                f"{e.what} in use by {by} for over {lock_timeout_ms} ms",
                e.state,
            )
            continue
        except _Gone:
            log.info("%s was dropped by someone else meanwhile", sp.name)
            await detach.forget(conn, sp.name)
            continue
        except _Reattached:
            _defer(report, metrics, exp, "error", "attached again by someone after it was detached", ATTACHED)
            continue
        except asyncpg.PostgresError as e:
            if isinstance(e, CONNECTION_ERRORS):
                raise
            state = await catalog.state_of(conn, sp.name) or DETACHED
            if state == DETACH_PENDING:
                blocked.setdefault(sp.parent, sp.name)
            reason = "deadlock" if isinstance(e, asyncpg.DeadlockDetectedError) else "error"
            _defer(report, metrics, exp, reason, f"{type(e).__name__} (SQLSTATE {e.sqlstate}): {e}", state)
            if metrics is not None and reason == "error":
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
    state: str | None = None,
) -> None:
    """Leave the partition for the next run (the report, and so the run's log line, says which and why)."""
    sp = exp.partition
    report.deferred.append(
        DeferredPartition(
            sp.table, sp.retention_class, exp.day, sp.name, reason, detail, state or sp.state, sp.parent
        )
    )
    if metrics is not None:
        metrics.partitions_deferred.labels(sp.parent).inc()


class _LockTimeout(Exception):
    """lock_timeout expired waiting for `what`; the partition is left in `state`. `blocks`: the parent or
    `legal_holds` when the partitions after it would wait for the same session."""

    def __init__(self, what: str, state: str, blocks: str | None) -> None:
        super().__init__(what)
        self.what = what
        self.state = state
        self.blocks = blocks


class _Gone(Exception):
    """The partition no longer exists (dropped by someone else)."""


class _Reattached(Exception):
    """The detached table was attached again by someone before it could be dropped."""


async def _drop_one(
    conn: asyncpg.Connection,
    exp: ExpiredPartition,
    run_id: uuid.UUID,
    as_of: date,
    columns: list[str],
    lock_timeout_ms: int,
) -> DroppedPartition:
    started = time.perf_counter()
    if exp.partition.state != DETACHED:
        await _detach(conn, exp, run_id, as_of, lock_timeout_ms)
    if exp.partition.table == EVENTS:
        await _detach_rollups(conn, exp, lock_timeout_ms)
    detached = time.perf_counter()
    dropped = await _drop_detached(conn, exp, run_id, as_of, columns, lock_timeout_ms)
    return dataclasses.replace(
        dropped,
        seconds=time.perf_counter() - started,
        detach_seconds=detached - started,
        resumed=exp.begun_by is not None and exp.begun_by != run_id,
    )


async def _detach(
    conn: asyncpg.Connection, exp: ExpiredPartition, run_id: uuid.UUID, as_of: date, lock_timeout_ms: int
) -> None:
    """Steps 1 and 2: afterwards the partition is a detached table (or an exception says where it is)."""
    sp = exp.partition
    if exp.begun_by is None:
        await detach.begin(conn, sp, exp.retention_days, run_id, as_of)
    try:
        if sp.state == DETACH_PENDING:
            await detach.finalize(conn, sp, lock_timeout_ms)
        else:
            await detach.concurrently(conn, sp, lock_timeout_ms)
    except asyncpg.PostgresError as e:
        if isinstance(e, CONNECTION_ERRORS):
            raise
        state = await catalog.state_of(conn, sp.name)
        if state is None:
            raise _Gone from e
        if state == DETACHED:
            return  # it completed after all
        if state != DETACH_PENDING:
            await detach.forget(conn, sp.name)  # nothing begun: the next run decides afresh
        if not isinstance(e, asyncpg.LockNotAvailableError):
            raise
        # who was in the way: a session on the partition itself, or else on its parent
        what = sp.name if await detach.holders(conn, sp.name) else sp.parent
        blocks = sp.parent if state == DETACH_PENDING or what == sp.parent else None
        raise _LockTimeout(what, state, blocks) from e


def _rollup_partitions(exp: ExpiredPartition) -> list[tuple[str, str, str]]:
    """(table, parent, name) of the rollup and alert tables of an expired day of `events` (none for a stray
    leaf): they go with it the same way."""
    cls = exp.partition.retention_class
    if exp.partition.table != EVENTS or not cls:
        return []
    return rollups.day_partitions(cls, exp.day) + alerts.day_partitions(cls, exp.day)


async def _detach_rollups(conn: asyncpg.Connection, exp: ExpiredPartition, lock_timeout_ms: int) -> None:
    """Step 2 for the day's rollup tables: detach each still attached (FINALIZE one left pending); those
    detached already, or never made, need nothing. A lock timeout defers the day like one of step 2's."""
    sp = exp.partition
    for table, parent, name in _rollup_partitions(exp):
        state = await catalog.state_of(conn, name)
        if state in (None, DETACHED):
            continue
        rollup = StoredPartition(table, parent, name, sp.retention_class, exp.day, False, state)
        try:
            if state == DETACH_PENDING:
                await detach.finalize(conn, rollup, lock_timeout_ms)
            else:
                await detach.concurrently(conn, rollup, lock_timeout_ms)
        except asyncpg.LockNotAvailableError as e:
            what = name if await detach.holders(conn, name) else parent
            # the class's next days wait for the same session on the same rollup table
            raise _LockTimeout(what, DETACHED, sp.parent) from e


async def _drop_detached(
    conn: asyncpg.Connection,
    exp: ExpiredPartition,
    run_id: uuid.UUID,
    as_of: date,
    columns: list[str],
    lock_timeout_ms: int,
) -> DroppedPartition:
    """Step 3, in one transaction."""
    sp = exp.partition
    async with conn.transaction():
        await conn.execute(f"SET LOCAL lock_timeout = {int(lock_timeout_ms)}")
        await _lock(conn.execute(f"LOCK TABLE {ident(sp.name)} IN ACCESS EXCLUSIVE MODE"), sp.name)
        if await catalog.state_of(conn, sp.name) != DETACHED:
            # attached again by someone: dropping it now would lock the parent, which ingest writes to
            raise _Reattached(sp.name)
        for _, _, name in _rollup_partitions(exp):
            if await catalog.state_of(conn, name) not in (None, DETACHED):
                raise _Reattached(name)  # the same for a rollup table of the day
        held_rows = 0
        if sp.table == EVENTS:
            await _lock(holds.lock_shared(conn), holds.TABLE)
            held = await holds.active_rooms(conn)
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
        for _, _, name in _rollup_partitions(exp):
            await conn.execute(f"DROP TABLE IF EXISTS {ident(name)}")
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
        await detach.forget(conn, sp.name)
    return DroppedPartition(
        sp.table,
        sp.retention_class,
        exp.day,
        sp.name,
        total,
        held_rows,
        exp.retention_days,
        drop_seconds=drop_seconds,
    )


async def _lock(statement: Awaitable[object], what: str) -> None:
    """Await a LOCK `statement` on table `what`, telling a lock timeout and a vanished table apart."""
    try:
        await statement
    except asyncpg.LockNotAvailableError as e:
        raise _LockTimeout(what, DETACHED, holds.TABLE if what == holds.TABLE else None) from e
    except asyncpg.UndefinedTableError as e:
        raise _Gone from e


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
            await holds.lock_shared(conn)
            await conn.execute("SET LOCAL roomlogs.authorized_deletion = 'on'")
            rows = await conn.fetch(
                f"""WITH gone AS (
                       DELETE FROM held_events h
                        USING retention_classes rc
                        WHERE rc.name = h.retention_class
                          AND h.occurred_at < (($1::date - rc.retention_days)::timestamp AT TIME ZONE 'UTC')
                          AND NOT {holds.ACTIVE_HOLD_ON.format(room="h.room_id")}
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
