"""Changing a retention class's days, audited. The rules themselves (a room's class, when a day
expires, what may still be written) are in pipeline/retention_rules.py: start there.

When a class's retention changes: the next maintenance run applies the new number of days to every row of
the class, including rows stored before the change. Shortening deletes more at that run; lengthening
keeps what is still stored longer, but cannot bring back what is already dropped.
"""

from __future__ import annotations

import asyncpg

from pipeline.retention.exceptions import RetentionError, UnknownRetentionClassError
from pipeline.storage.classes import MAX_RETENTION_DAYS, class_names, update_retention_days

__all__ = ["set_retention_days"]


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
