"""Shared fixtures: one Kafka-protocol broker and one PostgreSQL per test session.

Tests are isolated by name, not by server: each takes a unique topic (`topic_factory`), consumer group
(`group_id`) and schema (`pg_schema`), and those are removed afterwards.

By default both servers are embedded (``pipeline.stack``), started on first use and stopped at the end of
the session. Tests marked ``broker_semantics`` run twice, on the Tansu lane and on a 3-node Apache Kafka
cluster (``[tansu]`` / ``[apache]``; see broker_lanes.py). To run the same tests against a stack you already
have, set:

- ``ROOMLOGS_TEST_KAFKA_BOOTSTRAP=host:port``: a Kafka-protocol broker that allows topic creation (it
  replaces Tansu in the ``tansu`` lane; the ``apache`` lane always runs its own cluster);
- ``ROOMLOGS_TEST_POSTGRES_DSN=postgresql://...``: a database the tests may create and drop schemas in.
  Tests that kill or restart PostgreSQL are skipped then (they cannot do that to a server they do not own).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import for_code
from aiokafka.structs import ConsumerRecord
from broker_lanes import LANES, BrokerLane, SecuredCluster, start_cluster
from db_roles import login_as
from prometheus_client import CollectorRegistry

from pipeline.cli.progress import wait_caught_up
from pipeline.ingest.service import IngestService
from pipeline.metrics import IngestMetrics
from pipeline.settings import Secret, Settings
from pipeline.stack import TANSU_CLIENT_SETTINGS, EmbeddedKafka, EmbeddedPostgres
from pipeline.stack.cluster import KAFKA_VERSION, KafkaCluster
from pipeline.stack.process import free_port
from pipeline.storage import db
from pipeline.storage.migrate import migrate

KAFKA_BOOTSTRAP_ENV = "ROOMLOGS_TEST_KAFKA_BOOTSTRAP"
POSTGRES_DSN_ENV = "ROOMLOGS_TEST_POSTGRES_DSN"

TopicFactory = Callable[..., Awaitable[str]]


@dataclass(frozen=True)
class ExternalPostgres:
    """The server named by ROOMLOGS_TEST_POSTGRES_DSN: the tests use it but do not own it."""

    dsn: str

    def kill(self) -> None:
        pytest.skip(f"kills PostgreSQL: only with the embedded server, not with {POSTGRES_DSN_ENV}")

    def stop(self) -> None:
        pytest.skip(f"stops PostgreSQL: only with the embedded server, not with {POSTGRES_DSN_ENV}")

    def restart(self) -> None:
        pytest.skip(f"restarts PostgreSQL: only with the embedded server, not with {POSTGRES_DSN_ENV}")


PostgresServer = EmbeddedPostgres | ExternalPostgres


def _unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:12]}"


# --- broker lanes -----------------------------------------------------------------------------------------
def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """broker_semantics tests run on both lanes, apache_lane tests on the Apache lane only, the rest of the
    tests that need a broker on Tansu."""
    if "broker_lane" not in metafunc.fixturenames:
        return
    if metafunc.definition.get_closest_marker("apache_lane"):
        lanes: tuple[str, ...] = ("apache",)  # needs the cluster itself (faults, TLS/SASL, ACLs)
    elif metafunc.definition.get_closest_marker("broker_semantics"):
        lanes = LANES
    else:
        lanes = ("tansu",)
    params = [
        pytest.param(lane, id=lane, marks=[pytest.mark.apache_lane] if lane == "apache" else [])
        for lane in lanes
    ]
    metafunc.parametrize("broker_lane", params, indirect=True, scope="session")


@pytest.fixture(scope="session")
def broker_lane(request: pytest.FixtureRequest) -> str:
    """``tansu`` or ``apache`` (parametrized by pytest_generate_tests)."""
    lane: str = getattr(request, "param", "tansu")
    return lane


# --- servers, once per session ----------------------------------------------------------------------------
@pytest.fixture(scope="session")
def tansu_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``host:port`` of the session's Tansu broker, or of ROOMLOGS_TEST_KAFKA_BOOTSTRAP."""
    external = os.environ.get(KAFKA_BOOTSTRAP_ENV)
    if external:
        yield external
        return
    with EmbeddedKafka(tmp_path_factory.mktemp("kafka")) as kafka:
        yield kafka.bootstrap


@pytest.fixture(scope="session")
def secured_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecuredCluster]:
    """The Apache lane's 3-node cluster, with a SASL_SSL listener, SCRAM/PLAIN users and ACLs enforced.

    Skipped without Java or the broker jars (`make kafka-broker`), except under CI=true: a failure there.
    A test that stops or kills a node must restart it before it ends.
    """
    secured = start_cluster(tmp_path_factory.mktemp("apache-kafka"))
    try:
        yield secured
    finally:
        secured.cluster.stop()


@pytest.fixture(scope="session")
def apache_cluster(secured_cluster: SecuredCluster) -> KafkaCluster:
    """The Apache lane's KafkaCluster (plaintext `bootstrap`; kill9/restart/leader for fault tests)."""
    return secured_cluster.cluster


