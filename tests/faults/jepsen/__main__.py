"""Command line: ``python bench/faults.py --seed 7 [--faults leader-kill9,worker-kill9,...]``.

Starts a local 3-node Apache Kafka cluster (pipeline.stack.cluster, replication 3, min.insync.replicas=2)
and an embedded PostgreSQL in a work directory, runs each fault scenario on them in turn, prints the table
and the details, and stops what it started. Exit status 0 when every scenario that could run passed its
check, 1 otherwise. The same seed replays the same events and the same fault schedule.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import tempfile
import time
from pathlib import Path

from pipeline.stack import EmbeddedPostgres
from pipeline.stack.cluster import KAFKA_VERSION, KafkaCluster

from .harness import HarnessError, Result, Stack, run_scenario
from .netns import unsupported_reason
from .report import details, table
from .scenarios import SCENARIOS


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python bench/faults.py",
        description="Fault harness in the Jepsen style: publishers, a worker group, faults, drain, check.",
    )
    parser.add_argument("--seed", type=int, default=7, help="replays events and fault timing (default 7)")
    parser.add_argument(
        "--faults",
        default=",".join(SCENARIOS),
        help=f"comma-separated scenarios to run, in order (default: all): {', '.join(SCENARIOS)}",
    )
    parser.add_argument("--rate", type=float, default=150.0, help="events per second, all publishers (150)")
    parser.add_argument("--work-dir", type=Path, help="keep broker, PostgreSQL and worker logs here")
    parser.add_argument("--keep", action="store_true", help="keep each scenario's topic and schema")
    parser.add_argument("--list", action="store_true", help="list the scenarios and exit")
    return parser


async def _run_all(stack: Stack, names: list[str], seed: int, rate: float, keep: bool) -> list[Result]:
    results = []
    for name in names:
        print(
            f"[{time.strftime('%H:%M:%S')}] {name}: {SCENARIOS[name].summary} ...",
            file=sys.stderr,
            flush=True,
        )
        try:
            result = await run_scenario(stack, SCENARIOS[name], seed, rate_per_second=rate, keep=keep)
        except HarnessError as exc:
            result = Result(name, seed, problems=[f"harness: {exc}"])
        results.append(result)
        print(details(result), file=sys.stderr, flush=True)
    return results


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.list:
        for name, scenario in SCENARIOS.items():
            print(f"{name:24} {scenario.summary}")
        reason = unsupported_reason()
        if reason:
            print(f"\nworker-netcut is not possible here: {reason}")
        return 0
    names = [n.strip() for n in args.faults.split(",") if n.strip()]
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        print(f"unknown scenario(s) {unknown}; choose from {', '.join(SCENARIOS)}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="roomlogs-faults-") as tmp:
        work_dir = (args.work_dir or Path(tmp)).resolve()
        work_dir.mkdir(parents=True, exist_ok=True)
        logging.basicConfig(
            filename=work_dir / "harness.log",
            level=logging.INFO,
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        )
        print(
            f"Apache Kafka {KAFKA_VERSION}, 3 KRaft nodes; embedded PostgreSQL; logs in {work_dir}",
            file=sys.stderr,
        )
        cluster = KafkaCluster(work_dir / "kafka", nodes=3, heap="512m")
        postgres = EmbeddedPostgres(work_dir / "postgres", fast=True)
        try:
            cluster.start()
            postgres.start()
            results = asyncio.run(
                _run_all(Stack(cluster, postgres, work_dir), names, args.seed, args.rate, args.keep)
            )
        finally:
            postgres.stop()
            cluster.stop()
    command = f"python bench/faults.py --seed {args.seed}"
    if names != list(SCENARIOS):
        command += f" --faults {','.join(names)}"
    if args.rate != 150.0:
        command += f" --rate {args.rate:g}"
    print(f"\n{command}\n")
    print(table(results))
    return 0 if all(r.ok or r.not_possible for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
