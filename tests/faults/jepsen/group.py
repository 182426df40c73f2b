"""The worker group under test: `roomlogs worker` processes in one consumer group, as deployed.

Each worker is a child process configured only through ROOMLOGS_* (pipeline.cli.devstack), with its own
metrics port (its static member id is "<host>-<port>") and data directory; one may run inside a network
namespace (netns.Namespace) so that its links can be cut. The harness plays the supervisor: it restarts a
worker it killed. A worker that exits when nobody killed it is recorded in `unexpected_exits`.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from pipeline.cli.devstack import WORKER_COMMAND, worker_env
from pipeline.settings import Settings


@dataclass
class Worker:
    name: str
    settings: Settings
    log_path: Path
    #: e.g. `ip netns exec NAME` (it execs the worker: the pid is the worker's)
    prefix: list[str] = field(default_factory=list)
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0
    #: return codes of exits nobody asked for
    unexpected_exits: list[int] = field(default_factory=list)
    #: for each of those, the last error its log wrote before it
    exit_errors: list[str] = field(default_factory=list)
    stopped: bool = False  # SIGSTOP sent, no SIGCONT yet
    #: killed by the harness and not started again yet (the supervisor leaves it down)
    down_on_purpose: bool = False
    _restarted_at: float = 0.0

    @property
    def url(self) -> str:
        return f"http://{self.settings.metrics_host}:{self.settings.metrics_port}"

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        self.check_exit()
        if self.alive:
            return
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [*self.prefix, *WORKER_COMMAND],
                env=worker_env(self.settings),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.starts += 1
        self.down_on_purpose = False

    def supervise(self) -> bool:
        """What `restart: unless-stopped` does: start the worker again if it exited on its own (at most
        every 2 s). True when it did."""
        self.check_exit()
        if self.proc is not None or self.down_on_purpose or time.monotonic() - self._restarted_at < 2.0:
            return False
        self._restarted_at = time.monotonic()
        self.start()
        return True

    def last_error(self) -> str:
        """The last line its log wrote at level error or critical (for a report), or ''."""
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return next(
            (line.strip() for line in reversed(lines) if line.split()[1:2] in (["error"], ["critical"])), ""
        )

    def check_exit(self) -> None:
        """Record an exit nobody asked for (a worker that gave up or crashed on its own)."""
        if self.proc is not None and self.proc.poll() is not None:
            self.unexpected_exits.append(self.proc.returncode)
            self.exit_errors.append(self.last_error())
            self.proc = None

    def kill9(self) -> None:
        self.check_exit()
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(30)
            self.proc = None
        self.stopped = False
        self.down_on_purpose = True

    def sigstop(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGSTOP)
            self.stopped = True

    def sigcont(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGCONT)
        self.stopped = False

    def terminate(self, timeout_seconds: float = 60.0) -> int | None:
        """SIGTERM (drain, commit, exit 0), SIGKILL past the timeout. The exit code, None if not running."""
        self.check_exit()
        self.down_on_purpose = True  # first: the supervisor (another thread) must not start it meanwhile
        proc, self.proc = self.proc, None
        if proc is None:
            return None
        proc.send_signal(signal.SIGCONT)
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout_seconds)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(30)
            return -9

    async def readiness(self, http: httpx.AsyncClient) -> dict[str, Any] | None:
        """The worker's /readyz body (200 or 503), None when it does not answer."""
        if not self.alive or self.stopped:
            return None
        with contextlib.suppress(httpx.HTTPError, ValueError):
            body = (await http.get(self.url + "/readyz", timeout=5)).json()
            return body if isinstance(body, dict) else None
        return None

    async def partitions(self, http: httpx.AsyncClient) -> set[int]:
        body = await self.readiness(http)
        return set(body.get("partitions", ())) if body else set()

    async def metrics(self, http: httpx.AsyncClient) -> dict[str, float]:
        """Unlabelled samples of the worker's /metrics (name -> value); empty when it does not answer."""
        if not self.alive or self.stopped:
            return {}
        try:
            text = (await http.get(self.url + "/metrics", timeout=5)).text
        except httpx.HTTPError:
            return {}
        samples: dict[str, float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if not sample.labels:
                    samples[sample.name] = sample.value
        return samples


class WorkerGroup:
    """The workers of one consumer group, and the questions the scenarios ask about them."""

    def __init__(self, workers: list[Worker]) -> None:
        self.workers = workers
        self.http = httpx.AsyncClient()

    def start(self) -> None:
        for worker in self.workers:
            worker.start()

    async def supervise(self) -> None:
        """Until cancelled: restart any worker that exits on its own (its exit stays recorded)."""
        while True:
            for worker in self.workers:
                worker.supervise()
            await asyncio.sleep(0.5)

    async def stop(self) -> dict[str, int | None]:
        """SIGTERM every worker (in parallel), as a deploy does; their exit codes. The supervisor leaves
        them down (not an exit on their own) until `start()`."""
        codes = await asyncio.gather(*(asyncio.to_thread(w.terminate) for w in self.workers))
        return {w.name: code for w, code in zip(self.workers, codes, strict=True)}

    async def close(self) -> dict[str, int | None]:
        """SIGTERM every worker (in parallel); their exit codes."""
        codes = await self.stop()
        await self.http.aclose()
        return codes

    async def assignment(self) -> dict[str, set[int]]:
        """Partitions each worker reports as assigned (empty for one that does not answer)."""
        found = await asyncio.gather(*(w.partitions(self.http) for w in self.workers))
        return {w.name: parts for w, parts in zip(self.workers, found, strict=True)}

    async def wait_assigned(self, partitions: int, timeout_seconds: float, *, members: int) -> bool:
        """Until `members` workers hold partitions and together hold all of them, once each."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_seconds
        wanted = set(range(partitions))
        while loop.time() < deadline:
            held = [parts for parts in (await self.assignment()).values() if parts]
            union = set().union(*held) if held else set()
            if len(held) >= members and union == wanted and sum(map(len, held)) == partitions:
                return True
            await asyncio.sleep(0.3)
        return False

    async def paused(self) -> dict[str, bool]:
        """Whether each worker says its ingest is paused (an outage it waits out)."""
        bodies = await asyncio.gather(*(w.readiness(self.http) for w in self.workers))
        return {w.name: bool(b and b.get("paused")) for w, b in zip(self.workers, bodies, strict=True)}

    async def counters(self) -> dict[str, dict[str, float]]:
        """Per worker: records fenced (written before by another transaction) and duplicates caught."""
        out = {}
        for worker in self.workers:
            samples = await worker.metrics(self.http)
            out[worker.name] = {
                "fenced": samples.get("roomlogs_records_redelivered_total", 0.0),
                "duplicates": samples.get("roomlogs_events_duplicate_total", 0.0),
            }
        return out
