"""Retention benchmark: enforce retention on a day of 1,000,000 rows by DROP versus by DELETE, same run.

    .venv/bin/python bench/retention.py [--rows 1000000] [--small-rows 100000] [--dsn postgresql://...]

Loads identical day partitions of `events` with binary COPY (the ingest writer's path): two of --rows
rows, one of --small-rows. Then, in one run against one server:
- DELETE: the rows of one big day are deleted the only way the schema allows (an authorized DELETE,
  through the row trigger and three indexes), then VACUUM reclaims their space (without it the table keeps
  its size: DELETE alone only marks rows dead);
- DROP: a real maintenance run (`pipeline.retention.maintain`) drops the other big day: locks, exact row
  count for the ledger, DROP TABLE, ledger row; then another run drops the small day.
Prints each figure, the DELETE/DROP ratio, and the DROP statement's time at --small-rows vs --rows, which
should not grow with the rows (the maintenance run does grow slightly: its exact count scans the day).

Without --dsn an embedded PostgreSQL 18 (pipeline.stack.EmbeddedPostgres, fsync off) is started in a
temporary directory and removed afterwards. With --dsn, a schema `bench_retention_<hex>` is created and
dropped.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from datetime import time as dtime
from pathlib import Path
from typing import Any

import asyncpg
from tqdm import tqdm

from pipeline.retention import maintain
from pipeline.settings import Secret, Settings
from pipeline.stack import EmbeddedPostgres
from pipeline.storage import db
from pipeline.storage.batch import EVENT_COLUMNS
from pipeline.storage.migrate import migrate
from pipeline.storage.partitions import PartitionManager, event_partition

CLASS = "public"  # 14 days
RETENTION_DAYS = 14
CHUNK = 50_000
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
    # oldest first: the small day, then the big day maintenance drops, then the big day DELETE empties
    small_day, drop_day, delete_day = (today - timedelta(days=RETENTION_DAYS + k) for k in (3, 2, 1))
    manager = PartitionManager()
    await manager.load(conn)
    await manager.ensure(conn, [(CLASS, d) for d in (small_day, drop_day, delete_day)])
    total = 2 * rows + small_rows
    with tqdm(total=total, unit="rows", desc="binary COPY", file=sys.stderr) as bar:
        load_seconds = await load(conn, delete_day, rows, 1, bar)
        load_seconds += await load(conn, drop_day, rows, 2, bar)
        await load(conn, small_day, small_rows, 3, bar)
    # An expired day is days old: autovacuum has long processed it (insert-triggered since PostgreSQL 13).
    for day in (small_day, drop_day, delete_day):
        await conn.execute(f"VACUUM (ANALYZE) {event_partition(CLASS, day)}")
    await conn.execute("CHECKPOINT")  # neither side pays for the other's dirty pages
    print(f"loaded {total:,} rows with binary COPY ({2 * rows / load_seconds:,.0f} rows/s for the big days)")

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
    await conn.execute("CHECKPOINT")

    settings = Settings(postgres_dsn=Secret(dsn), postgres_schema=schema, partitions_ahead_days=0)
    # a run on the day the big day expires (the small day, older, is dropped by the same run: do it first)
    small_report = await maintain(
        conn,
        settings,
        now=datetime.combine(small_day + timedelta(days=RETENTION_DAYS + 1), dtime(3), tzinfo=UTC),
    )
    [small] = small_report.dropped
    big_report = await maintain(
        conn,
        settings,
        now=datetime.combine(drop_day + timedelta(days=RETENTION_DAYS + 1), dtime(3), tzinfo=UTC),
    )
    [big] = big_report.dropped
    assert (small.row_count, big.row_count) == (small_rows, rows)

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
    _line("  its partition transaction", big.seconds, "s", "locks, exact count, DROP, ledger")
    _line("  the DROP TABLE statement", big.drop_seconds, "s")
    _line("ratio DELETE / maintenance run", ratio, "x")
    _line("ratio DELETE+VACUUM / maintenance run", ratio_vacuum, "x")
    _line("ratio DELETE / DROP TABLE statement", delete_seconds / big.drop_seconds, "x")
    print()
    print("drop time by rows in the day:")
    print(f"  {'rows':>10}  {'DROP TABLE':>10}  {'partition tx':>12}  {'whole run':>10}")
    for n, d, r in ((small_rows, small, small_report), (rows, big, big_report)):
        print(
            f"  {n:>10,}  {d.drop_seconds * 1000:7.1f} ms  {d.seconds * 1000:9.1f} ms  "
            f"{r.duration_seconds * 1000:7.1f} ms"
        )
    growth = big.drop_seconds / small.drop_seconds
    print(f"  DROP TABLE at {rows:,} vs {small_rows:,} rows: x{growth:.2f} (rows x{rows / small_rows:.0f})")


def _line(label: str, value: float, unit: str, note: str = "") -> None:
    figure = f"{value:8.3f} s" if unit == "s" else f"{value:8.0f} x"
    print(f"  {label:<46}{figure}" + (f"   ({note})" if note else ""))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=1_000_000, help="rows in each big day (default 1,000,000)")
    p.add_argument("--small-rows", type=int, default=100_000, help="rows in the small day (default 100,000)")
    p.add_argument("--dsn", default=None, help="an existing PostgreSQL (default: start an embedded one)")
    args = p.parse_args(argv)
    if args.dsn:
        asyncio.run(run(args.dsn, args.rows, args.small_rows))
        return 0
    work = Path(tempfile.mkdtemp(prefix="roomlogs-bench-retention-"))
    try:
        with EmbeddedPostgres(work, fast=True) as server:
            asyncio.run(run(server.dsn, args.rows, args.small_rows))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
