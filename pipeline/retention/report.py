"""What one maintenance run did (or, in a dry run, would do), for logs, the CLI and tests."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import date

from pipeline.storage.catalog import ATTACHED, DETACH_PENDING, DETACHED

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
    #: the whole partition (detach, then the transaction that counts, copies held rows, drops, writes the
    #: ledger), the DETACH ... CONCURRENTLY (or FINALIZE) alone, and the DROP statement alone
    seconds: float = 0.0
    drop_seconds: float = 0.0
    detach_seconds: float = 0.0
    #: an earlier run had begun detaching it (it was left detach pending or detached)
    resumed: bool = False

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
    #: where it was left: attached (nothing done), detach_pending or detached (out of the live data
    #: already, rows still stored until the next run drops them)
    state: str = ATTACHED
    #: the partitioned table it belongs (or belonged) to
    parent: str = ""

    def render(self) -> str:
        why = f"{self.reason}: {self.detail}" if self.detail else self.reason
        if self.state == DETACH_PENDING:
            why += f"; its detach is begun ({self.parent} no longer shows its rows), the next run finishes it"
        elif self.state == DETACHED:
            why += f"; detached from {self.parent}, the next run drops it"
        else:
            why += "; retried next run"
        return f"deferred {self.partition}: {why}"


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
    #: set when the run was on a role that may not drop partitions (the worker's own): the owner's name.
    #: Such a run makes partitions ahead and prunes event ids only.
    drops_left_to: str | None = None
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
    #: event-id registry entries pruned (events older than the longest retention)
    ids_pruned: int = 0
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
            resumed = ", detach begun by an earlier run" if d.resumed else ""
            lines.append(
                f"{verb} {d.partition} ({d.row_count} rows, retention {d.retention_days} days{held}{resumed})"
            )
        purged = self.would_purge_held if self.dry_run else self.purged_held
        verb = "would delete" if self.dry_run else "deleted"
        for p in purged:
            lines.append(f"{verb} {p.rows} preserved rows of released holds ({p.retention_class}, {p.day})")
        lines.extend(f.render() for f in self.deferred)
        if self.ids_pruned:
            lines.append(f"forgot {self.ids_pruned} event ids older than the longest retention")
        if self.drops_left_to is not None:
            lines.append(
                f"expired partitions are dropped by their owner: run `roomlogs retention enforce --apply` "
                f"as {self.drops_left_to}"
            )
        elif not drops and not purged and not self.deferred and not self.error:
            lines.append("nothing has expired")
        for u in self.unruled:
            lines.append(f"under no retention rule, left alone: {u}")
        if self.error:
            lines.append(f"failed: {self.error}")
        lines.append(f"outcome: {self.outcome} in {self.duration_seconds:.2f}s")
        return "\n".join(lines)
