"""What one maintenance run did (or, in a dry run, would do), for logs, the CLI and tests."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import date

__all__ = ["DeferredPartition", "DroppedPartition", "MaintenanceReport", "PurgedHeld"]

SKIPPED_LOCKED = "another maintainer is running"


@dataclass(frozen=True, slots=True)
class DroppedPartition:
    table: str
    retention_class: str | None
    day: date
    partition: str
    #: rows in the partition when it was dropped (in a dry run: now)
    row_count: int
    #: rows of held rooms copied to held_events first (in a dry run: that would be)
    rows_held: int
    retention_days: int
    #: the partition's whole transaction (locks, count, held-row copy, DROP, ledger) and the DROP alone
    seconds: float = 0.0
    drop_seconds: float = 0.0

    @property
    def rows_deleted(self) -> int:
        return self.row_count - self.rows_held


@dataclass(frozen=True, slots=True)
class DeferredPartition:
    """An expired partition left for the next run."""

    table: str
    retention_class: str | None
    day: date
    partition: str
    #: lock_timeout (a reader holds the partition or its parent) | deadlock | error
    reason: str
    detail: str = ""


@dataclass(frozen=True, slots=True)
class PurgedHeld:
    retention_class: str
    day: date
    rows: int


@dataclass(slots=True)
class MaintenanceReport:
    as_of: date
    dry_run: bool = False
    run_id: uuid.UUID | None = None
    #: set when the run did nothing on purpose (another maintainer holds the lock)
    skipped: str | None = None
    #: set when the run stopped on an error (PostgreSQL unreachable, ...)
    error: str | None = None
    created: int = 0
    dropped: list[DroppedPartition] = field(default_factory=list)
    would_drop: list[DroppedPartition] = field(default_factory=list)
    deferred: list[DeferredPartition] = field(default_factory=list)
    purged_held: list[PurgedHeld] = field(default_factory=list)
    would_purge_held: list[PurgedHeld] = field(default_factory=list)
    #: leaves under no retention rule (never dropped automatically): "name: why"
    unruled: list[str] = field(default_factory=list)
    duration_seconds: float = 0.0

    @property
    def outcome(self) -> str:
        """skipped | failed | partial (something left for the next run) | ok."""
        if self.skipped:
            return "skipped"
        if self.error:
            return "failed"
        if self.deferred:
            return "partial"
        return "ok"

    @property
    def rows_deleted(self) -> int:
        return sum(d.rows_deleted for d in self.dropped) + sum(p.rows for p in self.purged_held)

    @property
    def rows_held(self) -> int:
        return sum(d.rows_held for d in self.dropped)

    def render(self) -> str:
        """Human-readable lines for the CLI and logs."""
        head = f"maintenance as of {self.as_of}" + (" (dry run: nothing changed)" if self.dry_run else "")
        if self.run_id:
            head += f", run {self.run_id}"
        lines = [head]
        if self.skipped:
            lines.append(f"skipped: {self.skipped}")
            return "\n".join(lines)
        if not self.dry_run:
            lines.append(f"partitions created ahead: {self.created}")
        verb, drops = ("would drop", self.would_drop) if self.dry_run else ("dropped", self.dropped)
        for d in drops:
            held = f", {d.rows_held} rows of held rooms preserved" if d.rows_held else ""
            lines.append(
                f"{verb} {d.partition} ({d.row_count} rows, retention {d.retention_days} days{held})"
            )
        purged = self.would_purge_held if self.dry_run else self.purged_held
        verb = "would delete" if self.dry_run else "deleted"
        for p in purged:
            lines.append(f"{verb} {p.rows} preserved rows of released holds ({p.retention_class}, {p.day})")
        if not drops and not purged:
            lines.append("nothing has expired")
        for f in self.deferred:
            lines.append(
                f"deferred {f.partition}: {f.reason}{': ' + f.detail if f.detail else ''} (retried next run)"
            )
        for u in self.unruled:
            lines.append(f"under no retention rule, left alone: {u}")
        if self.error:
            lines.append(f"failed: {self.error}")
        lines.append(f"outcome: {self.outcome} in {self.duration_seconds:.2f}s")
        return "\n".join(lines)
