"""Retention benchmark: enforcing retention by DROP versus DELETE, and what retention costs ingest.

    .venv/bin/python bench/retention.py [--rows 1000000] [--small-rows 100000] [--dsn postgresql://...]
                                        [--work-dir DIR]

Loads day partitions of `events` with binary COPY (the ingest writer's path). Then, in one run against
one server:

1. DELETE versus DROP, on identical days of --rows rows:
   - DELETE: one day's rows deleted the only way the schema allows (an authorized DELETE, through the row
     trigger and the indexes), then VACUUM to reclaim their space (DELETE alone only marks rows dead);
   - DROP: a real maintenance run (`pipeline.retention.maintain`) drops another day: DETACH PARTITION
     CONCURRENTLY, then one transaction counting the rows for the ledger, DROP TABLE, ledger row; then a
     run drops a day of --small-rows rows. The DROP statement's time should not grow with the rows.
2. Ingest write stalls: a writer COPYs batches of INGEST_BATCH rows into today's partition, one
   transaction each, back to back, on its own connection, while retention runs; the longest batch while
   retention runs is the stall it caused (compare with the batches while nothing else runs). Each case is
   run with the strategy used before (DROP in place: ACCESS EXCLUSIVE on the class table, 1 s lock
   timeout, as `enforce` did up to fb698e0) and with today's maintenance run:
   - dropping a day of --rows rows, nobody else reading;
   - dropping a day while a long reader (an export) holds the whole class for READER_SECONDS;
   - the next run finishing the detach the reader interrupted;
   - the first run of a UTC day, which also creates the next day's partitions (CREATE TABLE ... PARTITION
     OF, ACCESS EXCLUSIVE on the class table) while the reader holds the class.
   A monitor samples pg_stat_activity meanwhile and counts the samples where the writer waited for a lock.

Without --dsn an embedded PostgreSQL 18 (pipeline.stack.EmbeddedPostgres, fsync off) is started in the
run's work directory (bench/workdir.py). With --dsn, a schema `bench_retention_<hex>` is created and
dropped.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Iterator
from datetime import UTC, date, datetime, timedelta
from datetime import time as dtime
from typing import Any, TypeVar

import asyncpg
from tqdm import tqdm
from workdir import add_work_dir_argument, run_dir

from pipeline.retention import load_classes, maintain
from pipeline.settings import Secret, Settings
from pipeline.stack import EmbeddedPostgres
from pipeline.storage import db
from pipeline.storage.batch import EVENT_COLUMNS
from pipeline.storage.migrate import migrate
from pipeline.storage.partitions import PartitionManager, event_partition

CLASS = "public"  # 14 days
RETENTION_DAYS = 14
CHUNK = 50_000
#: rows per ingest transaction while stalls are measured: small and frequent, so a stall shows in full
INGEST_BATCH = 200
#: how long the long reader keeps the class locked (ACCESS SHARE) in the reader cases
READER_SECONDS = 3.0
#: rows in the days dropped while the reader holds the class (the lock waits dominate, not the rows)
READER_DAY_ROWS = 10_000
#: the lock timeout retention used before, and uses now (`pipeline.retention.DROP_LOCK_TIMEOUT_MS`)
LOCK_TIMEOUT_MS = 1_000
PAYLOAD = b'{"text": "hello there, see you at the plaza later"}'


def rows_for(day: date, n: int, seed: int) -> Iterator[tuple[Any, ...]]:
    start = datetime.combine(day, dtime.min, tzinfo=UTC)
    step = 86_400 / n
    base = seed << 64
    for i in range(n):
        yield (
            uuid.UUID(int=base + i),
            start + timedelta(seconds=i * step),
            CLASS,
            f"room-{i % 500}",
            "chat_message",
            1,
            f"user-{i % 5000}",
            None,
            "hello there, see you at the plaza later",
            PAYLOAD,
            i % 6,
            i,
        )


async def load(conn: asyncpg.Connection, day: date, n: int, seed: int, bar: tqdm[Any]) -> float:
    started = time.perf_counter()
    it = rows_for(day, n, seed)
    while True:
        chunk = [r for _, r in zip(range(CHUNK), it, strict=False)]
        if not chunk:
            break
        await conn.copy_records_to_table("events", records=chunk, columns=EVENT_COLUMNS)
        bar.update(len(chunk))
    return time.perf_counter() - started


async def run(dsn: str, rows: int, small_rows: int) -> None:
    schema = f"bench_retention_{uuid.uuid4().hex[:8]}"
    conn = await db.connect(dsn, schema)
    try:
        await migrate(conn, schema)
        await bench(conn, schema, dsn, rows, small_rows)
    finally:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await conn.close()


async def bench(conn: asyncpg.Connection, schema: str, dsn: str, rows: int, small_rows: int) -> None:
    today = date(2026, 6, 30)
    settings = Settings(postgres_dsn=Secret(dsn), postgres_schema=schema, partitions_ahead_days=0)
    # small_day and drop_day expire on the two days before `today` (their runs drop one day each);
    # delete_day is emptied by DELETE; inplace_day is dropped the way retention did before; the reader
    # days are dropped while a reader holds the class (reader_day expires on `today` itself)
    delete_day, small_day, drop_day, reader_day = (today - timedelta(days=k) for k in (25, 17, 16, 15))
    inplace_day, inplace_reader_day = today - timedelta(days=10), today - timedelta(days=9)
    big_days = (delete_day, drop_day, inplace_day)
    manager = PartitionManager()
    await manager.load(conn)
    days = (*big_days, small_day, reader_day, inplace_reader_day, today)
    await manager.ensure(conn, [(CLASS, d) for d in days])
    total = 3 * rows + small_rows + 2 * READER_DAY_ROWS
    with tqdm(total=total, unit="rows", desc="binary COPY", file=sys.stderr) as bar:
        load_seconds = 0.0
        for seed, day in enumerate(big_days, 1):
            load_seconds += await load(conn, day, rows, seed, bar)
        await load(conn, small_day, small_rows, 4, bar)
        await load(conn, reader_day, READER_DAY_ROWS, 5, bar)
        await load(conn, inplace_reader_day, READER_DAY_ROWS, 6, bar)
    # An expired day is days old: autovacuum has long processed it (insert-triggered since PostgreSQL 13).
    for day in days[:-1]:
        await conn.execute(f"VACUUM (ANALYZE) {event_partition(CLASS, day)}")
    await conn.execute("CHECKPOINT")  # neither side pays for the other's dirty pages
    print(f"loaded {total:,} rows with binary COPY ({3 * rows / load_seconds:,.0f} rows/s for the big days)")

    delete_table = event_partition(CLASS, delete_day)
    indexes = await conn.fetchval("SELECT count(*) FROM pg_index WHERE indrelid = $1::regclass", delete_table)
    size_before = await conn.fetchval("SELECT pg_total_relation_size($1)", delete_table)
    started = time.perf_counter()
    async with conn.transaction():
        await conn.execute("SET LOCAL roomlogs.authorized_deletion = 'on'")
        status = await conn.execute(f"DELETE FROM {delete_table}")
    delete_seconds = time.perf_counter() - started
    assert status == f"DELETE {rows}", status
    size_after_delete = await conn.fetchval("SELECT pg_total_relation_size($1)", delete_table)
    started = time.perf_counter()
    await conn.execute(f"VACUUM {delete_table}")
    vacuum_seconds = time.perf_counter() - started
    await conn.execute(f"DROP TABLE {delete_table}")  # emptied: out of the way of the runs below
    await conn.execute("CHECKPOINT")
    # the days the measured runs are on have their partitions made already (by the run before, as every
    # day but the first run of it); the first run of a day is measured on its own below
    classes = sorted(await load_classes(conn))
    await manager.premake(
        conn, classes, _at(small_day).date(), days_ahead=(today - _at(small_day).date()).days
    )

    stalls = Stalls(dsn, schema, today, conn.get_server_pid())
    await stalls.start()
    try:
        # a run on the day each day expires, while ingest writes: the small day first, then the big one
        small_report = await stalls.measure("after", "drop", maintain(conn, settings, now=_at(small_day)))
        big_report = await stalls.measure("after", "drop", maintain(conn, settings, now=_at(drop_day)))
        [small], [big] = small_report.dropped, big_report.dropped
        assert (small.row_count, big.row_count) == (small_rows, rows)
        await stalls.measure("before", "drop", drop_in_place(conn, event_partition(CLASS, inplace_day)))

        async with stalls.reader():
            await stalls.measure(
                "before", "reader", drop_in_place(conn, event_partition(CLASS, inplace_reader_day))
            )
        await drop_in_place(conn, event_partition(CLASS, inplace_reader_day))  # now the reader is gone
        async with stalls.reader():
            deferred = await stalls.measure("after", "reader", maintain(conn, settings, now=_at(reader_day)))
        assert [d.state for d in deferred.deferred] == ["detach_pending"], deferred.render()
        finished = await stalls.measure("after", "finish", maintain(conn, settings, now=_at(reader_day)))
        assert [d.resumed for d in finished.dropped] == [True], finished.render()
        async with stalls.reader():
            first_of_day = maintain(conn, settings, now=_at(reader_day + timedelta(days=1)))
            await stalls.measure("after", "premake", first_of_day)
    finally:
        await stalls.stop()

    ratio = delete_seconds / big_report.duration_seconds
    ratio_vacuum = (delete_seconds + vacuum_seconds) / big_report.duration_seconds
    print()
    print(f"one day of {rows:,} rows ({size_before / 2**20:,.0f} MiB with indexes):")
    _line(
        f"DELETE (authorized, row trigger, {indexes} indexes)",
        delete_seconds,
        "s",
        f"table still {size_after_delete / 2**20:,.0f} MiB until vacuumed",
    )
    _line("+ VACUUM to reclaim the space", vacuum_seconds, "s", f"= {delete_seconds + vacuum_seconds:.3f} s")
    _line("DROP by a maintenance run (whole run)", big_report.duration_seconds, "s")
    _line("  its partition (detach, then drop)", big.seconds, "s", "detach, exact count, DROP, ledger")
    _line("  the DETACH ... CONCURRENTLY statement", big.detach_seconds, "s", "waits for running writes")
    _line("  the DROP TABLE statement", big.drop_seconds, "s")
    _line("ratio DELETE / maintenance run", ratio, "x")
    _line("ratio DELETE+VACUUM / maintenance run", ratio_vacuum, "x")
    _line("ratio DELETE / DROP TABLE statement", delete_seconds / big.drop_seconds, "x")
    print()
    print("drop time by rows in the day:")
    print(f"  {'rows':>10}  {'DROP TABLE':>10}  {'partition':>12}  {'whole run':>10}")
    for n, d, r in ((small_rows, small, small_report), (rows, big, big_report)):
        print(
            f"  {n:>10,}  {d.drop_seconds * 1000:7.1f} ms  {d.seconds * 1000:9.1f} ms  "
            f"{r.duration_seconds * 1000:7.1f} ms"
        )
    growth = big.drop_seconds / small.drop_seconds
    print(f"  DROP TABLE at {rows:,} vs {small_rows:,} rows: x{growth:.2f} (rows x{rows / small_rows:.0f})")
    print()
    stalls.print(rows)


def _at(day: date) -> datetime:
    """03:00 UTC on the day after `day` expires (retention of RETENTION_DAYS days)."""
    return datetime.combine(day + timedelta(days=RETENTION_DAYS + 1), dtime(3), tzinfo=UTC)


async def drop_in_place(conn: asyncpg.Connection, partition: str) -> bool:
    """The strategy retention used before: in one transaction, ACCESS EXCLUSIVE on the class table then on
    the partition (waiting at most LOCK_TIMEOUT_MS), the exact count for the ledger, DROP TABLE. False when
    the lock timeout expired (the partition was deferred)."""
    try:
        async with conn.transaction():
            await conn.execute(f"SET LOCAL lock_timeout = {LOCK_TIMEOUT_MS}")
            await conn.execute(f"LOCK TABLE ONLY events_{CLASS} IN ACCESS EXCLUSIVE MODE")
            await conn.execute(f"LOCK TABLE {partition} IN ACCESS EXCLUSIVE MODE")
            await conn.fetchval(f"SELECT count(*) FROM {partition}")
            await conn.execute(f"DROP TABLE {partition}")
    except asyncpg.LockNotAvailableError:
        return False
    return True


T = TypeVar("T")

#: case -> what it measures, for the table
CASES = {
    "drop": "drop a day of {rows} rows, nobody reading",
    "reader": f"drop a day, a reader holds the class {READER_SECONDS:.0f} s",
    "finish": "next run: finish the detach the reader interrupted",
    "premake": "first run of a day: create tomorrow, reader holds class",
}


class Stalls:
    """An ingest writer running back to back, a monitor of its lock waits, and when retention ran.

    The monitor also samples pg_locks for the writer's and the retention session's table locks, so the
    figures come with the lock modes PostgreSQL itself reports."""

    def __init__(self, dsn: str, schema: str, today: date, retention_pid: int) -> None:
        self._dsn, self._schema, self._today = dsn, schema, today
        self._retention_pid = retention_pid
        #: (start, seconds) of every ingest batch
        self._batches: list[tuple[float, float]] = []
        #: (strategy, case) -> (longest batch in ms, lock waits seen)
        self.results: dict[tuple[str, str], tuple[float, int]] = {}
        self._waits: list[float] = []  # when the monitor saw the writer waiting for a lock
        #: (strategy, case) -> {(session, table, mode, granted)} sampled while it ran
        self.locks: dict[tuple[str, str], set[tuple[str, str, str, bool]]] = {}
        self._case: tuple[str, str] | None = None
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._seed = 100

    async def start(self) -> None:
        self._writer = await db.connect(self._dsn, self._schema)
        self._monitor = await db.connect(self._dsn, self._schema)
        self._reader_conn = await db.connect(self._dsn, self._schema)
        self._tasks = [asyncio.create_task(self._write()), asyncio.create_task(self._watch())]
        await asyncio.sleep(1.5)  # batches while nothing else runs: the baseline

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)
        for c in (self._writer, self._monitor, self._reader_conn):
            await c.close()

    async def measure(self, strategy: str, case: str, work: Awaitable[T]) -> T:
        self._case = (strategy, case)
        started = time.perf_counter()
        try:
            result = await work
        finally:
            ended = time.perf_counter()
            self._case = None
        await asyncio.sleep(0.3)  # let the batch in flight at the end finish
        longest = max((s for t, s in self._batches if t < ended and t + s > started), default=float("nan"))
        waits = sum(1 for t in self._waits if started <= t <= ended)
        self.results[(strategy, case)] = (longest * 1000, waits)
        return result

    @contextlib.asynccontextmanager
    async def reader(self) -> AsyncIterator[None]:
        """A long reader (an export) of the whole class: ACCESS SHARE on it and all its days."""
        c = self._reader_conn
        started = time.perf_counter()
        async with c.transaction():
            await c.fetchval(f"SELECT count(*) FROM events WHERE retention_class = '{CLASS}'")
            await asyncio.sleep(0.1)
            yield
            await asyncio.sleep(max(0.0, READER_SECONDS - (time.perf_counter() - started)))

    def print(self, rows: int) -> None:
        base = sorted(s for t, s in self._batches if t < self._batches[0][0] + 1.5)
        p50, p99, most = (base[len(base) // 2] * 1000, base[int(len(base) * 0.99)] * 1000, base[-1] * 1000)
        print(f"ingest write stalls while retention runs ({INGEST_BATCH} rows per COPY transaction):")
        print(f"  batches while nothing else runs: p50 {p50:.1f} ms, p99 {p99:.1f} ms, max {most:.1f} ms")
        print("  longest batch overlapping the retention step (samples that saw the writer wait for a lock)")
        print(f"  {'case':<58}{'before: DROP in place':>22}{'after: DETACH CONCURRENTLY':>28}")
        for case, label in CASES.items():
            cells = []
            for strategy in ("before", "after"):
                got = self.results.get((strategy, case))
                cells.append("same code" if got is None else f"{got[0]:5.0f} ms ({got[1]:3d} waits)")
            print(f"  {label.format(rows=f'{rows:,}'):<58}{cells[0]:>22}{cells[1]:>28}")
        print("  table locks seen in pg_locks meanwhile (writer: the ingest session; retention: the run's):")
        for (strategy, case), seen in self.locks.items():
            shown = sorted(
                f"{who} {table} {mode}{'' if granted else ' (waiting)'}" for who, table, mode, granted in seen
            )
            print(f"    {strategy} / {case}: " + "; ".join(shown))

    async def _write(self) -> None:
        c = self._writer
        while not self._stop.is_set():
            self._seed += 1
            batch = list(rows_for(self._today, INGEST_BATCH, self._seed))
            started = time.perf_counter()
            async with c.transaction():
                await c.copy_records_to_table("events", records=batch, columns=EVENT_COLUMNS)
            self._batches.append((started, time.perf_counter() - started))

    async def _watch(self) -> None:
        writer = self._writer.get_server_pid()
        today = event_partition(CLASS, self._today)
        while not self._stop.is_set():
            waiting = await self._monitor.fetchval(
                "SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = $1", writer
            )
            if waiting:
                self._waits.append(time.perf_counter())
            case = self._case
            if case is not None:
                rows = await self._monitor.fetch(
                    """SELECT l.pid, c.relname::text AS rel, l.mode, l.granted
                         FROM pg_locks l JOIN pg_class c ON c.oid = l.relation
                        WHERE l.pid = ANY($1::int[]) AND l.locktype = 'relation' AND c.relkind IN ('r', 'p')
                          AND c.relnamespace = to_regnamespace(current_schema())""",
                    [writer, self._retention_pid],
                )
                seen = self.locks.setdefault(case, set())
                for r in rows:
                    who = "writer" if r["pid"] == writer else "retention"
                    rel = r["rel"]
                    if rel == today:
                        rel = "today's day"
                    elif rel.startswith(f"events_{CLASS}_p"):
                        rel = "the expired day"
                    seen.add((who, rel, r["mode"].removesuffix("Lock"), r["granted"]))
            await asyncio.sleep(0.005)


def _line(label: str, value: float, unit: str, note: str = "") -> None:
    figure = f"{value:8.3f} s" if unit == "s" else f"{value:8.0f} x"
    print(f"  {label:<46}{figure}" + (f"   ({note})" if note else ""))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=1_000_000, help="rows in each big day (default 1,000,000)")
    p.add_argument("--small-rows", type=int, default=100_000, help="rows in the small day (default 100,000)")
    p.add_argument("--dsn", default=None, help="an existing PostgreSQL (default: start an embedded one)")
    add_work_dir_argument(p)
    args = p.parse_args(argv)
    with run_dir(args.work_dir, "roomlogs-bench-retention-") as work_dir:
        if args.dsn:
            asyncio.run(run(args.dsn, args.rows, args.small_rows))
            return 0
        with EmbeddedPostgres(work_dir / "postgres", fast=True) as server:
            asyncio.run(run(server.dsn, args.rows, args.small_rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
