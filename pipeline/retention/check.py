"""The retention check: "is any log older than its class's retention still stored?"

Who calls it: `roomlogs retention check` (exit code 1 when the answer is yes, for cron and monitoring).
The answer is yes when, on `today`, any of these exists:
- an `events` day partition past its class's retention, or a `dead_letters` one past
  `dead_letter_retention_days` (rows counted exactly);
- rows preserved for legal holds whose rooms are no longer held and which are past their class's retention;
- a leaf partition under no retention rule (a DEFAULT catch-all, a table with no day in its name, a class
  that is not configured any more): nothing guarantees its rows are ever deleted.
Rows of rooms under an active hold are not offending: keeping them is the point of the hold.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

import asyncpg

from pipeline.retention.catalog import count_rows
from pipeline.retention.plan import plan_retention
from pipeline.storage.catalog import DETACH_PENDING, DETACHED

__all__ = ["CheckResult", "Offending", "check_retention"]


@dataclass(frozen=True, slots=True)
class Offending:
    #: a partition name, or "held_events"
    name: str
    table: str
    retention_class: str | None
    day: date | None
    rows: int
    why: str


@dataclass(slots=True)
class CheckResult:
    as_of: date
    offending: list[Offending] = field(default_factory=list)

    @property
    def overdue(self) -> bool:
        return bool(self.offending)

    def render(self) -> str:
        if not self.offending:
            return f"no: nothing older than its retention is stored (as of {self.as_of})"
        lines = [
            f"yes: {len(self.offending)} item(s) older than their retention are stored (as of {self.as_of})"
        ]
        for o in self.offending:
            lines.append(f"  {o.name}  ({o.rows} rows) {o.why}")
        return "\n".join(lines)


async def check_retention(
    conn: asyncpg.Connection, *, today: date, dead_letter_retention_days: int
) -> CheckResult:
    plan = await plan_retention(conn, today=today, dead_letter_retention_days=dead_letter_retention_days)
    result = CheckResult(today)
    for exp in plan.expired:
        sp = exp.partition
        try:
            rows = await count_rows(conn, sp.name)
        except asyncpg.UndefinedTableError:
            continue  # dropped while we looked
        why = f"day {exp.day} is past its {exp.retention_days}-day retention"
        if sp.state == DETACH_PENDING:
            why += f" (detach pending: {sp.parent} no longer shows it; the next run drops it)"
        elif sp.state == DETACHED:
            why += f" (detached from {sp.parent}, not dropped yet; the next run drops it)"
        result.offending.append(Offending(sp.name, sp.table, sp.retention_class, exp.day, rows, why))
    for h in plan.held_expired:
        why = (
            f"preserved rows of released holds, {h.retention_class} day {h.day} past {h.retention_days} days"
        )
        result.offending.append(
            Offending("held_events", "held_events", h.retention_class, h.day, h.rows, why)
        )
    for cls, rows in plan.held_unruled:
        why = f"preserved rows of released holds in class {cls!r}, which is not in retention_classes"
        result.offending.append(Offending("held_events", "held_events", cls, None, rows, why))
    for u in plan.unruled:
        try:
            rows = await count_rows(conn, u.partition.name)
        except asyncpg.UndefinedTableError:
            continue
        result.offending.append(
            Offending(
                u.partition.name, u.partition.table, u.partition.retention_class, u.partition.day, rows, u.why
            )
        )
    return result
