"""Chat text search indexes on sealed days: `<partition>_search`, built off the ingest path.

What: on each leaf partition of `events` whose UTC day is sealed, a trigram GIN index
`(room_id, body gin_trgm_ops) WHERE body IS NOT NULL` (pg_trgm and btree_gin, migration 0015). The API's
text search (`body ILIKE '%text%'` inside a room's range, planned for its own pattern) then reads the index
on those days instead of every row of the room; on a day without the index it reads the room's rows as
before. Live days never get one: a sealed day takes no more rows, so its index costs ingest nothing, while
on the live day every row written would have to update it.

Who calls it: the sealing step of maintenance (pipeline/sealing/run.py `seal_in_maintenance`, after
sealing, with a time budget), `roomlogs seals run`, and bench/api.py; as the tables' owner (CREATE INDEX
needs it). One builder per schema at a time (a session advisory lock; a second one finds it busy and
does nothing).

How: `CREATE INDEX CONCURRENTLY`, outside any transaction, newest day first. It holds SHARE UPDATE
EXCLUSIVE on the one leaf it indexes, which neither readers nor ingest's writes conflict with, and its
lock waits (for that lock, and for the transactions older than the index to end) are bounded by
`lock_timeout_ms`. Expired days, which retention is about to detach and drop, are skipped: a build never
holds a partition retention wants.

What a failure means: a build that gave up (a lock wait timed out, it was cancelled, the server or its
session died) may leave its index INVALID (`pg_index.indisvalid` false): no query uses it. The next run
finds it, drops it (`DROP INDEX CONCURRENTLY`) and builds it again. A lock timeout or a cancel is reported
as deferred, never raised; an outage propagates (the caller retries at its next run); retention drops a
partition with its index.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import date

import asyncpg

from pipeline.errors import ConfigurationError
from pipeline.retention_rules import is_expired
from pipeline.storage import catalog, seals
from pipeline.storage.catalog import ident
from pipeline.storage.classes import retention_days
from pipeline.storage.partitions import DAY_PARTITION_NAME, parse_day

__all__ = [
    "BUILD_LOCK_TIMEOUT_MS",
    "BuiltIndex",
    "SearchIndexReport",
    "build_sealed",
    "index_name",
    "search_indexes",
]

log = logging.getLogger("roomlogs.search_index")

#: Bound on each lock wait of a build or a drop: the leaf's lock, and the wait for older transactions to
#: end (an export, a backup's snapshot). Past it the build is deferred to the next run.
BUILD_LOCK_TIMEOUT_MS = 5_000
_SUFFIX = "_search"
#: One builder per schema (session lock: CREATE INDEX CONCURRENTLY runs outside a transaction).
_LOCK_KEY = "SELECT hashtextextended(current_schema() || ':roomlogs.search_index', 0)"


@dataclass(frozen=True, slots=True)
class BuiltIndex:
    partition: str
    day: date
    seconds: float
    size_bytes: int
    #: an invalid index a failed build had left was dropped first
    rebuilt: bool


@dataclass
class SearchIndexReport:
    built: list[BuiltIndex] = field(default_factory=list)
    #: (partition, why) for builds that gave up this run; the next run tries again
    deferred: list[tuple[str, str]] = field(default_factory=list)
    #: partitions not reached because the run's time budget was spent
    left: int = 0
    #: another session was building: this run did nothing
    busy: bool = False
    seconds: float = 0.0

    @property
    def size_bytes(self) -> int:
        return sum(b.size_bytes for b in self.built)


@dataclass(frozen=True, slots=True)
class _Leaf:
    name: str
    retention_class: str
    day: date


def index_name(partition: str) -> str:
    """The search index of a day partition (at most 55 characters: PostgreSQL keeps 63)."""
    return partition + _SUFFIX


async def search_indexes(conn: asyncpg.Connection) -> dict[str, bool]:
    """Every day partition of `events` that has a search index, and whether the index is valid."""
    rows = await conn.fetch(
        """SELECT t.relname AS partition, x.indisvalid
             FROM pg_index x
             JOIN pg_class i ON i.oid = x.indexrelid
             JOIN pg_class t ON t.oid = x.indrelid
             JOIN pg_namespace n ON n.oid = t.relnamespace
            WHERE n.nspname = current_schema() AND i.relname = t.relname || $1""",
        _SUFFIX,
    )
    return {r["partition"]: r["indisvalid"] for r in rows}


async def build_sealed(
    conn: asyncpg.Connection,
    *,
    today: date,
    lock_timeout_ms: int = BUILD_LOCK_TIMEOUT_MS,
    budget_seconds: float | None = None,
) -> SearchIndexReport:
    """Build the missing or invalid search indexes of sealed, unexpired days, newest day first; start no
    new build once `budget_seconds` have passed (None: build them all). `conn` must not be in a
    transaction."""
    started = time.perf_counter()
    report = SearchIndexReport()
    if conn.is_in_transaction():
        raise RuntimeError("search indexes are built outside a transaction (CREATE INDEX CONCURRENTLY)")
    key: int = await conn.fetchval(_LOCK_KEY)
    if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", key):
        report.busy = True
        return report
    try:
        opclass = await _trigram_opclass(conn)
        existing = await search_indexes(conn)
        todo = [leaf for leaf in await _sealed_leaves(conn, today) if existing.get(leaf.name) is not True]
        for n, leaf in enumerate(todo):
            if budget_seconds is not None and time.perf_counter() - started > budget_seconds:
                report.left = len(todo) - n
                log.info("search indexes: %d partitions left for the next run (budget spent)", report.left)
                break
            await _build(conn, leaf, opclass, leaf.name in existing, lock_timeout_ms, report)
    finally:
        if not conn.is_closed():
            await conn.execute("SELECT pg_advisory_unlock($1)", key)
    report.seconds = time.perf_counter() - started
    return report


async def _sealed_leaves(conn: asyncpg.Connection, today: date) -> list[_Leaf]:
    """Attached leaf partitions of `events` whose day is sealed and not expired, newest day first."""
    sealed = set(await seals.sealed_days(conn))
    days_of = await retention_days(conn)
    leaves = []
    for child in await catalog.children(conn):
        m = DAY_PARTITION_NAME.fullmatch(child.name)
        day = parse_day(child.name)
        if m is None or m.group(1) is None or child.partitioned or child.detach_pending or day is None:
            continue
        cls = m.group(1)
        if day in sealed and cls in days_of and not is_expired(day, today, days_of[cls]):
            leaves.append(_Leaf(child.name, cls, day))
    return sorted(leaves, key=lambda leaf: (leaf.day, leaf.name), reverse=True)


async def _trigram_opclass(conn: asyncpg.Connection) -> str:
    """`gin_trgm_ops`, qualified with the schema pg_trgm is installed in; btree_gin must be there too."""
    rows = await conn.fetch(
        """SELECT e.extname, n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
            WHERE e.extname IN ('pg_trgm', 'btree_gin')"""
    )
    found = {r["extname"]: r["nspname"] for r in rows}
    missing = sorted({"pg_trgm", "btree_gin"} - set(found))
    if missing:
        raise ConfigurationError(
            f"the search indexes of sealed days need the PostgreSQL extension(s) {', '.join(missing)} in "
            "this database (migration 0015 creates them; a schema restored from `pg_dump --schema` into "
            "another database comes without them): as the tables' owner, "
            + " ".join(f"CREATE EXTENSION IF NOT EXISTS {name} SCHEMA public;" for name in missing)
        )
    return f"{ident(found['pg_trgm'])}.gin_trgm_ops"


async def _build(
    conn: asyncpg.Connection,
    leaf: _Leaf,
    opclass: str,
    invalid: bool,
    lock_timeout_ms: int,
    report: SearchIndexReport,
) -> None:
    index = index_name(leaf.name)
    began = time.perf_counter()
    try:
        if invalid:
            log.info("search index %s was left invalid by a build that did not finish: rebuilding", index)
            await _outside_transaction(
                conn, f"DROP INDEX CONCURRENTLY IF EXISTS {ident(index)}", lock_timeout_ms
            )
        await _outside_transaction(
            conn,
            f"CREATE INDEX CONCURRENTLY {ident(index)} ON {ident(leaf.name)} "
            f"USING gin (room_id, body {opclass}) WITH (fastupdate = off) WHERE body IS NOT NULL",
            lock_timeout_ms,
        )
    except (asyncpg.LockNotAvailableError, asyncpg.QueryCanceledError, asyncpg.DeadlockDetectedError) as e:
        why = f"{type(e).__name__}: {e}"
        log.warning("search index %s deferred to the next run (%s)", index, why)
        report.deferred.append((leaf.name, why))
        return
    except asyncpg.UndefinedTableError:
        return  # retention dropped the partition meanwhile
    size: int = await conn.fetchval("SELECT pg_relation_size(to_regclass($1))", ident(index))
    built = BuiltIndex(leaf.name, leaf.day, time.perf_counter() - began, size, invalid)
    report.built.append(built)
    log.info("search index %s built in %.1f s (%.1f MB)", index, built.seconds, size / 1e6)


async def _outside_transaction(conn: asyncpg.Connection, sql: str, lock_timeout_ms: int) -> None:
    # CONCURRENTLY refuses a transaction block, so no SET LOCAL: the session's lock_timeout is set around
    # it and reset (a pooled connection must not keep it)
    await conn.execute(f"SET lock_timeout = {int(lock_timeout_ms)}")
    try:
        await conn.execute(sql)
    finally:
        if not conn.is_closed():
            await conn.execute("RESET lock_timeout")
