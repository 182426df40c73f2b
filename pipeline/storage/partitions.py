"""Day partitions: names, bounds, and creating them ahead of the data.

Layout: `events` is LIST-partitioned by retention class (`events_<class>`), each class RANGE-partitioned by
UTC day (`events_<class>_pYYYYMMDD`); `dead_letters` is RANGE-partitioned by day (`dead_letters_pYYYYMMDD`).
There is no catch-all DEFAULT partition: a row whose day has no partition is given one on demand, so no row
ever sits where it would block creating its day later (pg_partman's trap), and nothing is lost.

Who calls it: the ingest writer (`ensure()` for the days of each batch; a set lookup unless a day is new),
and the maintenance loop (`premake()` today..today+N for every class).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import UTC, date, datetime, time, timedelta

import asyncpg

from pipeline.retention_rules import writable_from
from pipeline.settings import RETENTION_CLASS_NAME
from pipeline.storage import catalog
from pipeline.storage.classes import retention_days

_CLASS = re.compile(RETENTION_CLASS_NAME)
_DAY_SUFFIX = re.compile(r"_p(\d{8})$")
#: The name of a day partition (`fullmatch`): events_<class>_pYYYYMMDD (group 1: the class), or
#: dead_letters_pYYYYMMDD; and LIKE patterns finding every table that may be one.
DAY_PARTITION_NAME = re.compile(rf"(?:events_({RETENTION_CLASS_NAME})|dead_letters)_p\d{{8}}")
DAY_PARTITION_LIKE = ("events\\_%", "dead\\_letters\\_p%")

#: Lock timeout for partition DDL: never queue behind a long reader (it would stall every writer behind us).
DDL_LOCK_TIMEOUT_MS = 2_000


def day_of(ts: datetime) -> date:
    return ts.astimezone(UTC).date() if ts.tzinfo is not UTC else ts.date()


def day_start(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=UTC)


def class_table(cls: str) -> str:
    if not _CLASS.fullmatch(cls):
        raise ValueError(f"retention class {cls!r} is not a plain identifier")
    return f"events_{cls}"


def event_partition(cls: str, day: date) -> str:
    return f"{class_table(cls)}_p{day:%Y%m%d}"


def dead_letter_partition(day: date) -> str:
    return f"dead_letters_p{day:%Y%m%d}"


def parse_day(partition_name: str) -> date | None:
    m = _DAY_SUFFIX.search(partition_name)
    return datetime.strptime(m.group(1), "%Y%m%d").replace(tzinfo=UTC).date() if m else None


class PartitionManager:
    """Knows which partitions exist (cached) and creates missing ones. One per process."""

    def __init__(self) -> None:
        self._events: set[tuple[str, date]] = set()
        self._classes: set[str] = set()
        self._dead_letters: set[date] = set()
        #: (class, day) whose table retention has detached and is about to drop: never written again
        self.retiring: set[tuple[str, date]] = set()

    def forget(self) -> None:
        """Drop the cache (after retention dropped partitions, or on a reconnect)."""
        self._events.clear()
        self._classes.clear()
        self._dead_letters.clear()
        self.retiring.clear()

    async def load(self, conn: asyncpg.Connection) -> None:
        """Learn what exists from the catalog (leaves left detach pending are being retired: not counted)."""
        listed = await catalog.children(conn)
        self.forget()
        for leaf in listed:
            if leaf.detach_pending:
                continue
            child, parent = leaf.name, leaf.parent
            if parent == "events":
                self._classes.add(child.removeprefix("events_"))
            elif parent == "dead_letters":
                d = parse_day(child)
                if d:
                    self._dead_letters.add(d)
            elif parent.startswith("events_"):
                d = parse_day(child)
                if d:
                    self._events.add((parent.removeprefix("events_"), d))

    def missing(self, wanted: Iterable[tuple[str, date]]) -> set[tuple[str, date]]:
        return {w for w in wanted if w not in self._events}

    async def ensure(
        self,
        conn: asyncpg.Connection,
        event_days: Iterable[tuple[str, date]],
        dead_letter_days: Iterable[date] = (),
    ) -> int:
        """Create the partitions these (class, day) pairs and dead-letter days need; return how many."""
        made = 0
        for cls, day in sorted(self.missing(event_days)):
            try:
                made += await self._create_event_day(conn, cls, day)
            except PartitionRetiringError:
                self.retiring.add((cls, day))
        for day in sorted(set(dead_letter_days) - self._dead_letters):
            # a dead-letter day being dropped is days old; dead letters are dated by their arrival
            made += await self._create(conn, dead_letter_partition(day), "dead_letters", None, day)
            self._dead_letters.add(day)
        return made

    async def premake(
        self, conn: asyncpg.Connection, classes: Iterable[str], today: date, days_ahead: int
    ) -> int:
        days = [today + timedelta(days=i) for i in range(days_ahead + 1)]
        return await self.ensure(conn, [(cls, d) for cls in classes for d in days], days)

    def event_days(self) -> set[tuple[str, date]]:
        return set(self._events)

    async def _create_event_day(self, conn: asyncpg.Connection, cls: str, day: date) -> int:
        made = 0
        if cls not in self._classes:
            made += await self._attach_new(conn, class_table(cls), "events", cls, None)
            self._classes.add(cls)
        made += await self._create(conn, event_partition(cls, day), "events", cls, day)
        self._events.add((cls, day))
        return made

    async def _create(
        self, conn: asyncpg.Connection, name: str, table: str, cls: str | None, day: date
    ) -> int:
        """Create day partition `name` of `table` ("events" of class `cls`, or "dead_letters") without
        making ingest wait.

        `CREATE TABLE ... PARTITION OF` takes ACCESS EXCLUSIVE on the parent: behind any reader of the parent
        it would wait, and every COPY into the parent would queue behind it. A new table attached with
        `ATTACH PARTITION` takes only SHARE UPDATE EXCLUSIVE on the parent, which neither readers nor
        writers conflict with (PostgreSQL 12+); attaching an empty table scans nothing.
        """
        return await self._attach_new(conn, name, table, cls, day)

    async def _attach_new(
        self, conn: asyncpg.Connection, name: str, table: str, cls: str | None, day: date | None
    ) -> int:
        """CREATE TABLE + ATTACH PARTITION, done by `create_log_partition()` (migration 0008), a SECURITY
        DEFINER function of the tables' owner: ATTACH needs the parent's owner, and the worker's own role
        (`<schema>_worker`) owns nothing, so that it can never edit, truncate or drop the logs."""
        attached = await _attached(conn, name)
        if attached is True:
            return 0
        if attached is False:  # detached by retention (pipeline/retention/detach.py), about to be dropped
            raise PartitionRetiringError(name)
        try:
            async with conn.transaction():
                await conn.execute(f"SET LOCAL lock_timeout = {DDL_LOCK_TIMEOUT_MS}")
                await conn.execute("SELECT create_log_partition($1, $2, $3)", table, cls, day)
        except (asyncpg.DuplicateTableError, asyncpg.DuplicateObjectError, asyncpg.UniqueViolationError):
            # another worker created it between our check and our CREATE: the outcome we wanted, if attached
            if await _attached(conn, name) is False:
                raise PartitionRetiringError(name) from None
            return 0
        return 1


class PartitionRetiringError(Exception):
    """A day partition's table exists but is detached: retention is dropping it (its day has expired)."""


