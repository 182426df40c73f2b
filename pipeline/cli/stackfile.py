"""How other commands find the embedded stack of a running `roomlogs up` (or `demo`): `.roomlogs/stack.json`.

`roomlogs up` and `roomlogs demo` write `<work dir>/stack.json` once their broker, PostgreSQL and worker
run (`write()`), and remove it when they stop (`remove()`). Besides what `up` prints (addresses, logs), it
holds the pid of the process that wrote it and `env`: the ROOMLOGS_* settings that point a command at
that stack (`stack_env()`), the same ones `up` and `demo` print as `export` lines for another shell.

`discovered_env()` is called by the CLI's `main()` before `Settings.from_env`, with the process's
environment: when neither ROOMLOGS_KAFKA_BOOTSTRAP nor ROOMLOGS_POSTGRES_DSN is set and `.roomlogs/stack.json`
of the current directory belongs to a stack that still runs (its writer's pid is alive and its broker
answers), it returns that `env`, to lay under the process's own variables: settings set explicitly always
win. A file left behind by a stack that is gone (a `kill -9`, a reboot) is ignored. `up` also keeps
`api_env` there, the settings of its console's API, which `discovered_api_env()` gives `roomlogs api
sign-in-link` and `api token` (a link opens one session: another shell makes the next). Nothing else
reads it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from pipeline.settings import ENV_PREFIX, Settings

__all__ = [
    "STACK_FILE",
    "Discovered",
    "discovered_api_env",
    "discovered_env",
    "export_lines",
    "remove",
    "running",
    "stack_env",
    "write",
]

#: Where `roomlogs up` / `demo` with the default work directory write it, relative to where they run.
STACK_FILE = Path(".roomlogs") / "stack.json"
#: Settings that locate a stack, say how clients must talk to its broker, or name its signing key.
#: `stack_env()` gives the ones of these that differ from the defaults, and always the first two.
STACK_SETTINGS = (
    "kafka_bootstrap",
    "postgres_dsn",
    "postgres_schema",
    "events_topic",
    "dead_letter_topic",
    "consumer_group",
    "kafka_security_protocol",
    "kafka_idempotent_producer",
    "kafka_replication_factor",
    "kafka_static_membership",
    "kafka_session_timeout_seconds",
    "seal_key_file",  # the stack's own signing key: `roomlogs seals run` from another shell uses it too
)
_ALWAYS = ("kafka_bootstrap", "postgres_dsn")
#: Either of these set in the environment means "my own stack": no discovery.
_EXPLICIT = (ENV_PREFIX + "KAFKA_BOOTSTRAP", ENV_PREFIX + "POSTGRES_DSN")
#: Either of these set means "my own API's key": `api sign-in-link` and `api token` do not use the stack's.
_EXPLICIT_API = (ENV_PREFIX + "API_JWT_KEY", ENV_PREFIX + "API_JWT_KEY_FILE")
_PROBE_SECONDS = 0.5


def stack_env(settings: Settings) -> dict[str, str]:
    """The ROOMLOGS_* variables that point a command at the stack `settings` describe."""
    mine, default = settings.to_env(), Settings().to_env()
    names = [ENV_PREFIX + name.upper() for name in STACK_SETTINGS]
    always = {ENV_PREFIX + name.upper() for name in _ALWAYS}
    return {name: mine[name] for name in names if name in always or mine[name] != default[name]}


def export_lines(env: Mapping[str, str]) -> list[str]:
    """`export NAME=VALUE` for a POSIX shell, one per variable."""
    return [f"export {name}={shlex.quote(value)}" for name, value in env.items()]


def write(
    path: Path,
    info: Mapping[str, Any],
    settings: Settings,
    *,
    command: str,
    api_env: Mapping[str, str] | None = None,
    processes: Sequence[tuple[str, int]] = (),
) -> None:
    """Write `info`, who wrote it (this process, `command`), its `processes` ((name, pid), with when each
    started: see `left_running`) and `stack_env(settings)` to `path`; with
    `api_env`, the ROOMLOGS_API_* settings `roomlogs api sign-in-link` and `api token` need to sign in to
    the stack's console (its development key, its host and port: see `discovered_api_env`).

    Readable by its owner only: the DSN may carry a password, and `api_env` holds a signing key.
    """
    document = {
        **info,
        "command": command,
        "pid": os.getpid(),
        "started": _started(os.getpid()),
        "env": stack_env(settings),
    }
    document["processes"] = [
        {"name": name, "pid": pid, "started": started}
        for name, pid in processes
        if (started := _started(pid)) is not None
    ]
    if api_env:
        document["api_env"] = dict(api_env)
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(json.dumps(document, indent=2) + "\n")


def remove(path: Path) -> None:
    """Remove `path` if this process wrote it (another `up` may have written its own since)."""
    with contextlib.suppress(OSError, ValueError):
        if json.loads(path.read_text()).get("pid") == os.getpid():
            path.unlink()


@dataclass(frozen=True)
class Discovered:
    """The environment of a running stack, and the line that says where it came from."""

    env: dict[str, str]
    notice: str


def discovered_env(environ: Mapping[str, str], path: Path = STACK_FILE) -> Discovered | None:
    """The `env` of the running stack described by `path`, or None: when ROOMLOGS_KAFKA_BOOTSTRAP or
    ROOMLOGS_POSTGRES_DSN is set, when there is no such file (or it does not parse), or when the stack
    it describes is gone."""
    if any(environ.get(name) for name in _EXPLICIT):
        return None
    document = running(path)
    if document is None:
        return None
    env = {k: v for k, v in document["env"].items() if k.startswith(ENV_PREFIX) and isinstance(v, str)}
    return Discovered(env, f"using the embedded stack of `roomlogs {document['command']}` ({path})")


def discovered_api_env(environ: Mapping[str, str], path: Path = STACK_FILE) -> dict[str, str]:
    """The ROOMLOGS_API_* settings of the console of the running `roomlogs up` that `path` describes
    (its development HMAC key, host and port), for `roomlogs api sign-in-link` and `api token` run from
    another shell; empty when ROOMLOGS_API_JWT_KEY or ROOMLOGS_API_JWT_KEY_FILE is set (your own API), when
    ROOMLOGS_KAFKA_BOOTSTRAP or ROOMLOGS_POSTGRES_DSN is set, or when no stack with a console runs."""
    if any(environ.get(name) for name in (*_EXPLICIT, *_EXPLICIT_API)):
        return {}
    document = running(path)
    api_env = document.get("api_env") if document is not None else None
    if not isinstance(api_env, dict):
        return {}
    return {k: v for k, v in api_env.items() if k.startswith(ENV_PREFIX + "API_") and isinstance(v, str)}


def running(path: Path) -> dict[str, Any] | None:
    """What `path` says of its stack (with `command` and `pid` set), if that stack still runs: its writer's
    pid is alive and its broker answers. `up` and `demo` call it before they start anything, to refuse to
    start a second stack on the same work directory."""
    try:
        document = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(document, dict):
        return None
    env, pid = document.get("env"), document.get("pid")
    if not isinstance(env, dict) or not isinstance(pid, int) or not _writer_alive(document):
        return None
    bootstrap = env.get(ENV_PREFIX + "KAFKA_BOOTSTRAP")
    if not isinstance(bootstrap, str) or not _answers(bootstrap):
        return None
    return {**document, "command": str(document.get("command", "up"))}


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def _answers(bootstrap: str) -> bool:
    """Whether a server of `bootstrap` (host:port[,host:port...]) accepts a TCP connection."""
    for server in bootstrap.split(","):
        host, _, port = server.strip().rpartition(":")
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=_PROBE_SECONDS):
                return True
        except (OSError, ValueError):
            continue
    return False


def _writer_alive(document: dict[str, Any]) -> bool:
    """The process that wrote `document` still runs: its pid is alive and, where the file records it (since
    the writer's start time is kept), started when it did (a pid used again by another process is not
    it; an outside tester put a `sleep`'s pid in the file and `up` said a stack ran there)."""
    pid, started = document["pid"], document.get("started")
    if not _alive(pid):
        return False
    if not isinstance(started, int | float):
        return True
    now = _started(pid)
    return now is not None and abs(now - float(started)) < 0.01


def _started(pid: int) -> float | None:
    """When process `pid` started (seconds since the epoch; with its pid, it names that process alone)."""
    try:
        return float(psutil.Process(pid).create_time())
    except psutil.Error:
        return None


#: The processes stopped last (a broker or PostgreSQL stopped first would leave the others failing)
_SERVERS = ("postgres", "tansu", "kafka node")


def left_running(path: Path) -> tuple[int, list[tuple[str, psutil.Process]]] | None:
    """(the writer's pid, the processes of its stack still running) when `path` was written by an `up` or
    `demo` that is gone (killed outright: nothing could stop what it started); None when there is no such
    file, or its writer still runs. A process counts only if its pid and start time are those recorded: a
    pid used again by another process since is left alone."""
    try:
        document = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(document, dict) or not isinstance(document.get("pid"), int) or _writer_alive(document):
        return None
    found = []
    for entry in document.get("processes", []):
        try:
            process = psutil.Process(int(entry["pid"]))
            if abs(process.create_time() - float(entry["started"])) < 0.01 and process.is_running():
                found.append((str(entry["name"]), process))
        except (psutil.Error, KeyError, TypeError, ValueError):
            continue
    return document["pid"], found


def stop_left_running(processes: Sequence[tuple[str, psutil.Process]], *, wait_seconds: float = 30.0) -> None:
    """Stop what a killed stack left running: the worker, the API and the traffic first (SIGTERM), then the
    broker and PostgreSQL (SIGINT: its fast, clean shutdown); whatever still runs after `wait_seconds` is
    killed."""
    for servers in (False, True):
        group = [(n, p) for n, p in processes if n.startswith(_SERVERS) == servers]
        for name, process in group:
            with contextlib.suppress(psutil.Error):
                process.send_signal(signal.SIGINT if name == "postgres" else signal.SIGTERM)
        _, alive = psutil.wait_procs([p for _, p in group], timeout=wait_seconds)
        for process in alive:
            with contextlib.suppress(psutil.Error):
                process.kill()
        psutil.wait_procs(alive, timeout=5)
