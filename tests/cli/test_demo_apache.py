"""`roomlogs demo --kafka apache`: the README's demo on a local Apache Kafka cluster, as a user runs it.

The whole path through the CLI: a KRaft node started and formatted, topics created (auto-creation is
off), the faust worker process started with the idempotent producer, caught-up detection, the report, and
everything stopped at the end.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
from broker_lanes import require_broker

pytestmark = [pytest.mark.apache_lane, pytest.mark.slow]


def test_demo_on_apache_kafka_stores_what_it_published_and_stops_the_cluster(
    tmp_path: Path, postgres_dsn: str
) -> None:
    require_broker()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROOMLOGS_")}
    env["ROOMLOGS_POSTGRES_DSN"] = postgres_dsn
    env["ROOMLOGS_POSTGRES_SCHEMA"] = "demo_apache_" + tmp_path.name[-6:].lower().replace("-", "_")
    done = subprocess.run(
        [
            sys.executable, "-m", "pipeline.cli", "demo", "--kafka", "apache", "--kafka-nodes", "1",
            "--events", "3000", "--rooms", "30", "--no-progress", "--work-dir", str(tmp_path / "work"),
        ],
        env=env, capture_output=True, text=True, timeout=400, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert "starting Apache Kafka 4.1.1" in out
    stored = int(re.search(r"stored events: ([\d,]+)", out).group(1).replace(",", ""))  # type: ignore[union-attr]
    dead = int(re.search(r"dead-lettered: ([\d,]+)", out).group(1).replace(",", ""))  # type: ignore[union-attr]
    assert 0 < dead < 300 and stored + dead <= 3000 and stored > 2400
    node_dir = str(tmp_path / "work" / "kafka-cluster")
    leftovers = [p for p in psutil.process_iter(["cmdline"]) if node_dir in " ".join(p.info["cmdline"] or [])]
    assert not leftovers, "demo must stop the Kafka nodes it started"
