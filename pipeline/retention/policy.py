"""Retention classes and when a day expires.

A room's rows are written with the retention class the room had at that moment (see
`pipeline.ingest.rooms`); the class's `retention_days` (table `retention_classes`, changed at runtime with
`roomlogs retention classes set`) decides when the day partition holding them expires.

Expiry rule, shared with the ingest stage (`pipeline.storage.partitions.horizon`): with N retention days,
the partition of UTC day d is kept through day d + N and expires when day d + N + 1 begins; the next
maintenance run drops it. So every row is kept at least N full days and at most N + 1 days plus one
maintenance interval.

When a room changes class (a public room made private, a room growing past `busy_room_min_occupancy`):
rows already stored keep the class they were written with, and so that class's retention; the room's
events from the change on are written under the new class. Stored rows never move between classes (rows
cannot be edited, and moving them would re-time deletions already promised). A room's history may
therefore span classes: e.g. a public room made private keeps its public-era rows 14 days and its
private-era rows 30. A legal hold applies to all of a room's rows, whatever their class.

When a class's retention changes: the next maintenance run applies the new number of days to every row of
the class, including rows stored before the change. Shortening deletes more at that run; lengthening
keeps what is still stored longer, but cannot bring back what is already dropped.
"""

from __future__ import annotations

from datetime import date

import asyncpg

from pipeline.retention.exceptions import RetentionError, UnknownRetentionClassError
from pipeline.storage.classes import MAX_RETENTION_DAYS, class_names, update_retention_days
from pipeline.storage.partitions import horizon

__all__ = ["is_expired", "set_retention_days"]


def is_expired(day: date, today: date, retention_days: int) -> bool:
    """True when the partition of `day` is past retention on `today`."""
    return day < horizon(today, retention_days)


async def set_retention_days(
    conn: asyncpg.Connection, name: str, days: int, *, changed_by: str, reason: str = ""
) -> tuple[int, int]:
    """Change a class's retention; return (old days, new days). The change is audited.

    Takes effect at the next maintenance run (and within a minute for the ingest stage's horizon).
    Shortening drops more days at that run; lengthening keeps days not yet dropped longer, but cannot bring
    back days already dropped. The table itself is `pipeline.storage.classes`'.
    """
    if not 1 <= days <= MAX_RETENTION_DAYS:
        raise RetentionError(f"retention must be between 1 and {MAX_RETENTION_DAYS} days, not {days}")
    if not changed_by.strip():
        raise RetentionError("say who changes the retention (--by)")
    old = await update_retention_days(conn, name, days, changed_by=changed_by.strip(), reason=reason)
    if old is None:
        known = ", ".join(sorted(await class_names(conn))) or "none"
        raise UnknownRetentionClassError(f"no retention class {name!r} (known: {known})")
    return int(old), days