async def _attached(conn: asyncpg.Connection, name: str) -> bool | None:
    """True: `name` is a partition; False: a table, not (or no longer) attached; None: no such table."""
    state = await catalog.state_of(conn, name)
    return None if state is None else state == catalog.ATTACHED


async def _ddl(conn: asyncpg.Connection, sql: str) -> None:
    try:
        async with conn.transaction():
            await conn.execute(f"SET LOCAL lock_timeout = {DDL_LOCK_TIMEOUT_MS}")
            await conn.execute(sql)
    except (asyncpg.DuplicateTableError, asyncpg.DuplicateObjectError, asyncpg.UniqueViolationError):
        # (DuplicateObjectError: the table's row type, created a moment before the table's own row)
        pass  # another worker created it between our check and our CREATE: that is the outcome we wanted


async def dropped_through(conn: asyncpg.Connection) -> dict[str, date]:
    """Per retention class, the newest day whose `events` partition retention has dropped (the ledger)."""
    rows = await conn.fetch(
        """SELECT retention_class, max(day) AS day FROM deletion_ledger
            WHERE table_name = 'events' AND action = 'drop_partition' GROUP BY 1"""
    )
    return {r["retention_class"]: r["day"] for r in rows}


async def writable_since(conn: asyncpg.Connection, today: date) -> dict[str, date]:
    """`writable_from` (pipeline.retention_rules) read in one go, for writers that run seldom (a dead-letter
    replay)."""
    return writable_from(today, await retention_days(conn), await dropped_through(conn))
