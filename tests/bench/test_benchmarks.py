"""Every benchmark still runs: each `bench/*.py` as the command a user types, at a tiny size.

Each test runs `python bench/NAME.py` in a subprocess with tiny sizes and its own `--work-dir`, and asserts
that it exited 0 and printed its figures (each line the README's Benchmarks table quotes, with a number in
it). How fast is never asserted: at these sizes the figures mean nothing (README, "Testing"); the point is
that a change to the pipeline that breaks a benchmark fails here, not months later on a quiet machine.

The ingest benchmark runs a group of two workers, and the logs they wrote to files must be plain text.
The API benchmark loads a schema, seals its closed days and builds their search indexes (`--seal`), and the
console benchmark then measures that schema (`--schema`, as README suggests),
and the console benchmark also runs alone on a fresh server. The fault harness needs the Apache Kafka
cluster: one quick fault, in the `apache_lane` (and `slow`) selection.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from broker_lanes import require_broker

BENCH = Path(__file__).resolve().parents[2] / "bench"


def run_bench(name: str, *args: str, work_dir: Path, timeout_seconds: float) -> str:
    """`python bench/NAME.py ARGS --work-dir WORK_DIR`; its stdout, once it exited 0."""
    command = [sys.executable, str(BENCH / f"{name}.py"), *args, "--work-dir", str(work_dir)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_seconds, check=False)
    assert done.returncode == 0, (
        f"{' '.join(command[1:])} exited {done.returncode}\n--- stdout\n{done.stdout[-3000:]}\n"
        f"--- stderr\n{done.stderr[-3000:]}"
    )
    return done.stdout


def assert_figures(output: str, *patterns: str) -> None:
    """Every pattern matches a line of `output` (re.search, multi-line)."""
    missing = [p for p in patterns if not re.search(p, output, re.MULTILINE)]
    assert not missing, f"figures not printed: {missing}\n--- output\n{output}"


NUMBER = r"[\d,]+(?:\.\d+)?"


def test_ingest_benchmark_with_a_group_of_two_workers(tmp_path: Path) -> None:
    work_dir = tmp_path / "run"
    output = run_bench(
        "ingest", "--events", "3000", "--rooms", "50", "--workers", "2", "--partitions", "4",
        "--pg-statements", "5", work_dir=work_dir, timeout_seconds=180,
    )  # fmt: skip
    assert_figures(
        output,
        rf"^published {NUMBER} events in ",
        rf"^raw ceiling \(getmany \+ orjson \+ binary COPY\): {NUMBER} events/s$",
        rf"^real worker, 2 processes \(.*\): {NUMBER} events/s$",
        rf"worker CPU {NUMBER} s \({NUMBER} cores busy\): (?:{NUMBER}|n/a) events/s per worker core$",
        rf"PostgreSQL CPU {NUMBER} s \({NUMBER} cores busy\): (?:{NUMBER}|n/a) events/s per PostgreSQL core$",
        rf"^ratio worker / ceiling: {NUMBER}$",
        rf"^worker peak RSS: {NUMBER} MiB",
        r"^PostgreSQL time by statement during the worker's run \(pg_stat_statements, top 5;",
        rf"^\s+{NUMBER} ms\s+{NUMBER} calls\s+{NUMBER} µs/event(?: \(nested\))?: (?:SELECT|COPY|INSERT|WITH)",
    )
    assert len(re.findall(r"µs/event", output)) == 5
    logs = sorted(work_dir.glob("worker-*.log"))
    assert [log.name for log in logs] == ["worker-1.log", "worker-2.log"]
    for log in logs:
        # written to a file, not a terminal: no colour or cursor codes (faust's start-up spinner wrote some)
        assert b"\x1b" not in log.read_bytes(), f"{log} holds terminal control codes"


def test_retention_benchmark(tmp_path: Path) -> None:
    output = run_bench(
        "retention", "--rows", "20000", "--small-rows", "2000", work_dir=tmp_path / "run", timeout_seconds=120
    )
    assert_figures(
        output,
        rf"DELETE \(authorized, row trigger, \d+ indexes\)\s+{NUMBER} s",
        rf"DROP by a maintenance run \(whole run\)\s+{NUMBER} s",
        rf"DROP TABLE at 20,000 vs 2,000 rows: x{NUMBER}",
        rf"batches while nothing else runs: p50 {NUMBER} ms",
        rf"drop a day, a reader holds the class .*\s{NUMBER} ms \(\s*\d+ waits\)\s*$",
    )


def test_api_benchmark_then_console_benchmark_on_the_schema_it_loaded(
    postgres_dsn: str, pg_schema: str, tmp_path: Path
) -> None:
    sizes = ("--events", "20000", "--rooms", "100", "--days", "3", "--samples", "20")
    where = ("--dsn", postgres_dsn, "--schema", pg_schema)
    output = run_bench("api", *sizes, *where, "--seal", work_dir=tmp_path / "api", timeout_seconds=120)
    assert_figures(
        output,
        rf"^loaded 20,000 events over 100 rooms and 3 days by binary COPY: {NUMBER} events/s",
        rf"^sealed [12] closed days by the sealing run: {NUMBER} room-days, {NUMBER} events in {NUMBER} s",
        rf"^search indexes built on [12] sealed day partitions in {NUMBER} s .*, {NUMBER} MB; 0 deferred",
        r"^search indexes now: [12] valid, .*; invalid: 0; on the live day: 0$",
        rf"^room-day page of 100 events\s+n=20\s+p50\s+{NUMBER} ms\s+p99\s+{NUMBER} ms",
        rf"^text search, 7 days, random room\s+n=20\s+p50\s+{NUMBER} ms",
        rf"^text search, live day, busiest rooms, no hit\s+n=\d+\s+p50\s+{NUMBER} ms",
        r"^export of 100,000 events: skipped",  # the busiest room has far fewer at this size
    )
    # the console benchmark signs in: the database must verify its tokens on a schema it did not load
    output = run_bench("console", *sizes, *where, work_dir=tmp_path / "console", timeout_seconds=120)
    assert f"schema {pg_schema} already loaded: measuring only" in output
    assert_console_figures(output)


def test_console_benchmark_on_a_fresh_schema(tmp_path: Path) -> None:
    sizes = ("--events", "20000", "--rooms", "100", "--days", "3", "--samples", "20")
    output = run_bench("console", *sizes, work_dir=tmp_path / "run", timeout_seconds=120)
    assert_figures(output, rf"^VACUUM \(ANALYZE\) events: {NUMBER} s")
    assert_console_figures(output)


def assert_console_figures(output: str) -> None:
    timing = rf"\s+n=\d+\s+p50\s+{NUMBER} ms\s+p99\s+{NUMBER} ms\s+max\s+{NUMBER} ms$"
    assert_figures(
        output,
        r"^day view, busy room-day \(>=100 events\)" + timing,
        r"^calendar \(31 days\), 20 busiest rooms, first view" + timing,
        r"^insights \(4 weeks\), random room, first view" + timing,
        r"^event with context \(10 before, 10 after\)" + timing,
        rf"^day\s+\d+\s+{NUMBER}\s+{NUMBER}\s+{NUMBER}$",
    )


@pytest.mark.slow
@pytest.mark.apache_lane
@pytest.mark.timeout(480)
def test_fault_harness_with_one_fault(tmp_path: Path) -> None:
    require_broker()
    work_dir = tmp_path / "run"
    output = run_bench(
        "faults", "--seed", "7", "--faults", "postgres-stop", work_dir=work_dir, timeout_seconds=450
    )
    assert_figures(
        output,
        r"^python bench/faults.py --seed 7 --faults postgres-stop$",
        rf"^\|?\s*postgres-stop\s+\|\s+{NUMBER}\s+\|.*\|\s+ok\s*\|?$",
    )
    assert (work_dir / "harness.log").exists()