@pytest.fixture(scope="session")
def kafka_broker(broker_lane: str, request: pytest.FixtureRequest) -> BrokerLane:
    """The broker of this test's lane; the Apache cluster is started only when a test needs it."""
    if broker_lane == "apache":
        cluster: KafkaCluster = request.getfixturevalue("apache_cluster")
        return BrokerLane("apache", cluster.bootstrap, True, cluster.replication_factor, cluster)
    return BrokerLane("tansu", request.getfixturevalue("tansu_bootstrap"), False, 1)


@pytest.fixture(scope="session")
def kafka_bootstrap(kafka_broker: BrokerLane) -> str:
    """Bootstrap servers of this test's lane (``[tansu]`` unless the test is marked broker_semantics)."""
    return kafka_broker.bootstrap


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    """The session's PostgreSQL: an EmbeddedPostgres (fast=True), or ExternalPostgres from the environment.

    `kill()`, `stop()` and `restart()` work on the embedded server and skip the test on an external one.
    A test that kills or stops the server must start it again (`restart()`) before it ends.
    """
    external = os.environ.get(POSTGRES_DSN_ENV)
    if external:
        yield ExternalPostgres(external)
        return
    with EmbeddedPostgres(tmp_path_factory.mktemp("postgres"), fast=True) as server:
        yield server


@pytest.fixture(scope="session")
def postgres_dsn(postgres_server: PostgresServer) -> str:
    """DSN of the session's PostgreSQL (a superuser on the embedded server)."""
    return postgres_server.dsn


# --- per-test names, removed afterwards -------------------------------------------------------------------
@pytest.fixture
async def topic_factory(kafka_broker: BrokerLane) -> AsyncIterator[TopicFactory]:
    """``await topic_factory(partitions=1, prefix="t-")`` creates a uniquely named topic and returns its name.

    Replicated as the lane allows (3 on the Apache lane); ``config={"max.message.bytes": "..."}`` sets topic
    configs. The topics are deleted after the test.
    """
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_broker.bootstrap, client_id="roomlogs-tests")
    await admin.start()
    created: list[str] = []

    async def create(partitions: int = 1, *, prefix: str = "t-", config: dict[str, str] | None = None) -> str:
        name = _unique(prefix)
        topic = NewTopic(
            name,
            num_partitions=partitions,
            replication_factor=kafka_broker.replication_factor,
            topic_configs=config or {},
        )
        response = await admin.create_topics([topic])
        for topic, code, *message in response.topic_errors:
            if code:
                raise for_code(code)(f"could not create topic {topic}: {message}")
        created.append(name)
        return name

    try:
        yield create
    finally:
        try:
            if created:
                await admin.delete_topics(created)
        finally:
            await admin.close()


@pytest.fixture
def group_id() -> str:
    """A consumer group name no other test uses."""
    return _unique("g-")


@pytest.fixture
async def pg_schema(postgres_server: PostgresServer) -> AsyncIterator[str]:
    """A schema name no other test uses (``t_<hex>``; not created here); dropped CASCADE after the test."""
    name = _unique("t_")
    assert re.fullmatch(r"t_[0-9a-f]{12}", name)
    yield name
    if isinstance(postgres_server, EmbeddedPostgres) and not postgres_server.running:
        postgres_server.start()  # a fault test left it down: bring it back for the tests after it
    connection = await asyncpg.connect(postgres_server.dsn, timeout=30)
    try:
        await connection.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
        for role in (f"{name}_api", f"{name}_worker"):  # made by the migrations, cluster-wide
            if await connection.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", role):
                await connection.execute(f'DROP OWNED BY "{role}"')
                await connection.execute(f'DROP ROLE "{role}"')
    finally:
        await connection.close()


@pytest.fixture
async def ingest_settings(
    kafka_broker: BrokerLane, postgres_dsn: str, pg_schema: str, topic_factory: TopicFactory, group_id: str
) -> Settings:
    """Settings for one test's pipeline: its own topics, consumer group and a migrated schema."""
    topic = await topic_factory(partitions=3, prefix="ev-")
    dead_letters = await topic_factory(partitions=1, prefix="dlq-")
    deletions = await topic_factory(partitions=1, prefix="del-", config={"retention.ms": "-1"})
    alerts = await topic_factory(partitions=1, prefix="alerts-")
    settings = Settings(
        kafka_bootstrap=kafka_broker.bootstrap,
        kafka_idempotent_producer=kafka_broker.idempotent_producer,
        kafka_replication_factor=kafka_broker.replication_factor,
        events_topic=topic,
        events_topic_partitions=3,
        dead_letter_topic=dead_letters,
        deletions_topic=deletions,
        alerts_topic=alerts,
        consumer_group=group_id,
        postgres_dsn=Secret(postgres_dsn),
        postgres_schema=pg_schema,
        batch_max_wait_seconds=0.05,
        db_retry_initial_seconds=0.1,
        db_retry_max_seconds=1.0,
        # a worker process started from these settings must not need the default port (9308), which a
        # `roomlogs up` on the same machine holds
        metrics_port=free_port(),
    )
    if kafka_broker.name == "tansu":
        settings = settings.replace(**TANSU_CLIENT_SETTINGS)
    conn = await db.connect(postgres_dsn, pg_schema)
    try:
        await migrate(conn, pg_schema)
    finally:
        await conn.close()
    return settings


