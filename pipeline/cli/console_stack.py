"""The room console in `roomlogs up`: the API (with the console) as a child process, live traffic, a link.

`ConsoleServer.start()` is called by `roomlogs up` once the stack's PostgreSQL is migrated and its worker
runs. It gives the API's own database role a fresh password, starts `roomlogs api serve` configured only
through ROOMLOGS_* / ROOMLOGS_API_* variables (a development HMAC key made for this run), starts a paced
simulation (`roomlogs simulate --rate --keep-owners`) so that rooms fill and the live view moves, waits
until a room that this traffic writes to has an owner and events ingested since the traffic started, and
returns what to print: the console's address and a sign-in link for that owner (who stays the owner while
`up` runs: this traffic never hands a room over). A database kept from earlier runs (the embedded
PostgreSQL keeps its data) has rooms that no longer receive anything: those are never picked. `stop()`
ends both children. A child that cannot start is a `RoomlogsError` naming its log.
"""

from __future__ import annotations

import asyncio
import secrets
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

import jwt

from pipeline.cli.devstack import worker_env
from pipeline.console import sign_in_link
from pipeline.errors import RoomlogsError
from pipeline.settings import Settings
from pipeline.stack.process import free_port
from pipeline.storage import db

__all__ = ["ConsoleServer"]

API_COMMAND = (sys.executable, "-m", "pipeline.cli", "api", "serve")
#: Live traffic for the console: a few rooms, paced, until `roomlogs up` stops.
#: Owners keep their rooms (`--keep-owners`): the sign-in link is for a room's owner, who must stay it.
TRAFFIC_COMMAND = (sys.executable, "-m", "pipeline.cli", "simulate", "--rooms", "12", "--rate", "25",
                   "--events", "100000000", "--bad-ratio", "0.01", "--no-progress",
                   "--keep-owners")  # fmt: skip
_LINK_TTL_SECONDS = 3600


@dataclass
class ConsoleServer:
    settings: Settings
    work_dir: Path
    children: list[subprocess.Popen[bytes]] = field(default_factory=list)
    #: Once started: the ROOMLOGS_API_* settings that sign in to this API (its key, host and port), which
    #: `roomlogs up` keeps in stack.json for `roomlogs api sign-in-link` in another shell.
    api_env: dict[str, str] = field(default_factory=dict)

    def start(self, *, wait_seconds: float = 120.0, stop: threading.Event | None = None) -> dict[str, str]:
        """Start the API and the traffic; wait for a room to link to. `stop` set (Ctrl-C) ends the waits
        at once, with the RoomlogsError of what was waited for."""
        s = self.settings
        key = secrets.token_urlsafe(48)
        host, port = "127.0.0.1", free_port("127.0.0.1")
        base = f"http://{host}:{port}"
        password = secrets.token_hex(16)
        asyncio.run(_set_password(s, password, key))
        env = worker_env(s)
        env.update(
            {
                "ROOMLOGS_API_POSTGRES_DSN": _role_dsn(
                    s.postgres_dsn.get(), f"{s.postgres_schema}_api", password
                ),
                "ROOMLOGS_API_JWT_KEY": key,
                "ROOMLOGS_API_JWT_ALGORITHM": "HS256",
                "ROOMLOGS_API_CURSOR_KEY": secrets.token_urlsafe(48),
                "ROOMLOGS_API_HOST": host,
                "ROOMLOGS_API_PORT": str(port),
            }
        )
        self.api_env = {
            name: env[name]
            for name in (
                "ROOMLOGS_API_JWT_KEY",
                "ROOMLOGS_API_JWT_ALGORITHM",
                "ROOMLOGS_API_HOST",
                "ROOMLOGS_API_PORT",
            )
        }
        api_log = self.work_dir / "api.log"
        self.children.append(_spawn(API_COMMAND, env, api_log))
        if not _wait(lambda: _healthy(base), wait_seconds, self.children[-1], stop):
            raise RoomlogsError(f"the API did not start; see {api_log}")
        traffic_log = self.work_dir / "traffic.log"
        traffic_began = datetime.now(UTC)
        traffic = _spawn(TRAFFIC_COMMAND, worker_env(s), traffic_log)
        self.children.append(traffic)
        found: list[tuple[str, str]] = []
        if not _wait(lambda: _owner(s, traffic_began, found), wait_seconds, traffic, stop):
            if traffic.poll() is not None:
                raise RoomlogsError(
                    f"the live traffic (`roomlogs simulate`) exited with code {traffic.returncode}; "
                    f"see {traffic_log}"
                )
            stored = asyncio.run(_stored_since(s, traffic_began))
            raise RoomlogsError(
                f"no room of this run's traffic got an owner and 20 events stored within {wait_seconds:g} s "
                f"({stored:,} of its events stored so far); see {traffic_log} and "
                f"{self.work_dir / 'worker.log'}"
            )
        room, owner = found[0]
        now = int(time.time())
        claims = {"sub": owner, "iat": now, "exp": now + _LINK_TTL_SECONDS, "jti": secrets.token_urlsafe(16)}
        token = jwt.encode(claims, key, algorithm="HS256")  # jti: one console session at most
        return {
            "console_url": base + "/console/",
            "api_log": str(api_log),
            "traffic_log": str(traffic_log),
            "sign_in_link": sign_in_link(base, token, next_page=f"/console/rooms/{quote(room, safe='')}/"),
            "sign_in_as": f"{owner}, owner of {room} (the link opens one session, within an hour)",
            "another_link": f"roomlogs api sign-in-link --sub {owner} --room {room}  (from this directory)",
        }

    def processes(self) -> list[tuple[str, int]]:
        """(name, pid) of the API and the traffic, as started."""
        return list(zip(("api", "traffic"), (child.pid for child in self.children), strict=False))

    def stop(self) -> None:
        for child in reversed(self.children):
            if child.poll() is None:
                child.terminate()
                try:
                    child.wait(30)
                except subprocess.TimeoutExpired:
                    child.kill()
                    child.wait()
        self.children.clear()


