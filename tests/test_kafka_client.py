"""Kafka security settings: what every client is given, and what a refusing broker makes roomlogs say.

The connection tests run on the Apache lane's SASL_SSL listener (SCRAM and PLAIN users, certificates made
by the session, StandardAuthorizer with ACLs per test): the publisher and `simulate`, the worker process
(its consumer, producer, admin client and faust's own client), and the commands' one-line refusals.
"""

from __future__ import annotations

import asyncio
import ssl
import subprocess
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka.structs import ConsumerRecord
from broker_lanes import (
    APP_USER,
    APP_USER_256,
    NOBODY,
    PLAIN_USER,
    SecuredCluster,
    grant,
    secure_settings,
)
from faust.auth import SASLCredentials

from pipeline.cli.devstack import WORKER_COMMAND, spawn_worker, worker_env
from pipeline.cli.progress import wait_caught_up
from pipeline.errors import ConfigurationError
from pipeline.kafka_client import KafkaConnection
from pipeline.publisher import RoomEventPublisher
from pipeline.publisher import events as ev
from pipeline.settings import Secret, Settings
from pipeline.stack import free_port
from pipeline.storage import db

Consume = Callable[..., Awaitable[list[ConsumerRecord]]]
TopicFactory = Callable[..., Awaitable[str]]


# --- the arguments every client gets ---------------------------------------------------------------------
def test_plaintext_clients_get_only_the_bootstrap_and_the_protocol() -> None:
    assert KafkaConnection.of(Settings(kafka_bootstrap="k1:9092,k2:9092")).kwargs() == {
        "bootstrap_servers": "k1:9092,k2:9092",
        "security_protocol": "PLAINTEXT",
    }
    assert KafkaConnection.of(Settings()).faust_credentials() is None


def test_sasl_ssl_clients_verify_the_broker_against_the_ca_file(tmp_path: Path) -> None:
    from tls_support import make_certificates

    certs = make_certificates(tmp_path)
    settings = Settings(
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="SCRAM-SHA-256",
        kafka_sasl_username="app",
        kafka_sasl_password=Secret("pw"),
        kafka_ssl_ca_file=str(certs.ca_file),
    )
    connection = KafkaConnection.of(settings)
    kwargs = connection.kwargs()
    context = kwargs.pop("ssl_context")
    assert kwargs == {
        "bootstrap_servers": "127.0.0.1:9092",
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-256",
        "sasl_plain_username": "app",
        "sasl_plain_password": "pw",
    }
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert [c["subject"] for c in context.get_ca_certs()] == [((("commonName", "roomlogs test CA"),),)]
    credentials = connection.faust_credentials()
    assert isinstance(credentials, SASLCredentials)
    assert (credentials.protocol.value, credentials.mechanism.value, credentials.username) == (
        "SASL_SSL",
        "SCRAM-SHA-256",
        "app",
    )
    assert "pw" not in repr(settings)  # the password is a Secret
    # the publisher SDK takes the same connection
    sdk = RoomEventPublisher.from_settings(settings).connection.kwargs()
    assert sdk.pop("ssl_context").get_ca_certs() == context.get_ca_certs() and sdk == kwargs


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({"ROOMLOGS_KAFKA_SECURITY_PROTOCOL": "SASL_SSL"}, "ROOMLOGS_KAFKA_SASL_USERNAME"),
        ({"ROOMLOGS_KAFKA_SECURITY_PROTOCOL": "TLS"}, "ROOMLOGS_KAFKA_SECURITY_PROTOCOL"),
        ({"ROOMLOGS_KAFKA_SASL_MECHANISM": "OAUTHBEARER"}, "ROOMLOGS_KAFKA_SASL_MECHANISM"),
        ({"ROOMLOGS_KAFKA_SSL_CERT_FILE": "/c.pem"}, "ROOMLOGS_KAFKA_SSL_KEY_FILE"),
    ],
)
def test_settings_that_cannot_work_are_refused_at_start_up(env: dict[str, str], names: str) -> None:
    with pytest.raises(ConfigurationError, match=names):
        Settings.from_env(env)


