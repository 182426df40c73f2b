"""What retention requires on a given day: the plan that enforcement carries out and `check` reports.

Pure reads. `plan_retention()` lists
- expired day partitions: `events_<class>_pYYYYMMDD` past their class's retention, `dead_letters_pYYYYMMDD`
  past `dead_letter_retention_days`;
- preserved rows (`held_events`) of rooms with no active hold, past their class's retention, by class and day;
- leaves under no retention rule: a DEFAULT partition, a table whose name carries no day, a class table
  whose class is no longer in `retention_classes`. Enforcement never guesses about these; `check` reports
  them as offending.

A day whose detach an earlier run began (a row in `retention_detaching`, see `detach`) and that is still
stored, detach pending or detached, is expired whatever the policy says now: it left the live data when
the detach began, so the next run finishes it with the retention it expired under. These come first, so a
pending detach is finished before another partition of its parent is detached. A detach pending or a
detached day table that no run began (someone ran DETACH by hand) is under no retention rule.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import date

import asyncpg

from pipeline.retention import detach
from pipeline.retention.catalog import DEAD_LETTERS, EVENTS, StoredPartition, list_detached, list_partitions
from pipeline.retention_rules import horizon, is_expired
from pipeline.storage.catalog import ATTACHED, DETACH_PENDING, DETACHED
from pipeline.storage.classes import retention_days
from pipeline.storage.holds import ACTIVE_HOLD_ON

__all__ = ["ExpiredPartition", "HeldExpiry", "RetentionPlan", "UnruledPartition", "plan_retention"]


@dataclass(frozen=True, slots=True)
class ExpiredPartition:
    partition: StoredPartition
    retention_days: int
    #: the run that began detaching it, when an earlier run did (its drop is unfinished)
    begun_by: uuid.UUID | None = None

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
    #: `retention_detaching` rows with nothing left to finish: the table is gone, or still attached and no
    #: longer expired (a run stopped before its detach began, then the class's retention was lengthened)
    stale_detaches: list[str] = field(default_factory=list)


async def plan_retention(
    conn: asyncpg.Connection, *, today: date, dead_letter_retention_days: int
) -> RetentionPlan:
    classes = await retention_days(conn)
    plan = RetentionPlan(today, classes, dead_letter_retention_days)
    begun = await detach.unfinished(conn)
    for sp in [*await list_partitions(conn), *await list_detached(conn)]:
        started = begun.pop(sp.name, None)
        if started is not None and sp.state != ATTACHED:
            plan.expired.append(ExpiredPartition(sp, started.retention_days, started.run_id))
            continue
        days, why = _rule(sp, classes, dead_letter_retention_days)
        if days is None:
            plan.unruled.append(UnruledPartition(sp, why))
        elif sp.day is not None and is_expired(sp.day, today, days):
            plan.expired.append(ExpiredPartition(sp, days))
        elif started is not None:
            plan.stale_detaches.append(sp.name)
        elif sp.state == DETACH_PENDING:
            why = f"detach pending, begun outside retention: {sp.parent} no longer shows its rows"
            plan.unruled.append(UnruledPartition(sp, why))
    plan.stale_detaches.extend(begun)  # their tables no longer exist
    # unfinished detaches first: a parent may have one pending detach at a time
    plan.expired.sort(key=lambda e: (e.partition.state == ATTACHED, e.partition.parent, e.day))
    rows = await conn.fetch(
        f"""SELECT h.retention_class, (h.occurred_at AT TIME ZONE 'UTC')::date AS day, count(*) AS n,
                  min(rc.retention_days) AS retention_days
             FROM held_events h
             LEFT JOIN retention_classes rc ON rc.name = h.retention_class
            WHERE NOT {ACTIVE_HOLD_ON.format(room="h.room_id")}
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


def _rule(
    sp: StoredPartition, classes: dict[str, int], dead_letter_retention_days: int
) -> tuple[int | None, str]:
    """(retention days, "") for a day partition under a rule, else (None, why it is under none)."""
    if sp.state == DETACHED:
        return None, f"detached from {sp.parent} outside retention: no longer part of {sp.table}"
    if sp.is_default:
        return None, "a DEFAULT (catch-all) partition: rows of any day"
    if sp.day is None:
        return None, "not a day partition (no _pYYYYMMDD suffix)"
    if sp.table == DEAD_LETTERS:
        return dead_letter_retention_days, ""
    if sp.table == EVENTS and sp.retention_class in classes:
        return classes[sp.retention_class], ""
    return None, f"retention class {sp.retention_class!r} is not in retention_classes"
