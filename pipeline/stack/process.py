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
from pathlib import Path
from typing import BinaryIO

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
