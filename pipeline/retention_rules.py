"""The retention rules, in one pure module: a room's class, and when a day of logs expires.

Who reads it: ingest (which class a room's rows are written under; which days a replay may no longer
write), retention (which partitions a maintenance run drops), the query API and the console (when a day is
purged) and the dead-letter replay. Nothing here does I/O: the classes' days live in `retention_classes`
(pipeline/storage/classes.py, changed at runtime with `roomlogs retention classes set`), the days already
dropped in the deletion ledger (pipeline/storage/partitions.py `dropped_through`).

**A room's class** (`ClassRule`): private rooms are `private`; public rooms with a `max_occupancy` of at
least `busy_min_occupancy` (ROOMLOGS_BUSY_ROOM_MIN_OCCUPANCY) are `busy_public`, other public rooms
`public`; a room the pipeline has no settings for yet is `default_class` (ROOMLOGS_DEFAULT_RETENTION_CLASS).
Rows are written with the class their room had at that moment and never move: a room that changes class
keeps its earlier rows under the old class (and retention), e.g. a public room made private keeps its
public-era rows 14 days and its private-era rows 30. A legal hold applies to all of a room's rows.

**When a day expires** (`horizon`, `is_expired`, `purged_on`): with N retention days, the partition of UTC
day d is kept through day d + N and expires when day d + N + 1 begins; the next maintenance run drops it.
So every row is kept at least N full days and at most N + 1 days plus one maintenance interval.

**What may still be written** (`writable_from`): days inside their class's retention and after any day
retention has already dropped: lengthening a class's retention keeps what is still stored longer, but a
replay never brings back a day that is gone. Shortening deletes more at the next run.

**When a day closes** (`closed_before`): ROOMLOGS_SEAL_LATE_WINDOW_SECONDS after it ends. A closed day is
sealed (pipeline/sealing) and, once sealed, refuses new events (dead letter `day_sealed`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

__all__ = ["ClassRule", "closed_before", "horizon", "is_expired", "purged_on", "writable_from"]


@dataclass(frozen=True, slots=True)
class ClassRule:
    """A room's retention class from its privacy and size settings (see the module docstring)."""

    default_class: str = "public"
    busy_min_occupancy: int = 50

    def __call__(self, privacy: str | None, max_occupancy: int | None) -> str:
        if privacy == "private":
            return "private"
        if privacy == "public":
            if max_occupancy is not None and max_occupancy >= self.busy_min_occupancy:
                return "busy_public"
            return "public"
        return self.default_class


def horizon(today: date, retention_days: int) -> date:
    """Oldest day still inside retention on `today`: days before it are expired."""
    return today - timedelta(days=retention_days)


def is_expired(day: date, today: date, retention_days: int) -> bool:
    """True when the partition of `day` is past retention on `today`."""
    return day < horizon(today, retention_days)


def purged_on(day: date, retention_days: int) -> date:
    """The first day on which the partition of `day` is past retention (the inverse of `horizon`): the
    maintenance run of that day drops it."""
    return day + timedelta(days=retention_days + 1)


def writable_from(
    today: date, days_by_class: Mapping[str, int], dropped_by_class: Mapping[str, date]
) -> dict[str, date]:
    """Oldest day still writable per retention class: inside its retention, and after any day retention
    has dropped (a class whose retention was lengthened does not bring back days already deleted)."""
    out = {}
    for cls, days in days_by_class.items():
        oldest = horizon(today, days)
        gone = dropped_by_class.get(cls)
        out[cls] = gone + timedelta(days=1) if gone is not None and gone >= oldest else oldest
    return out


def closed_before(now: datetime, late_window_seconds: float) -> date:
    """Days before this one are closed at `now`: a day closes `late_window_seconds` after it ends."""
    return (now.astimezone(UTC) - timedelta(seconds=late_window_seconds)).date()
