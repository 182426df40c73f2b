"""What is stored: the day partitions of `events` and `dead_letters`, retention's view of the catalog.

The catalog, not a cache, is the truth here: retention must see partitions another worker, an operator or
an older version created. A leaf that is not a day partition (a DEFAULT catch-all someone added by hand,
or an oddly named table) is listed with `day=None`, so the retention check can say it is under no rule.

Retention takes a partition out with DETACH PARTITION ... CONCURRENTLY before dropping it, so a day's rows
can also sit in a leaf that is "detach pending" (still attached; queries through the parent no longer see
it) or in a detached table (no longer a partition, same name). Both still hold rows: `list_partitions`
marks the first, `list_detached` finds the second by the shape of its name.

Built on the shared listing of `pipeline.storage.catalog` (which the ingest stage's PartitionManager reads
too); this module adds what retention judges by: the logical table, the class, the day, the state.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import asyncpg

from pipeline.storage import catalog
from pipeline.storage.catalog import ATTACHED, DETACH_PENDING, DETACHED, ident
from pipeline.storage.partitions import DAY_PARTITION_LIKE, DAY_PARTITION_NAME, parse_day

__all__ = ["DEAD_LETTERS", "EVENTS", "StoredPartition", "count_rows", "list_detached", "list_partitions"]

EVENTS = "events"
DEAD_LETTERS = "dead_letters"


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
    #: ATTACHED, DETACH_PENDING or DETACHED (pipeline.storage.catalog)
    state: str = ATTACHED


async def list_partitions(conn: asyncpg.Connection) -> list[StoredPartition]:
    """Every leaf of `events` and `dead_letters` in the current schema, ordered by parent then day.

    Leaves left "detach pending" are listed (they still hold rows) with `state=DETACH_PENDING`.
    """
    listed = await catalog.children(conn)
    # Class tables are the partitioned children of `events` (LIST by class).
    class_of = {
        c.name: c.name.removeprefix("events_") for c in listed if c.parent == EVENTS and c.partitioned
    }
    found: list[StoredPartition] = []
    for c in listed:
        if c.partitioned:
            continue  # an intermediate level; its leaves are listed
        parent, child, is_default = c.parent, c.name, c.is_default
        if parent in class_of:
            table, cls = EVENTS, class_of[parent]
        elif parent == EVENTS:
            table, cls = EVENTS, None
        elif parent == DEAD_LETTERS:
            table, cls = DEAD_LETTERS, None
        else:
            continue  # some other partitioned table: not ours to judge
        day = None if is_default else parse_day(child)
        state = DETACH_PENDING if c.detach_pending else ATTACHED
        found.append(StoredPartition(table, parent, child, cls, day, is_default, state))
    found.sort(key=lambda sp: (sp.parent, sp.day or date.min, sp.name))
    return found


async def list_detached(conn: asyncpg.Connection) -> list[StoredPartition]:
    """Plain tables named like a day partition (`events_<class>_pYYYYMMDD`, `dead_letters_pYYYYMMDD`) that
    are no partition of anything: a day detached from its parent and not dropped (yet). `parent` is the
    table it was detached from, as its name says. Ordered by parent then day."""
    found: list[StoredPartition] = []
    for name in await catalog.unattached(conn, *DAY_PARTITION_LIKE):
        m = DAY_PARTITION_NAME.fullmatch(name)
        if m is None:
            continue
        cls = m.group(1)
        table, parent = (EVENTS, f"events_{cls}") if cls else (DEAD_LETTERS, DEAD_LETTERS)
        found.append(StoredPartition(table, parent, name, cls, parse_day(name), False, DETACHED))
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
