"""The partition catalog: which partitions exist, read from PostgreSQL's own catalog, in one place.

Who calls it: the ingest stage's `PartitionManager` (what exists, so it creates only what is missing;
whether a table it is about to create is attached) and retention's view of what is stored
(`pipeline.retention.catalog`: what to judge, detach and drop). Both read the same listing, so they
cannot disagree about what a "detach pending" leaf or a detached table is.

Everything is in the current schema (the connection's search_path). Names come from PostgreSQL, never from
users; `ident` quotes them for SQL.
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

__all__ = ["ATTACHED", "DETACHED", "DETACH_PENDING", "Child", "children", "ident", "state_of", "unattached"]

#: The states of a table that is (or was) a partition: one queries see; one an interrupted DETACH ...
#: CONCURRENTLY left "detach pending" (queries through the parent no longer see it; `DETACH ... FINALIZE`
#: completes it); a table detached from its parent (no partition of anything) and not dropped yet
ATTACHED = "attached"
DETACH_PENDING = "detach_pending"
DETACHED = "detached"


@dataclass(frozen=True, slots=True)
class Child:
    """A partition of some partitioned table, as the catalog lists it (`pg_inherits`)."""

    name: str
    parent: str
    #: itself partitioned (an intermediate level, such as `events_<class>`), not a leaf
    partitioned: bool
    #: the partition bound as PostgreSQL prints it: "DEFAULT", "FOR VALUES FROM (...) TO (...)", ...
    bound: str
    #: left "detach pending" by an interrupted DETACH PARTITION ... CONCURRENTLY
    detach_pending: bool

    @property
    def is_default(self) -> bool:
        return self.bound == "DEFAULT"


async def children(conn: asyncpg.Connection) -> list[Child]:
    """Every partition of every partitioned table in the current schema (detach pending ones included)."""
    rows = await conn.fetch(
        """SELECT c.relname AS child, p.relname AS parent, c.relkind = 'p' AS partitioned,
                  coalesce(pg_get_expr(c.relpartbound, c.oid), '') AS bound, i.inhdetachpending
             FROM pg_inherits i
             JOIN pg_class c ON c.oid = i.inhrelid
             JOIN pg_class p ON p.oid = i.inhparent
             JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname = current_schema()"""
    )
    return [Child(r["child"], r["parent"], r["partitioned"], r["bound"], r["inhdetachpending"]) for r in rows]


async def unattached(conn: asyncpg.Connection, *like: str) -> list[str]:
    """Plain tables that are no partition of anything, named LIKE one of the `like` patterns."""
    rows = await conn.fetch(
        """SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname = current_schema() AND c.relkind = 'r' AND NOT c.relispartition
              AND c.relname LIKE ANY($1::text[])""",
        list(like),
    )
    return [r["relname"] for r in rows]


async def state_of(conn: asyncpg.Connection, name: str) -> str | None:
    """ATTACHED, DETACH_PENDING, DETACHED (a table that is no partition), or None when it does not exist."""
    row = await conn.fetchrow(
        """SELECT c.relispartition, i.inhdetachpending
             FROM pg_class c LEFT JOIN pg_inherits i ON i.inhrelid = c.oid
            WHERE c.oid = to_regclass($1)""",
        ident(name),
    )
    if row is None:
        return None
    if not row["relispartition"]:
        return DETACHED
    return DETACH_PENDING if row["inhdetachpending"] else ATTACHED


def ident(name: str) -> str:
    """A table name from the catalog, quoted for SQL (names come from PostgreSQL, never from users)."""
    return '"' + name.replace('"', '""') + '"'
