"""The README's first command: `roomlogs demo` starts everything, simulates, reports, and stops."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

pytestmark = pytest.mark.slow


def test_demo_publishes_stores_reports_and_cleans_up(tmp_path: Path, postgres_dsn: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROOMLOGS_")}
    # An explicit DSN wins over starting an embedded server (the session's server stands in for "yours").
    env["ROOMLOGS_POSTGRES_DSN"] = postgres_dsn
    env["ROOMLOGS_POSTGRES_SCHEMA"] = "demo_" + tmp_path.name[-8:].lower().replace("-", "_")
    done = _demo(env, tmp_path / "work")
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    published = int(re.search(r"published[^\d]*([\d,]+)", out, re.IGNORECASE).group(1).replace(",", ""))  # type: ignore[union-attr]
    stored = int(re.search(r"stored events: ([\d,]+)", out).group(1).replace(",", ""))  # type: ignore[union-attr]
    dead = int(re.search(r"dead-lettered: ([\d,]+)", out).group(1).replace(",", ""))  # type: ignore[union-attr]
    assert published == 4000
    assert 0 < dead < published * 0.1
    assert stored + dead <= published and stored > published * 0.8
    port = re.search(r"broker 127\.0\.0\.1:(\d+)", out).group(1)  # type: ignore[union-attr]
    # what another shell needs to reach the running demo, and nothing left behind that points at it
    exports = dict(re.findall(r"^export (ROOMLOGS_\w+)=(\S+)$", out, re.MULTILINE))
    assert exports["ROOMLOGS_KAFKA_BOOTSTRAP"] == f"127.0.0.1:{port}"
    assert exports["ROOMLOGS_POSTGRES_DSN"] == postgres_dsn
    assert exports["ROOMLOGS_POSTGRES_SCHEMA"] == env["ROOMLOGS_POSTGRES_SCHEMA"]
    assert not (tmp_path / "work" / "stack.json").exists()
    # once stopped, it says so, what is kept and where to look next
    assert out.splitlines()[-2:] == [
        "stopped the broker and the worker; the rows stay in your PostgreSQL "
        f"(ROOMLOGS_POSTGRES_DSN); the worker's log is {tmp_path / 'work'}/worker.log",
        "next: `roomlogs up` (`make up`) runs the same stack until Ctrl-C, with the room console, live "
        "traffic and a sign-in link",
    ], out[-2000:]
    leftovers = [
        p for p in psutil.process_iter(["cmdline"]) if f":{port}" in " ".join(p.info["cmdline"] or [])
    ]
    assert not leftovers, "demo must stop the broker it started"
    # a second run on the same database reports its own rows, and what the database holds in all
    again = _demo(env, tmp_path / "work")
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"stored events: {stored:,} in " in again.stdout, again.stdout[-3000:]  # the same traffic again
    assert f"(the database holds {2 * stored:,}, earlier runs' too)" in again.stdout, again.stdout[-3000:]
    assert f"dead-lettered: {dead:,}" in again.stdout, again.stdout[-3000:]


def _demo(env: dict[str, str], work_dir: Path) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "pipeline.cli", "demo", "--events", "4000", "--rooms", "40"]
    return subprocess.run(
        [*command, "--no-progress", "--work-dir", str(work_dir)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
