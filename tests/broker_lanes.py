"""The two broker lanes of the test suite.

- ``tansu``: the embedded Tansu broker (or ROOMLOGS_TEST_KAFKA_BOOTSTRAP): fast, memory-only, no idempotent
  producer. Every test that needs a broker runs here.
- ``apache``: a 3-node Apache Kafka KRaft cluster (pipeline/stack/cluster.py), replication 3,
  min.insync.replicas=2, idempotent producer on, auto-creation off. Tests marked
  ``@pytest.mark.broker_semantics`` run on both lanes (ids ``[tansu]`` and ``[apache]``); tests that need
  the cluster itself (faults, TLS and SASL, ACLs) take the ``apache_cluster`` fixture.

The cluster starts once per session, on first use. It has a second, SASL_SSL listener with SCRAM and
PLAIN users (certificates made by the session) and KRaft's StandardAuthorizer: the plaintext listener's
ANONYMOUS principal may do anything (so the plaintext tests are unaffected), SASL users only what ACLs grant.

Select lanes with markers: ``-m "not apache_lane"`` is the fast lane alone, ``-m apache_lane`` the Apache
lane alone. Without Java or the broker jars the Apache lane is skipped with the fix, except under CI=true,
where it fails: CI must prove both lanes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest
from tls_support import Certificates, make_certificates

from pipeline.errors import MissingDependencyError
from pipeline.settings import Secret
from pipeline.stack.cluster import KafkaCluster, SaslUser, SecureListener, broker_classpath, kafka_home

LANES = ("tansu", "apache")
#: SASL users of the secured listener. `APP_USER` gets ACLs from the tests that need them; `NOBODY` never.
APP_USER = SaslUser("roomlogsapp", "apppassword1", "SCRAM-SHA-512")
APP_USER_256 = SaslUser("roomlogs256", "apppassword2", "SCRAM-SHA-256")
PLAIN_USER = SaslUser("plainuser", "plainpassword", "PLAIN")
NOBODY = SaslUser("nobody", "nobodypassword", "SCRAM-SHA-512")
USERS = (APP_USER, APP_USER_256, PLAIN_USER, NOBODY)


@dataclass(frozen=True)
class BrokerLane:
    """What a test needs to know about the broker it runs against."""

    name: str
    bootstrap: str
    #: Whether producers may (and should) enable idempotence: Apache Kafka yes, Tansu no.
    idempotent_producer: bool
    #: Replication of the topics the tests create.
    replication_factor: int
    cluster: KafkaCluster | None = None


@dataclass(frozen=True)
class SecuredCluster:
    """The Apache lane's cluster with what a client needs for its SASL_SSL listener."""

    cluster: KafkaCluster
    certificates: Certificates

    @property
    def secure_bootstrap(self) -> str:
        return self.cluster.secure_bootstrap


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require_broker() -> None:
    """Skip (locally) or fail (CI=true) when the Apache Kafka broker cannot run here."""
    try:
        broker_classpath(kafka_home())
    except MissingDependencyError as exc:
        if in_ci():
            pytest.fail(f"the Apache Kafka lane cannot start under CI: {exc}", pytrace=False)
        pytest.skip(f"Apache Kafka lane: {exc}")


def start_cluster(work_dir: Path) -> SecuredCluster:
    """The session's 3-node cluster with its secured listener and authorizer (started here)."""
    require_broker()
    certificates = make_certificates(work_dir / "certs")
    cluster = KafkaCluster(
        work_dir / "cluster",
        nodes=3,
        heap="512m",
        secure=SecureListener(
            keystore=certificates.server_keystore,
            keystore_password=certificates.keystore_password,
            protocol="SASL_SSL",
            users=USERS,
        ),
        authorizer=True,
        # retention runs every second (Kafka's default is 5 minutes): tests/ingest/test_log_changes.py lets
        # it delete records no worker read
        broker_properties={"log.retention.check.interval.ms": "1000"},
    )
    cluster.start()
    return SecuredCluster(cluster, certificates)


def grant(cluster: KafkaCluster, user: SaslUser, *, topics: list[str], groups: list[str]) -> None:
    """Allow `user` everything on topics and groups whose names start with the given prefixes (one JVM)."""
    args = ["--add", "--allow-principal", f"User:{user.name}", "--operation", "All"]
    for topic in topics:
        args += ["--topic", topic]
    for group in groups:
        args += ["--group", group]
    cluster.acl_command(*args, "--resource-pattern-type", "prefixed", "--force")


def secure_settings(secured: SecuredCluster, user: SaslUser, **changes: object) -> dict[str, object]:
    """Settings fields for a client of the SASL_SSL listener as `user` (trusting the session's CA)."""
    fields: dict[str, object] = {
        "kafka_bootstrap": secured.secure_bootstrap,
        "kafka_security_protocol": "SASL_SSL",
        "kafka_sasl_mechanism": user.mechanism,
        "kafka_sasl_username": user.name,
        "kafka_sasl_password": Secret(user.password),
        "kafka_ssl_ca_file": str(secured.certificates.ca_file),
    }
    fields.update(changes)
    return fields