def test_a_missing_ca_file_names_the_setting(tmp_path: Path) -> None:
    settings = Settings(kafka_security_protocol="SSL", kafka_ssl_ca_file=str(tmp_path / "nope.pem"))
    with pytest.raises(ConfigurationError, match="ROOMLOGS_KAFKA_SSL_CA_FILE"):
        KafkaConnection.of(settings)


# --- against the secured listener --------------------------------------------------------------------------
def _chat(room: str, n: int) -> dict[str, Any]:
    return ev.chat_message(room, ev.user("u-1", "Ann"), f"message {n}", event_id=str(uuid.uuid4()))


def _cli(
    command: str, settings: Settings, *args: str, timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    argv = [*WORKER_COMMAND[:-1], command, *args]
    return subprocess.run(
        argv, env=worker_env(settings), capture_output=True, text=True, timeout=timeout, check=False
    )


def _one_line(done: subprocess.CompletedProcess[str]) -> str:
    """The command failed with exactly one line on stderr (no traceback, no library noise): that line."""
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2, done.stderr[-3000:]
    assert len(lines) == 1, done.stderr[-3000:]
    return lines[0]


async def _stored_ids(settings: Settings) -> set[str]:
    conn = await db.connect(settings.postgres_dsn.get(), settings.postgres_schema)
    try:
        return {str(r[0]) for r in await conn.fetch("SELECT event_id FROM events")}
    finally:
        await conn.close()


@pytest.mark.apache_lane
@pytest.mark.parametrize("user", [APP_USER, APP_USER_256, PLAIN_USER], ids=lambda u: u.mechanism)
async def test_the_publisher_sends_over_sasl_ssl_with_each_mechanism(
    secured_cluster: SecuredCluster, topic_factory: TopicFactory, consume: Consume, user: Any
) -> None:
    topic = await topic_factory(partitions=2, prefix="sec-")
    grant(secured_cluster.cluster, user, topics=[topic], groups=[])
    settings = Settings(
        **secure_settings(secured_cluster, user),  # type: ignore[arg-type]
        events_topic=topic,
        kafka_idempotent_producer=True,
    )
    sent = [_chat("room-s", n) for n in range(20)]
    async with RoomEventPublisher.from_settings(settings) as publisher:
        for event in sent:
            await publisher.send(event)
    records = await consume(topic, len(sent))
    assert sorted(orjson.loads(r.value)["event_id"] for r in records) == sorted(e["event_id"] for e in sent)


@pytest.mark.apache_lane
@pytest.mark.slow
async def test_the_worker_ingests_over_sasl_ssl_with_nothing_but_its_acls(
    secured_cluster: SecuredCluster, ingest_settings: Settings, tmp_path: Path, consume: Consume
) -> None:
    plain = ingest_settings
    grant(
        secured_cluster.cluster,
        APP_USER,
        topics=[
            plain.events_topic,
            plain.dead_letter_topic,
            plain.deletions_topic,
            plain.alerts_topic,
            f"{plain.consumer_group}-app",
        ],
        groups=[plain.consumer_group],  # its own group and faust's (<group>-app) share the prefix
    )
    secure = plain.replace(
        **secure_settings(secured_cluster, APP_USER),
        metrics_port=free_port(),
        worker_data_dir=str(tmp_path / "worker"),
    )
    # `roomlogs simulate` over SASL_SSL: 2% bad events, so the dead-letter producer is exercised too
    done = _cli("simulate", secure, "--events", "600", "--rooms", "20", "--no-progress")
    assert done.returncode == 0, done.stderr[-3000:]
    worker = spawn_worker(secure, tmp_path / "worker.log")
    try:
        assert await wait_caught_up(plain, 180, progress=False), (tmp_path / "worker.log").read_text()[-3000:]
        assert worker.poll() is None
    finally:
        worker.terminate()
        worker.wait(60)
    assert worker.returncode == 0, (tmp_path / "worker.log").read_text()[-3000:]
    conn = await db.connect(plain.postgres_dsn.get(), plain.postgres_schema)
    try:
        stored = await conn.fetchval("SELECT count(*) FROM events")
        dead = await conn.fetchval("SELECT count(*) FROM dead_letters")
    finally:
        await conn.close()
    assert stored + dead == 600 and dead > 0
    mirrored = await consume(plain.dead_letter_topic, dead)
    assert len(mirrored) == dead


@pytest.mark.apache_lane
async def test_a_wrong_password_stops_the_worker_with_one_line_and_loses_nothing(
    secured_cluster: SecuredCluster, ingest_settings: Settings, ingest_worker: Any
) -> None:
    plain = ingest_settings
    sent = [_chat("room-p", n) for n in range(50)]
    async with RoomEventPublisher.from_settings(plain) as publisher:
        for event in sent:
            await publisher.send(event)
    wrong = plain.replace(**secure_settings(secured_cluster, APP_USER, kafka_sasl_password=Secret("wrong")))
    line = _one_line(await asyncio.to_thread(_cli, "worker", wrong))
    assert "ROOMLOGS_KAFKA_SASL_PASSWORD" in line and "roomlogsapp" in line
    assert "wrong" not in line  # the password itself is never printed

    async with ingest_worker(plain) as w:  # the operator fixes the password: everything is still there
        assert await w.caught_up(60)
    assert await _stored_ids(plain) == {e["event_id"] for e in sent}


@pytest.mark.apache_lane
async def test_an_untrusted_broker_certificate_gives_one_line_naming_the_ca_setting(
    secured_cluster: SecuredCluster, ingest_settings: Settings
) -> None:
    untrusted = ingest_settings.replace(
        **secure_settings(
            secured_cluster, APP_USER, kafka_ssl_ca_file=str(secured_cluster.certificates.stranger_ca_file)
        )
    )
    for command, args in (("simulate", ["--events", "10"]), ("worker", [])):
        line = _one_line(await asyncio.to_thread(_cli, command, untrusted, *args))
        assert "ROOMLOGS_KAFKA_SSL_CA_FILE" in line and "certificate" in line, command


@pytest.mark.apache_lane
async def test_a_user_without_acls_is_told_which_topic_and_exits(
    secured_cluster: SecuredCluster, ingest_settings: Settings
) -> None:
    nobody = ingest_settings.replace(**secure_settings(secured_cluster, NOBODY))
    line = _one_line(await asyncio.to_thread(_cli, "worker", nobody))
    s = ingest_settings
    ours = (s.events_topic, s.dead_letter_topic, s.deletions_topic, s.alerts_topic, s.seal_heads_topic)
    assert any(topic in line for topic in ours) and "ACL" in line and "'nobody'" in line, line


@pytest.mark.apache_lane
async def test_a_missing_topic_the_worker_may_not_create_is_named(
    secured_cluster: SecuredCluster, ingest_settings: Settings
) -> None:
    """Auto-creation is off; the worker creates its topics when allowed, and says which when not."""
    missing = f"missing-{uuid.uuid4().hex[:8]}"
    secured_cluster.cluster.acl_command(
        "--add", "--allow-principal", f"User:{APP_USER_256.name}",
        "--operation", "Read", "--operation", "Describe",
        "--topic", missing, "--topic", ingest_settings.dead_letter_topic,
        "--topic", ingest_settings.deletions_topic, "--topic", ingest_settings.alerts_topic,
        "--group", ingest_settings.consumer_group,
    )  # fmt: skip
    settings = ingest_settings.replace(**secure_settings(secured_cluster, APP_USER_256), events_topic=missing)
    line = _one_line(await asyncio.to_thread(_cli, "worker", settings))
    assert missing in line and "ACL" in line