def _spawn(command: tuple[str, ...], env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    with open(log_path, "ab") as log:  # the child keeps its own descriptor
        return subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)


def _wait(
    ready: object, seconds: float, child: subprocess.Popen[bytes], stop: threading.Event | None = None
) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if ready():  # type: ignore[operator]
            return True
        if child.poll() is not None or (stop is not None and stop.is_set()):
            return False
        time.sleep(0.5)
    return False


def _healthy(base: str) -> bool:
    try:
        with urllib.request.urlopen(base + "/healthz", timeout=2) as answer:  # noqa: S310 (our own server)
            return bool(answer.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _owner(s: Settings, since: datetime, found: list[tuple[str, str]]) -> bool:
    row = asyncio.run(_owned_room(s, since))
    if row is not None:
        found.append(row)
    return row is not None


async def _owned_room(s: Settings, since: datetime) -> tuple[str, str] | None:
    """(room, owner) of a room the live traffic writes to: one with an owner and at least 20 events that
    happened and were stored `since` (when the traffic started), so the room is live, not one of an earlier
    run's. The busiest such room, so that its live view moves."""
    conn = await db.connect(s.postgres_dsn.get(), s.postgres_schema)
    try:
        row = await conn.fetchrow(
            """SELECT r.room_id, r.owner_id, count(e.event_id) AS n
                 FROM rooms r
                 JOIN events e ON e.room_id = r.room_id AND e.occurred_at >= $1 AND e.ingested_at >= $1
                WHERE r.owner_id IS NOT NULL
                GROUP BY 1, 2 HAVING count(e.event_id) >= 20
                ORDER BY 3 DESC LIMIT 1""",
            since,
        )
    finally:
        await conn.close()
    return None if row is None else (row["room_id"], row["owner_id"])


async def _stored_since(s: Settings, since: datetime) -> int:
    """How many events that happened `since` were stored (what a failed wait for a room says)."""
    conn = await db.connect(s.postgres_dsn.get(), s.postgres_schema)
    try:
        stored: int = await conn.fetchval(
            "SELECT count(*) FROM events WHERE occurred_at >= $1 AND ingested_at >= $1", since
        )
        return stored
    finally:
        await conn.close()


async def _set_password(s: Settings, password: str, jwt_key: str) -> None:
    """The API role's password, and the token key the database checks deletions and sign-ins with
    (what `roomlogs api trust-key` installs)."""
    from pipeline.api.settings import ApiSettings
    from pipeline.api.trust import install, token_trust
    from pipeline.settings import Secret

    conn = await db.connect(s.postgres_dsn.get(), s.postgres_schema)
    try:
        await conn.execute(f"ALTER ROLE \"{s.postgres_schema}_api\" PASSWORD '{password}'")
        await install(conn, token_trust(ApiSettings(jwt_key=Secret(jwt_key), jwt_algorithm="HS256")))
    finally:
        await conn.close()


def _role_dsn(dsn: str, role: str, password: str) -> str:
    parts = urlsplit(dsn)
    host_port = parts.netloc.rpartition("@")[2] or "127.0.0.1"  # as written: an IPv6 host keeps its brackets
    netloc = f"{role}:{password}@{host_port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
