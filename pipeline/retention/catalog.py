"""What is stored: the day partitions of `events` and `dead_letters`, read from the PostgreSQL catalog.

The catalog, not a cache, is the truth here: retention must see partitions another worker, an operator or
an older version created. A leaf that is not a day partition (a DEFAULT catch-all someone added by hand,
or an oddly named table) is listed with `day=None`, so the retention check can say it is under no rule.

Retention takes a partition out with DETACH PARTITION ... CONCURRENTLY before dropping it, so a day's rows
can also sit in a leaf that is "detach pending" (still attached; queries through the parent no longer see
it) or in a detached table (no longer a partition, same name). Both still hold rows: `list_partitions`
marks the first, `list_detached` finds the second by the shape of its name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date

import asyncpg

from pipeline.storage.partitions import parse_day

__all__ = ["StoredPartition", "count_rows", "ident", "list_detached", "list_partitions"]

EVENTS = "events"
DEAD_LETTERS = "dead_letters"

#: StoredPartition.state: a partition queries see; one an interrupted DETACH ... CONCURRENTLY left "detach
#: pending" (queries through the parent no longer see it; `DETACH ... FINALIZE` completes it); a table
#: detached from its parent and not dropped yet
ATTACHED = "attached"
DETACH_PENDING = "detach_pending"
DETACHED = "detached"

_DETACHED_NAME = re.compile(r"^(?:events_([a-z][a-z0-9_]{0,30})|dead_letters)_p\d{8}$")


@dataclass(frozen=True, slots=True)
class StoredPartition:
    """One leaf partition holding log rows."""

    #: the logical table: "events" or "dead_letters"
    table: str
    #: the partitioned table it is attached to: "events_<class>", "dead_letters" ("events": a stray leaf)
    parent: str
    name: str
    #: None for dead letters and for leaves attached directly to `events`
    retention_class: str | None
    #: None when it is not a day partition
    day: date | None
    is_default: bool
    #: ATTACHED, DETACH_PENDING or DETACHED
    state: str = ATTACHED


async def list_partitions(conn: asyncpg.Connection) -> list[StoredPartition]:
    """Every leaf of `events` and `dead_letters` in the current schema, ordered by parent then day.

    Leaves left "detach pending" are listed (they still hold rows) with `state=DETACH_PENDING`.
    """
    rows = await conn.fetch(
        """SELECT c.relname AS child, p.relname AS parent, c.relkind::text AS kind,
                  coalesce(pg_get_expr(c.relpartbound, c.oid), '') AS bound, i.inhdetachpending
             FROM pg_inherits i
             JOIN pg_class c ON c.oid = i.inhrelid
             JOIN pg_class p ON p.oid = i.inhparent
             JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname = current_schema()"""
    )
    # Class tables are the partitioned children of `events` (LIST by class).
    class_of = {
        r["child"]: r["child"].removeprefix("events_")
        for r in rows
        if r["parent"] == EVENTS and r["kind"] == "p"
    }
    found: list[StoredPartition] = []
    for r in rows:
        if r["kind"] == "p":
            continue  # an intermediate level; its leaves are listed
        parent, child, is_default = r["parent"], r["child"], r["bound"] == "DEFAULT"
        if parent in class_of:
            table, cls = EVENTS, class_of[parent]
        elif parent == EVENTS:
            table, cls = EVENTS, None
        elif parent == DEAD_LETTERS:
            table, cls = DEAD_LETTERS, None
        else:
            continue  # some other partitioned table: not ours to judge
        day = None if is_default else parse_day(child)
        state = DETACH_PENDING if r["inhdetachpending"] else ATTACHED
        found.append(StoredPartition(table, parent, child, cls, day, is_default, state))
    found.sort(key=lambda sp: (sp.parent, sp.day or date.min, sp.name))
    return found


async def list_detached(conn: asyncpg.Connection) -> list[StoredPartition]:
    """Plain tables named like a day partition (`events_<class>_pYYYYMMDD`, `dead_letters_pYYYYMMDD`) that
    are no partition of anything: a day detached from its parent and not dropped (yet). `parent` is the
    table it was detached from, as its name says. Ordered by parent then day."""
    rows = await conn.fetch(
        """SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname = current_schema() AND c.relkind = 'r' AND NOT c.relispartition
              AND (c.relname LIKE 'events\\_%' OR c.relname LIKE 'dead\\_letters\\_p%')"""
    )
    found: list[StoredPartition] = []
    for r in rows:
        m = _DETACHED_NAME.match(r["relname"])
        if m is None:
            continue
        cls = m.group(1)
        table, parent = (EVENTS, f"events_{cls}") if cls else (DEAD_LETTERS, DEAD_LETTERS)
        found.append(
            StoredPartition(table, parent, r["relname"], cls, parse_day(r["relname"]), False, DETACHED)
        )
    found.sort(key=lambda sp: (sp.parent, sp.day or date.min, sp.name))
    return found


async def count_rows(conn: asyncpg.Connection, partition: str) -> int:
    """Exact row count of one partition (a scan: use for the few partitions being judged or dropped).

    An expired day is days old, so autovacuum has marked its pages all-visible: then the count reads the
    primary-key index (an index-only scan, several times less data than the heap) instead of letting the
    planner pick a sequential scan of the table. Still exact either way; only the speed differs.
    """
    async with conn.transaction():  # a savepoint when called inside a drop's transaction
        visible = await conn.fetchrow(
            "SELECT relpages, relallvisible FROM pg_class WHERE oid = $1::regclass", ident(partition)
        )
        if (
            visible is not None
            and visible["relpages"] > 0
            and visible["relallvisible"] >= 0.9 * visible["relpages"]
        ):
            await conn.execute("SET LOCAL enable_seqscan = off")
        n = await conn.fetchval(f"SELECT count(*) FROM {ident(partition)}")
        await conn.execute("SET LOCAL enable_seqscan TO DEFAULT")
    return int(n)


def ident(name: str) -> str:
    """A table name from the catalog, quoted for SQL (names come from PostgreSQL, never from users)."""
    return '"' + name.replace('"', '""') + '"'
