"""Fault harness in the Jepsen style, on a local 3-node Apache Kafka cluster and an embedded PostgreSQL.

    python bench/faults.py [--seed 7] [--faults leader-kill9,worker-kill9,...] [--rate 150] [--list]

Publishers send seeded events with unique ids (idempotence on, acks=all), two `roomlogs worker` processes
ingest them, and each scenario hits the stream with one fault: kill -9 of a partition leader broker,
kill -9 of a worker (five times), SIGSTOP of a worker beyond its session timeout, PostgreSQL stopped for
20 s, a broker restarted while the workers are paused, the schema restored from a pg_dump taken
mid-stream, a worker's network link cut (needs root and network namespaces). Then a drain and a check:
every event a publisher saw acknowledged is stored, none twice, nothing dead-lettered. Prints a table of
fault x published, acknowledged, stored, lost, duplicated, time to recover. The harness lives in
tests/faults/jepsen (the test suite runs it too).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "faults"))

from jepsen.__main__ import main  # the harness is found through the path set above

if __name__ == "__main__":
    sys.exit(main())
