"""What retention requires on a given day: the plan that enforcement carries out and `check` reports.

Pure reads. `plan_retention()` lists
- expired day partitions: `events_<class>_pYYYYMMDD` past their class's retention, `dead_letters_pYYYYMMDD`
  past `dead_letter_retention_days`;
- preserved rows (`held_events`) of rooms with no active hold, past their class's retention, by class and day;
- leaves under no retention rule: a DEFAULT partition, a table whose name carries no day, a class table
  whose class is no longer in `retention_classes`. Enforcement never guesses about these; `check` reports
  them as offending.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

import asyncpg

from pipeline.retention.catalog import DEAD_LETTERS, EVENTS, StoredPartition, list_partitions
from pipeline.retention.policy import is_expired, load_classes
from pipeline.storage.partitions import horizon

__all__ = ["ExpiredPartition", "HeldExpiry", "RetentionPlan", "UnruledPartition", "plan_retention"]


@dataclass(frozen=True, slots=True)
class ExpiredPartition:
    partition: StoredPartition
    retention_days: int

    @property
    def day(self) -> date:
        assert self.partition.day is not None
        return self.partition.day


@dataclass(frozen=True, slots=True)
class HeldExpiry:
    """Preserved rows of one class and day whose rooms are no longer held, past the class's retention."""

    retention_class: str
    day: date
    rows: int
    retention_days: int


@dataclass(frozen=True, slots=True)
class UnruledPartition:
    partition: StoredPartition
    why: str


@dataclass(slots=True)
class RetentionPlan:
    as_of: date
    retention_days: dict[str, int]
    dead_letter_retention_days: int
    expired: list[ExpiredPartition] = field(default_factory=list)
    held_expired: list[HeldExpiry] = field(default_factory=list)
    unruled: list[UnruledPartition] = field(default_factory=list)
    #: preserved rows whose class is not in retention_classes: (class, rows)
    held_unruled: list[tuple[str, int]] = field(default_factory=list)
    stored: list[StoredPartition] = field(default_factory=list)


async def plan_retention(
    conn: asyncpg.Connection, *, today: date, dead_letter_retention_days: int
) -> RetentionPlan:
    classes = {name: c.retention_days for name, c in (await load_classes(conn)).items()}
    plan = RetentionPlan(today, classes, dead_letter_retention_days)
    plan.stored = await list_partitions(conn)
    for sp in plan.stored:
        if sp.is_default:
            plan.unruled.append(UnruledPartition(sp, "a DEFAULT (catch-all) partition: rows of any day"))
            continue
        if sp.day is None:
            plan.unruled.append(UnruledPartition(sp, "not a day partition (no _pYYYYMMDD suffix)"))
            continue
        if sp.table == DEAD_LETTERS:
            days = dead_letter_retention_days
        elif sp.table == EVENTS and sp.retention_class in classes:
            days = classes[sp.retention_class]
        else:
            plan.unruled.append(
                UnruledPartition(sp, f"retention class {sp.retention_class!r} is not in retention_classes")
            )
            continue
        if is_expired(sp.day, today, days):
            plan.expired.append(ExpiredPartition(sp, days))
    rows = await conn.fetch(
        """SELECT h.retention_class, (h.occurred_at AT TIME ZONE 'UTC')::date AS day, count(*) AS n,
                  min(rc.retention_days) AS retention_days
             FROM held_events h
             LEFT JOIN retention_classes rc ON rc.name = h.retention_class
            WHERE NOT EXISTS (SELECT 1 FROM legal_holds l
                               WHERE l.room_id = h.room_id AND l.released_at IS NULL)
            GROUP BY 1, 2
            ORDER BY 1, 2"""
    )
    unruled: dict[str, int] = {}
    for r in rows:
        if r["retention_days"] is None:
            unruled[r["retention_class"]] = unruled.get(r["retention_class"], 0) + r["n"]
        elif r["day"] < horizon(today, r["retention_days"]):
            plan.held_expired.append(HeldExpiry(r["retention_class"], r["day"], r["n"], r["retention_days"]))
    plan.held_unruled = sorted(unruled.items())
    return plan