@pytest.fixture
async def worker_settings(ingest_settings: Settings) -> Settings:
    """`ingest_settings` connecting as the worker's own role (`<schema>_worker`, migration 0008), as
    `roomlogs worker` does in production, instead of the superuser that migrated the schema."""
    dsn = await login_as(ingest_settings.postgres_dsn.get(), f"{ingest_settings.postgres_schema}_worker")
    return ingest_settings.replace(postgres_dsn=Secret(dsn))


@dataclass
class RunningIngest:
    service: IngestService
    pool: asyncpg.Pool
    metrics: IngestMetrics
    settings: Settings

    async def caught_up(self, within_seconds: float) -> bool:
        """Every record in the topic is durably written, and the worker has counted it."""
        if not await wait_caught_up(self.settings, within_seconds, progress=False):
            return False
        deadline = asyncio.get_running_loop().time() + within_seconds
        while self.service.write_in_flight:
            if asyncio.get_running_loop().time() > deadline:
                return False
            await asyncio.sleep(0.01)
        return True


IngestFactory = Callable[..., contextlib.AbstractAsyncContextManager[RunningIngest]]


@pytest.fixture
def ingest_worker() -> IngestFactory:
    """`async with ingest_worker(settings) as w:` runs the real ingest loop in this process until exit."""

    @contextlib.asynccontextmanager
    async def run(settings: Settings, **kwargs: Any) -> AsyncIterator[RunningIngest]:
        pool = await db.create_pool(settings.postgres_dsn.get(), settings.postgres_schema, 4)
        metrics = IngestMetrics(CollectorRegistry())
        service = IngestService(settings, pool, metrics, **kwargs)
        await service.start()
        task = asyncio.create_task(service.run())
        try:
            yield RunningIngest(service, pool, metrics, settings)
        finally:
            await service.stop()
            await task
            await service.close()
            await pool.close()

    return run


#: Figures tests measure on the way (recovery times, fault tables), printed at the end of the run.
_FIGURES: list[str] = []


@pytest.fixture
def figures() -> Callable[[str], None]:
    """`figures(text)`: show a measured figure in the run's terminal summary (speed targets are read, not
    asserted: see README, Testing)."""
    return _FIGURES.append


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _FIGURES:
        terminalreporter.section("figures measured by the tests")
        for text in _FIGURES:
            terminalreporter.write_line(text.strip("\n"))


def pytest_report_header(config: pytest.Config) -> list[str]:
    kafka = os.environ.get(KAFKA_BOOTSTRAP_ENV) or "embedded Tansu"
    postgres = "external (" + POSTGRES_DSN_ENV + ")" if os.environ.get(POSTGRES_DSN_ENV) else "embedded 18"
    return [
        f"roomlogs stack: kafka={kafka}, postgres={postgres}",
        f"broker lanes: tansu ({kafka}); apache (3-node Apache Kafka {KAFKA_VERSION} KRaft cluster)",
    ]


# --- reading a topic back ---------------------------------------------------------------------------------
Consume = Callable[..., Awaitable[list[ConsumerRecord]]]


@pytest.fixture
def consume(kafka_bootstrap: str) -> Consume:
    """``await consume(topic, expected, timeout_seconds=30.0)``: every record of `topic`, from the beginning.

    Reads until `expected` records arrived (or the time ran out), then a moment longer, so that anything
    beyond `expected` (a duplicate, a stray event) shows up too. Each call has its own consumer, no group,
    and stops it before returning.
    """

    async def read(topic: str, expected: int, *, timeout_seconds: float = 30.0) -> list[ConsumerRecord]:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=kafka_bootstrap, enable_auto_commit=False, group_id=None
        )
        await consumer.start()
        try:
            deadline = time.monotonic() + timeout_seconds
            numbers: list[int] = []
            consumer._client.add_topic(topic)
            while not numbers and time.monotonic() < deadline:
                # fetches the metadata partitions_for_topic() reads; a topic just created may take a
                # moment to reach every broker of a cluster
                await consumer._client.force_metadata_update()
                numbers = sorted(consumer.partitions_for_topic(topic) or ())
                if not numbers:
                    await asyncio.sleep(0.1)
            partitions = [TopicPartition(topic, p) for p in numbers]
            consumer.assign(partitions)
            await consumer.seek_to_beginning(*partitions)
            records: list[ConsumerRecord] = []
            while len(records) < expected and time.monotonic() < deadline:
                for part in (await consumer.getmany(timeout_ms=200)).values():
                    records.extend(part)
            for part in (await consumer.getmany(timeout_ms=300)).values():
                records.extend(part)
            return records
        finally:
            await consumer.stop()

    return read
