"""Fault harness in the Jepsen style, on a local 3-node Apache Kafka cluster and an embedded PostgreSQL.

    python bench/faults.py [--seed 7] [--faults leader-kill9,worker-kill9,...] [--rate 150] [--list]
                           [--work-dir DIR]

Publishers send seeded events with unique ids (idempotence on, acks=all), two `roomlogs worker` processes
ingest them, and each scenario hits the stream with one fault: kill -9 of a partition leader broker,
kill -9 of a worker (five times), SIGSTOP of a worker beyond its session timeout, PostgreSQL stopped for
20 s, a broker restarted while the workers are paused, the schema restored from a pg_dump taken
mid-stream, a worker's network link cut (needs root and network namespaces). Then a drain and a check:
every event a publisher saw acknowledged is stored, none twice, nothing dead-lettered. Prints a table of
fault x published, acknowledged, stored, lost, duplicated, time to recover. The harness lives in
tests/faults/jepsen (the test suite runs it too). The brokers', PostgreSQL's, the workers' and the
harness's logs go into the run's work directory (bench/workdir.py): kept, and named, when a scenario fails.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from workdir import add_work_dir_argument, run_dir

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "faults"))

from jepsen.__main__ import main  # the harness is found through the path set above


def run(argv: list[str]) -> int:
    """The harness in this run's own work directory; a failed scenario (exit 1) keeps the directory."""
    own = argparse.ArgumentParser(add_help=False)
    add_work_dir_argument(own)
    own.add_argument("--list", action="store_true")
    known, rest = own.parse_known_args(argv)
    if known.list or "-h" in rest or "--help" in rest:
        return main(argv)
    with run_dir(known.work_dir, "roomlogs-faults-") as work_dir:
        code = main([*rest, "--work-dir", str(work_dir)])
        if code != 0:
            raise SystemExit(code)
    return 0


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
