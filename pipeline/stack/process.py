"""Child-process plumbing shared by the embedded broker and the embedded PostgreSQL server.

Both services run as children of the Python process that starts them, in a session of their own
(`start_new_session=True`): a Ctrl-C in the terminal reaches the owner only, and the owner decides the
order of shutdown (for example: stop the worker, let it commit, then stop PostgreSQL).
"""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, Self

from pipeline.errors import RoomlogsError

LOCALHOST = "127.0.0.1"


class EmbeddedServiceError(RoomlogsError):
    """An embedded service did not start, or did not stop, in time; the message carries its log tail."""


def free_port(host: str = LOCALHOST) -> int:
    """A TCP port nobody listens on right now (the kernel picks it; another process may take it later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def port_is_free(port: int, host: str = LOCALHOST) -> bool:
    """True when `port` can be bound on `host` (used to tell "port taken" from other start failures)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def can_connect(port: int, host: str = LOCALHOST, timeout_seconds: float = 1.0) -> bool:
    """True when a TCP connection to host:port is accepted."""
    try:
        with socket.create_connection((host, port), timeout=timeout_seconds):
            return True
    except OSError:
        return False


class LogFile:
    """A service's log file, appended to by every start, so a restart keeps the earlier runs' lines.

    `tail()` shows only what the current run wrote: that is what explains a failure.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._run_offset = 0

    def open_for_run(self) -> BinaryIO:
        """Open for appending and mark where this run begins; pass it as the child's stdout/stderr.

        The child keeps its own descriptor: close ours once the child is started.
        """
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._run_offset = self.path.stat().st_size if self.path.exists() else 0
        return open(self.path, "ab")

    def tail(self, max_lines: int = 40) -> str:
        try:
            with open(self.path, "rb") as log:
                log.seek(self._run_offset)
                text = log.read().decode("utf-8", errors="replace")
        except FileNotFoundError:
            return "(no log written)"
        lines = text.rstrip().splitlines()[-max_lines:]
        return "\n".join(lines) if lines else "(log is empty)"


def wait_for_exit(proc: subprocess.Popen[bytes], timeout_seconds: float) -> bool:
    """Wait up to `timeout_seconds`; True when the process has exited (and been reaped)."""
    try:
        proc.wait(timeout=timeout_seconds)
    except subprocess.TimeoutExpired:
        return False
    return True


def terminate(
    proc: subprocess.Popen[bytes],
    *,
    first_signal: signal.Signals,
    timeout_seconds: float,
    then_signal: signal.Signals | None = None,
    then_timeout_seconds: float = 5.0,
) -> None:
    """Send `first_signal`, wait; optionally send `then_signal`, wait; finally SIGKILL and reap.

    Never returns with the child still running; raises EmbeddedServiceError if even SIGKILL did not end
    it within a few seconds (a process stuck in the kernel).
    """
    if proc.poll() is not None:
        return
    steps: list[tuple[signal.Signals, float]] = [(first_signal, timeout_seconds)]
    if then_signal is not None:
        steps.append((then_signal, then_timeout_seconds))
    steps.append((signal.SIGKILL, 5.0))
    for sig, wait_seconds in steps:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
        if wait_for_exit(proc, wait_seconds):
            return
    raise EmbeddedServiceError(f"pid {proc.pid} did not exit after SIGKILL")


class PortTakenError(Exception):
    """Raised by a spawn attempt when another process took the port first (the start picks another)."""


#: Start attempts when the port was picked for the caller (another process may take it meanwhile).
START_ATTEMPTS_ON_PICKED_PORT = 3


class ServerProcess:
    """A server run as a child process, with its log: what an embedded server and a Kafka node share."""

    def __init__(self, log_path: Path) -> None:
        self._log = LogFile(log_path)
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        """The server's log (every run appended; error messages quote the current run)."""
        return self._log.path

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def log_tail(self, max_lines: int = 40) -> str:
        return self._log.tail(max_lines)

    def _signal(self, sig: signal.Signals) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(sig)


class EmbeddedServer(ServerProcess):
    """What the embedded broker and PostgreSQL share: a child process on a loopback port, with a log.

    Subclasses implement `start()` (calling `_start_on_free_port`) and `stop()`.
    """

    #: Used in messages: "embedded Kafka", "embedded PostgreSQL".
    label = "embedded server"

    def __init__(
        self,
        work_dir: Path,
        log_name: str,
        port: int | None,
        start_timeout_seconds: float,
        stop_timeout_seconds: float,
    ) -> None:
        self.work_dir = Path(work_dir).resolve()  # the server runs with its own cwd: no relative paths
        super().__init__(self.work_dir / log_name)
        self._port = port
        self.start_timeout_seconds = start_timeout_seconds
        self.stop_timeout_seconds = stop_timeout_seconds

    @property
    def port(self) -> int:
        if self._port is None:
            raise EmbeddedServiceError(f"the {self.label} has no port until start()")
        return self._port

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def _start_on_free_port(self, spawn_and_wait: Callable[[int], None]) -> None:
        """Run `spawn_and_wait(port)` on the fixed port, or on a picked one, picking again if it is taken."""
        fixed_port = self._port
        attempts = 1 if fixed_port is not None else START_ATTEMPTS_ON_PICKED_PORT
        for attempt in range(1, attempts + 1):
            port = fixed_port if fixed_port is not None else free_port()
            try:
                spawn_and_wait(port)
            except PortTakenError:
                self._port = fixed_port
                if attempt == attempts:
                    raise EmbeddedServiceError(
                        f"{self.label} could not listen on {LOCALHOST}:{port}: the port is in use; "
                        f"log {self.log_path}:\n{self._log.tail()}"
                    ) from None
            else:
                return

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = f"{LOCALHOST}:{self._port}" if self._port is not None else "no port yet"
        return f"{type(self).__name__}({where}, pid={self.pid}, work_dir={str(self.work_dir)!r})"
