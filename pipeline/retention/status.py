"""The state of the partition lifecycle: per partitioned table, what is stored, how far ahead, what is late.

Who calls it: `roomlogs partitions` (the report) and the maintenance run (refreshing the state gauges).
Reads the catalog; counts rows only in DEFAULT partitions, which roomlogs never creates. A day that
retention has detached from its table but not dropped yet still counts as an expired partition (it still
holds its rows), though not as one of the table's partitions.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import asyncpg

from pipeline.retention.catalog import DEAD_LETTERS, count_rows, list_detached, list_partitions
from pipeline.retention.metrics import RetentionMetrics
from pipeline.retention_rules import is_expired
from pipeline.storage.classes import retention_days
from pipeline.storage.holds import count_active
from pipeline.storage.partitions import class_table, day_start

__all__ = ["PartitionSetStatus", "observe", "partition_status"]

_DAY_SECONDS = 86_400


@dataclass(frozen=True, slots=True)
class PartitionSetStatus:
    #: the partitioned table: events_<class> or dead_letters
    table: str
    retention_class: str | None
    #: None for a class table whose class is no longer configured
    retention_days: int | None
    partitions: int
    oldest: date | None
    newest: date | None
    has_today: bool
    #: consecutive days after today that have a partition
    ahead_days: int
    #: partitions past retention still stored (detached days not dropped yet included)
    expired: int
    #: rows in a DEFAULT partition of this table (0: roomlogs makes none)
    catchall_rows: int


async def partition_status(
    conn: asyncpg.Connection, *, today: date, dead_letter_retention_days: int
) -> list[PartitionSetStatus]:
    classes = await retention_days(conn)
    days: dict[str, set[date]] = {class_table(c): set() for c in classes}
    days[DEAD_LETTERS] = set()
    class_of: dict[str, str | None] = {class_table(c): c for c in classes}
    class_of[DEAD_LETTERS] = None
    catchall: dict[str, int] = {}
    for sp in await list_partitions(conn):
        days.setdefault(sp.parent, set())
        class_of.setdefault(sp.parent, sp.retention_class)
        if sp.is_default:
            catchall[sp.parent] = catchall.get(sp.parent, 0) + await count_rows(conn, sp.name)
        elif sp.day is not None:
            days[sp.parent].add(sp.day)
    detached: dict[str, list[date]] = {}
    for sp in await list_detached(conn):
        if sp.day is not None and sp.parent in days:
            detached.setdefault(sp.parent, []).append(sp.day)
    out = []
    for table in sorted(days):
        cls = class_of[table]
        keep = dead_letter_retention_days if table == DEAD_LETTERS else classes.get(cls or "")
        present = days[table]
        ahead = 0
        while today + timedelta(days=ahead + 1) in present:
            ahead += 1
        out.append(
            PartitionSetStatus(
                table=table,
                retention_class=cls,
                retention_days=keep,
                partitions=len(present),
                oldest=min(present, default=None),
                newest=max(present, default=None),
                has_today=today in present,
                ahead_days=ahead,
                expired=sum(
                    1
                    for d in [*present, *detached.get(table, [])]
                    if keep is not None and is_expired(d, today, keep)
                ),
                catchall_rows=catchall.get(table, 0),
            )
        )
    return out


async def observe(
    conn: asyncpg.Connection, metrics: RetentionMetrics, *, now: datetime, dead_letter_retention_days: int
) -> list[PartitionSetStatus]:
    """Refresh the state gauges from the database; return the status they were set from."""
    today = now.astimezone(UTC).date()
    status = await partition_status(conn, today=today, dead_letter_retention_days=dead_letter_retention_days)
    holds = await count_active(conn)
    held_rows = await conn.fetchval("SELECT count(*) FROM held_events")
    m = metrics
    for gauge in (m.partitions_ahead, m.oldest_partition_age, m.retention_period, m.expired_partitions):
        gauge.clear()  # a class removed since the last run must not keep reporting
    for s in status:
        m.partitions_ahead.labels(s.table).set(s.ahead_days)
        m.expired_partitions.labels(s.table).set(s.expired)
        if s.oldest is not None:
            m.oldest_partition_age.labels(s.table).set((now - day_start(s.oldest)).total_seconds())
        if s.retention_days is not None:
            m.retention_period.labels(s.table).set(s.retention_days * _DAY_SECONDS)
    m.catchall_rows.set(sum(s.catchall_rows for s in status))
    m.legal_holds_active.set(holds)
    m.held_rows.set(held_rows)
    return status
