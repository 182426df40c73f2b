"""A start-up problem ends every command with one line on stderr naming what to fix, and exit code 2.

Each case runs the real `roomlogs` command (``python -m pipeline.cli``) against the session's PostgreSQL
and Kafka-protocol broker, as an operator would, and checks what they would see: the exit code, a stderr
of exactly one line that names the setting (or command) to fix, and no Python traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import os
import secrets
import socket
import subprocess
import sys
import threading
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from pipeline.settings import Settings
from pipeline.stack import free_port
from pipeline.storage import db
from pipeline.storage.migrate import migrate
from pipeline.worker.preflight import preflight

TopicFactory = Callable[..., Awaitable[str]]

JWT_KEY = "k" * 48
API_KEYS = {
    "ROOMLOGS_API_JWT_KEY": JWT_KEY,
    "ROOMLOGS_API_JWT_ALGORITHM": "HS256",
    "ROOMLOGS_API_CURSOR_KEY": "c" * 48,
}


def roomlogs(
    *args: str, env: dict[str, str], cwd: Path, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """`roomlogs ARGS` with exactly the ROOMLOGS_* variables in `env` (none from this process); a free
    metrics port unless `env` names one (the worker checks its port first, and a `roomlogs up` running on
    this machine holds the default)."""
    clean = {k: v for k, v in os.environ.items() if not k.upper().startswith("ROOMLOGS_")}
    return subprocess.run(
        [sys.executable, "-m", "pipeline.cli", *args],
        env={**clean, "ROOMLOGS_METRICS_PORT": str(free_port()), **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def refused(done: subprocess.CompletedProcess[str], *names: str) -> str:
    """The one stderr line of a command that refused to start; it must name each of `names`."""
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr[-3000:]
    assert done.returncode == 2, (done.returncode, done.stderr)
    for name in names:
        assert name in lines[0], lines[0]
    return lines[0]


def with_database(dsn: str, database: str = "", user: str = "") -> str:
    parts = urlsplit(dsn)
    netloc = parts.netloc
    if user:
        netloc = f"{user}@{netloc.rpartition('@')[2]}"
    path = f"/{database}" if database else parts.path
    return urlunsplit((parts.scheme, netloc, path, parts.query, parts.fragment))


@contextlib.contextmanager
def ipv6_loopback(target_port: int) -> Iterator[int]:
    """A port on [::1] that forwards every connection to 127.0.0.1:`target_port` (the session's server
    listens on IPv4 only)."""
    listener = socket.create_server(("::1", 0), family=socket.AF_INET6)
    listener.settimeout(0.2)
    stop = threading.Event()
    sockets: list[socket.socket] = []

    def pump(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    def serve() -> None:
        while not stop.is_set():
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            upstream = socket.create_connection(("127.0.0.1", target_port))
            sockets.extend((client, upstream))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=pump, args=(a, b), daemon=True).start()

    acceptor = threading.Thread(target=serve, daemon=True)
    acceptor.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        acceptor.join(5)
        listener.close()
        for s in sockets:
            s.close()


# --- PostgreSQL -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("command", [["migrate"], ["retention", "check"], ["partitions"], ["worker"]])
def test_a_database_that_does_not_exist(command: list[str], postgres_dsn: str, tmp_path: Path) -> None:
    env = {"ROOMLOGS_POSTGRES_DSN": with_database(postgres_dsn, "no_such_db")}
    line = refused(roomlogs(*command, env=env, cwd=tmp_path), "ROOMLOGS_POSTGRES_DSN")
    assert 'database "no_such_db" does not exist' in line


def test_a_role_that_does_not_exist(postgres_dsn: str, tmp_path: Path) -> None:
    env = {"ROOMLOGS_POSTGRES_DSN": with_database(postgres_dsn, user="no_such_role")}
    line = refused(roomlogs("migrate", env=env, cwd=tmp_path), "ROOMLOGS_POSTGRES_DSN")
    assert 'role "no_such_role" does not exist' in line


async def test_an_owner_role_without_what_the_migrations_need(postgres_dsn: str, tmp_path: Path) -> None:
    """`roomlogs migrate` as a role that is not a superuser: it printed a traceback (exit 1) half-way, after
    migrations 0001 and 0002 were applied, and the README did not say what the role needs (an outside
    tester, on PostgreSQL 15). It now says, before applying anything, what to grant: CREATE on the
    database, and CREATEROLE or the two roles made first; with those, a non-superuser owner migrates."""
    owner, schema = f"rl_owner_{secrets.token_hex(4)}", f"rl_np_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(postgres_dsn)
    try:
        database = await admin.fetchval("SELECT current_database()")
        await admin.execute(f'CREATE ROLE "{owner}" LOGIN')
        env = {
            "ROOMLOGS_POSTGRES_DSN": with_database(postgres_dsn, user=owner),
            "ROOMLOGS_POSTGRES_SCHEMA": schema,
        }
        line = refused(roomlogs("migrate", env=env, cwd=tmp_path), "CREATEROLE", "nothing was applied")
        assert f'GRANT CREATE ON DATABASE "{database}" TO "{owner}"' in line
        await admin.execute(f'GRANT CREATE ON DATABASE "{database}" TO "{owner}"')
        line = refused(roomlogs("migrate", env=env, cwd=tmp_path), "CREATEROLE")
        assert "CREATE on database" not in line and f"{schema}_api, {schema}_worker" in line
        assert await admin.fetchval("SELECT to_regnamespace($1)", schema) is None  # nothing half-applied
        for role in (f"{schema}_api", f"{schema}_worker"):  # as a DBA would, instead of CREATEROLE
            await admin.execute(f'CREATE ROLE "{role}" LOGIN')
        done = roomlogs("migrate", env=env, cwd=tmp_path)
        assert done.returncode == 0, done.stderr[-3000:]
        assert "applied 0028_" in done.stdout
    finally:
        await admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await admin.execute(f'REVOKE ALL ON DATABASE "{database}" FROM "{owner}"')
        await admin.execute(f'DROP OWNED BY "{owner}" CASCADE')
        for role in (owner, f"{schema}_api", f"{schema}_worker"):
            await admin.execute(f'DROP ROLE IF EXISTS "{role}"')
        await admin.close()


async def test_a_schema_holding_a_table_roomlogs_did_not_make(postgres_dsn: str, tmp_path: Path) -> None:
    """A schema with a table of a name the migrations make (a restore that stopped half-way, another
    application's schema): `migrate` printed a traceback (DuplicateTableError), exit 1. Now one line."""
    schema = f"rl_foreign_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(postgres_dsn)
    try:
        await admin.execute(f'CREATE SCHEMA "{schema}"; CREATE TABLE "{schema}".retention_classes (x int)')
        env = {"ROOMLOGS_POSTGRES_DSN": postgres_dsn, "ROOMLOGS_POSTGRES_SCHEMA": schema}
        line = refused(roomlogs("migrate", env=env, cwd=tmp_path), "ROOMLOGS_POSTGRES_SCHEMA")
        assert '"retention_classes" already exists' in line and "roomlogs did not record making" in line
    finally:
        await admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await admin.close()


@pytest.mark.parametrize(
    "dsn",
    [
        "postgresql://roomlogs@[::1:5432/roomlogs",  # IPv6 without its closing bracket
        "postgresql://roomlogs@db:port/roomlogs",
        "mysql://roomlogs@db/roomlogs",
        "postgresql://roomlogs@db/roomlogs?sslmode=sometimes",
    ],
)
def test_a_malformed_dsn(dsn: str, tmp_path: Path) -> None:
    line = refused(
        roomlogs("migrate", env={"ROOMLOGS_POSTGRES_DSN": dsn}, cwd=tmp_path), "ROOMLOGS_POSTGRES_DSN"
    )
    assert "not a usable PostgreSQL DSN" in line


def test_an_ipv6_dsn_works(postgres_dsn: str, pg_schema: str, tmp_path: Path) -> None:
    port = urlsplit(postgres_dsn).port
    assert port is not None
    with ipv6_loopback(port) as v6_port:
        dsn = f"postgresql://postgres@[::1]:{v6_port}/postgres"
        env = {"ROOMLOGS_POSTGRES_DSN": dsn, "ROOMLOGS_POSTGRES_SCHEMA": pg_schema}
        done = roomlogs("migrate", env=env, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        assert "applied 0001_ingest" in done.stdout
        done = roomlogs("retention", "check", env=env, cwd=tmp_path)
        assert done.returncode == 0, done.stderr


def test_a_server_that_does_not_answer(tmp_path: Path) -> None:
    env = {"ROOMLOGS_POSTGRES_DSN": f"postgresql://roomlogs@[::1]:{free_port()}/roomlogs"}
    line = refused(roomlogs("migrate", env=env, cwd=tmp_path), "ROOMLOGS_POSTGRES_DSN")
    assert "cannot connect to PostgreSQL" in line


def test_the_worker_without_a_dsn(tmp_path: Path) -> None:
    refused(roomlogs("worker", env={}, cwd=tmp_path), "ROOMLOGS_POSTGRES_DSN")


def test_an_unmigrated_schema(
    postgres_dsn: str, pg_schema: str, kafka_bootstrap: str, tmp_path: Path
) -> None:
    env = {
        "ROOMLOGS_POSTGRES_DSN": postgres_dsn,
        "ROOMLOGS_POSTGRES_SCHEMA": pg_schema,
        "ROOMLOGS_KAFKA_BOOTSTRAP": kafka_bootstrap,
    }
    for command in (["worker"], ["retention"], ["retention", "hold", "list"], ["partitions"]):
        refused(roomlogs(*command, env=env, cwd=tmp_path), "roomlogs migrate")


OPERATOR_COMMANDS = [["status"], ["dead-letters", "list"], ["retention"], ["partitions"], ["worker"]]


@pytest.mark.parametrize("command", OPERATOR_COMMANDS, ids=" ".join)
async def test_a_schema_that_does_not_exist(
    command: list[str], ingest_settings: Settings, tmp_path: Path
) -> None:
    typo = ingest_settings.postgres_schema + "_typo"  # the user migrated one schema and typed another
    env = {
        **ingest_settings.to_env(),
        "ROOMLOGS_POSTGRES_SCHEMA": typo,
        "ROOMLOGS_METRICS_PORT": str(free_port()),  # the worker checks its port first
    }
    line = refused(roomlogs(*command, env=env, cwd=tmp_path), f"ROOMLOGS_POSTGRES_SCHEMA={typo!r}")
    assert "does not exist in this database" in line and "schemas with roomlogs tables here:" in line
    assert "set ROOMLOGS_POSTGRES_SCHEMA to the schema you migrated" in line and "roomlogs migrate" in line


@pytest.mark.parametrize("command", OPERATOR_COMMANDS, ids=" ".join)
async def test_a_schema_without_roomlogs_tables(
    command: list[str], postgres_dsn: str, pg_schema: str, kafka_bootstrap: str, tmp_path: Path
) -> None:
    conn = await asyncpg.connect(postgres_dsn)
    try:
        await conn.execute(f'CREATE SCHEMA "{pg_schema}"')
    finally:
        await conn.close()
    env = {
        "ROOMLOGS_POSTGRES_DSN": postgres_dsn,
        "ROOMLOGS_POSTGRES_SCHEMA": pg_schema,
        "ROOMLOGS_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "ROOMLOGS_METRICS_PORT": str(free_port()),
    }
    line = refused(roomlogs(*command, env=env, cwd=tmp_path), "ROOMLOGS_POSTGRES_SCHEMA", "roomlogs migrate")
    assert "has no roomlogs tables" in line


def test_a_default_retention_class_the_database_does_not_have(
    ingest_settings: Settings, tmp_path: Path
) -> None:
    env = {**ingest_settings.to_env(), "ROOMLOGS_DEFAULT_RETENTION_CLASS": "vip"}
    line = refused(roomlogs("worker", env=env, cwd=tmp_path), "ROOMLOGS_DEFAULT_RETENTION_CLASS")
    assert "busy_public, private, public" in line


# --- Kafka ----------------------------------------------------------------------------------------------
def test_kafka_unreachable(ingest_settings: Settings, tmp_path: Path) -> None:
    env = {**ingest_settings.to_env(), "ROOMLOGS_KAFKA_BOOTSTRAP": f"127.0.0.1:{free_port()}"}
    for command in (
        ["worker"],
        ["simulate", "--events", "10", "--no-progress"],
        ["seals", "heads", "--from-kafka"],
    ):
        refused(roomlogs(*command, env=env, cwd=tmp_path), "ROOMLOGS_KAFKA_BOOTSTRAP")


@contextlib.contextmanager
def http_server() -> Iterator[int]:
    """A port with an HTTP server on it: it takes a Kafka client's connection and waits for a line that
    never comes (the client's request is binary)."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("server", ["http", "postgres"])
def test_a_port_that_is_not_kafka(
    ingest_settings: Settings, postgres_dsn: str, tmp_path: Path, server: str
) -> None:
    """ROOMLOGS_KAFKA_BOOTSTRAP at a port some other server holds: the worker waited about 50 s in silence
    (the client's request timeout, then a probe's) and said "no Kafka broker answered". Now each command
    that needs the broker says which server took the connection and did not answer as Kafka, within
    seconds (the probe's 5 s; `status` shows it in place of the broker's offsets)."""
    with contextlib.ExitStack() as stack:
        port = stack.enter_context(http_server()) if server == "http" else urlsplit(postgres_dsn).port
        env = {**ingest_settings.to_env(), "ROOMLOGS_KAFKA_BOOTSTRAP": f"127.0.0.1:{port}"}
        for command in (
            ["worker"],
            ["simulate", "--events", "10", "--no-progress"],
            ["seals", "heads", "--from-kafka"],
        ):
            line = refused(roomlogs(*command, env=env, cwd=tmp_path), "ROOMLOGS_KAFKA_BOOTSTRAP")
            assert f"127.0.0.1:{port} took the connection but did not answer as a Kafka broker" in line
        done = roomlogs("status", env=env, cwd=tmp_path)
        assert f"127.0.0.1:{port} took the connection but did not answer as a Kafka broker" in done.stdout


def test_kafka_refusing(ingest_settings: Settings, tmp_path: Path) -> None:
    # the session's broker speaks plaintext without SASL: a SASL client is refused at its handshake
    env = {
        **ingest_settings.to_env(),
        "ROOMLOGS_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "ROOMLOGS_KAFKA_SASL_USERNAME": "roomlogs",
        "ROOMLOGS_KAFKA_SASL_PASSWORD": "secret",
    }
    for command in (
        ["worker"],
        ["simulate", "--events", "10", "--no-progress"],
        ["seals", "heads", "--from-kafka"],
    ):
        line = refused(roomlogs(*command, env=env, cwd=tmp_path), "ROOMLOGS_KAFKA_SASL_MECHANISM")
        assert "secret" not in line


@pytest.mark.broker_semantics
async def test_topics_whose_policy_would_have_kafka_delete_what_roomlogs_reads(
    ingest_settings: Settings, topic_factory: TopicFactory, tmp_path: Path
) -> None:
    # an events topic created compacted: Kafka would keep only the newest event of each room
    compacted = await topic_factory(partitions=3, prefix="ev-compact-", config={"cleanup.policy": "compact"})
    env = {**ingest_settings.to_env(), "ROOMLOGS_EVENTS_TOPIC": compacted}
    line = refused(await _worker(env, tmp_path), "ROOMLOGS_EVENTS_TOPIC", compacted, "cleanup.policy=delete")
    assert "newest record of each key" in line
    # a deletions topic deleting by age (as Kafka's default would, 7 days) or by size
    for config, said in (
        ({"retention.ms": str(7 * 86_400_000)}, "retention.ms=604800000"),
        ({"retention.ms": "-1", "retention.bytes": "1048576"}, "retention.bytes=1048576"),
        ({"cleanup.policy": "compact,delete", "retention.ms": "86400000"}, "retention.ms=86400000"),
    ):
        topic = await topic_factory(partitions=1, prefix="del-bounded-", config=config)
        env = {**ingest_settings.to_env(), "ROOMLOGS_DELETIONS_TOPIC": topic}
        refused(await _worker(env, tmp_path), "ROOMLOGS_DELETIONS_TOPIC", topic, said, "retention.ms=-1")
    # kept for ever, compacted or not: the worker starts (its preflight passes)
    for config in ({"cleanup.policy": "compact"}, {"retention.ms": "-1"}):
        topic = await topic_factory(partitions=1, prefix="del-kept-", config=config)
        s = ingest_settings.replace(deletions_topic=topic)
        await preflight(s)


async def _worker(env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(roomlogs, "worker", env=env, cwd=cwd)


# --- the API --------------------------------------------------------------------------------------------
def test_the_api_without_its_dsn(tmp_path: Path) -> None:
    refused(roomlogs("api", "serve", env=API_KEYS, cwd=tmp_path), "ROOMLOGS_API_POSTGRES_DSN")


def test_the_api_on_a_privileged_role(ingest_settings: Settings, tmp_path: Path) -> None:
    env = {
        **API_KEYS,
        "ROOMLOGS_POSTGRES_SCHEMA": ingest_settings.postgres_schema,
        "ROOMLOGS_API_POSTGRES_DSN": ingest_settings.postgres_dsn.get(),  # the superuser that migrated
    }
    line = refused(roomlogs("api", "serve", env=env, cwd=tmp_path), "ROOMLOGS_API_POSTGRES_DSN")
    assert "may edit or delete logs" in line and "ROOMLOGS_API_ALLOW_PRIVILEGED_DB_ROLE" in line


async def test_the_api_on_an_unmigrated_schema(postgres_dsn: str, pg_schema: str, tmp_path: Path) -> None:
    env = {
        **API_KEYS,
        "ROOMLOGS_POSTGRES_SCHEMA": pg_schema,
        "ROOMLOGS_API_POSTGRES_DSN": with_database(postgres_dsn, user=f"{pg_schema}_api"),
    }
    line = refused(roomlogs("api", "serve", env=env, cwd=tmp_path), "ROOMLOGS_API_POSTGRES_DSN")
    assert f'role "{pg_schema}_api" does not exist' in line
    conn = await asyncpg.connect(postgres_dsn)
    try:  # a role that exists, in a schema nobody migrated
        await conn.execute(f'CREATE ROLE "{pg_schema}_api" LOGIN')
        line = refused(roomlogs("api", "serve", env=env, cwd=tmp_path), "roomlogs migrate")
        assert "ROOMLOGS_POSTGRES_SCHEMA" in line
    finally:
        await conn.close()


async def test_the_api_on_a_schema_behind_this_code(
    postgres_dsn: str, pg_schema: str, tmp_path: Path
) -> None:
    """The code upgraded, `roomlogs migrate` not run: `api serve` served, failing request by request on what
    the schema lacked. Now it refuses in one line, as every other command does; and so it does on a schema
    from before the API's role could read schema_migrations (migration 0028)."""
    conn = await db.connect(postgres_dsn, pg_schema)
    try:
        await migrate(conn, pg_schema)
        password = secrets.token_hex(16)
        await conn.execute(f"ALTER ROLE \"{pg_schema}_api\" PASSWORD '{password}'")
        api_dsn = with_database(postgres_dsn, user=f"{pg_schema}_api:{password}")
        env = {**API_KEYS, "ROOMLOGS_POSTGRES_SCHEMA": pg_schema, "ROOMLOGS_API_POSTGRES_DSN": api_dsn}
        await conn.execute("DELETE FROM schema_migrations WHERE version = 27")
        line = refused(roomlogs("api", "serve", env=env, cwd=tmp_path), "roomlogs migrate")
        assert f"schema {pg_schema!r} is at migration 28 without 0027" in line
        await conn.execute("DELETE FROM schema_migrations WHERE version = 28")
        await conn.execute(f'REVOKE SELECT ON schema_migrations FROM "{pg_schema}_api"')
        line = refused(roomlogs("api", "serve", env=env, cwd=tmp_path), "roomlogs migrate")
        assert f"schema {pg_schema!r} is behind this code" in line
    finally:
        await conn.close()


def test_the_api_owner_commands_on_an_unmigrated_schema(
    postgres_dsn: str, pg_schema: str, tmp_path: Path
) -> None:
    env = {**API_KEYS, "ROOMLOGS_POSTGRES_DSN": postgres_dsn, "ROOMLOGS_POSTGRES_SCHEMA": pg_schema}
    for command in (["api", "trust-key"], ["api", "end-sessions"]):  # end-sessions printed a traceback
        line = refused(
            roomlogs(*command, env=env, cwd=tmp_path), "ROOMLOGS_POSTGRES_SCHEMA", "roomlogs migrate"
        )
        assert "does not exist in this database" in line


# --- ports -----------------------------------------------------------------------------------------------
@contextlib.contextmanager
def taken_port() -> Iterator[int]:
    with socket.create_server(("127.0.0.1", 0)) as server:
        yield server.getsockname()[1]


def test_the_worker_on_a_taken_metrics_port(ingest_settings: Settings, tmp_path: Path) -> None:
    with taken_port() as port:
        env = {**ingest_settings.to_env(), "ROOMLOGS_METRICS_PORT": str(port)}
        line = refused(roomlogs("worker", env=env, cwd=tmp_path), "ROOMLOGS_METRICS_PORT")
    assert f"127.0.0.1:{port}" in line


def test_the_api_on_a_taken_port(tmp_path: Path) -> None:
    with taken_port() as port:
        env = {**API_KEYS, "ROOMLOGS_API_PORT": str(port), "ROOMLOGS_API_POSTGRES_DSN": "postgresql://x@db/x"}
        refused(roomlogs("api", "serve", env=env, cwd=tmp_path), "ROOMLOGS_API_PORT")


# --- the embedded stack ---------------------------------------------------------------------------------
@pytest.mark.parametrize("command", ["up", "demo"])
def test_up_and_demo_with_a_database_that_does_not_exist(
    command: str, postgres_dsn: str, tmp_path: Path
) -> None:
    env = {"ROOMLOGS_POSTGRES_DSN": with_database(postgres_dsn, "no_such_db")}
    done = roomlogs(command, "--work-dir", str(tmp_path / "work"), env=env, cwd=tmp_path)
    refused(done, "ROOMLOGS_POSTGRES_DSN")


def test_up_with_a_default_retention_class_the_database_does_not_have(
    postgres_dsn: str, pg_schema: str, tmp_path: Path
) -> None:
    env = {
        "ROOMLOGS_POSTGRES_DSN": postgres_dsn,
        "ROOMLOGS_POSTGRES_SCHEMA": pg_schema,
        "ROOMLOGS_DEFAULT_RETENTION_CLASS": "vip",
    }
    done = roomlogs("up", "--work-dir", str(tmp_path / "work"), env=env, cwd=tmp_path)
    refused(done, "ROOMLOGS_DEFAULT_RETENTION_CLASS")


# --- settings -------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({"ROOMLOGS_METRICS_PROT": "9400"}, ("ROOMLOGS_METRICS_PROT", "did you mean ROOMLOGS_METRICS_PORT")),
        ({"ROOMLOGS_METRICS_PORT": "99999"}, ("ROOMLOGS_METRICS_PORT", "1..65535")),
        ({"ROOMLOGS_DB_RETRY_MAX_SECONDS": "-1"}, ("ROOMLOGS_DB_RETRY_MAX_SECONDS",)),
        ({"ROOMLOGS_LOG_LEVEL": "loud"}, ("ROOMLOGS_LOG_LEVEL", "debug, info")),
    ],
)
@pytest.mark.parametrize("command", [["worker"], ["migrate"], ["simulate"], ["retention"], ["api", "serve"]])
def test_a_wrong_setting_stops_every_command(
    command: list[str], env: dict[str, str], names: tuple[str, ...], tmp_path: Path
) -> None:
    refused(roomlogs(*command, env={**API_KEYS, **env}, cwd=tmp_path), *names)


def test_a_misspelt_api_setting(tmp_path: Path) -> None:
    env = {**API_KEYS, "ROOMLOGS_API_PROT": "8081"}
    refused(roomlogs("api", "serve", env=env, cwd=tmp_path), "did you mean ROOMLOGS_API_PORT")
