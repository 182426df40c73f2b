"""The one settings object.

`Settings.from_env()` is called once, at start-up, by the CLI; everything below receives the frozen object
(or the part of it it needs). Nothing else in the package reads the environment.

Every variable has the prefix ``ROOMLOGS_``; the README lists them all (a test checks that it does).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pipeline.errors import ConfigurationError

ENV_PREFIX = "ROOMLOGS_"
_OTHER_PREFIXES = (ENV_PREFIX + "TEST_", ENV_PREFIX + "API_")
_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,40}$")
KAFKA_SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
#: OAUTHBEARER is left out: aiokafka needs a token-provider object for it, which no setting can carry.
KAFKA_SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


class Secret:
    """A string that does not print itself (DSNs carry passwords)."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def get(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')" if self._value else "Secret('')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __bool__(self) -> bool:
        return bool(self._value)


@dataclass(frozen=True, slots=True)
class Settings:
    # --- Kafka -----------------------------------------------------------------------------------------
    kafka_bootstrap: str = "127.0.0.1:9092"
    events_topic: str = "roomlogs.events"
    dead_letter_topic: str = "roomlogs.dead-letters"
    events_topic_partitions: int = 6
    #: Consumer group of the ingest workers (offsets of record live in PostgreSQL, see storage/offsets).
    consumer_group: str = "roomlogs-ingest"
    #: Idempotent producer (InitProducerId). Apache Kafka supports it; the embedded Tansu broker does not.
    #: Never guessed: set it to match the broker.
    kafka_idempotent_producer: bool = False
    kafka_compression: str = "gzip"
    #: Replication of the topics roomlogs creates (events, dead letters, the worker app's own).
    #: 3 in production.
    kafka_replication_factor: int = 1
    #: Consumer-group session timeout of the ingest workers: how long a dead worker's partitions wait
    #: before they move (Apache Kafka's default minimum is 6 s).
    kafka_session_timeout_seconds: float = 6.0
    #: Static group membership (KIP-345): a restarted worker takes its partitions back at once instead of
    #: the group waiting for its old self to time out. Needs a stable, unique id per worker.
    kafka_static_membership: bool = True
    #: This worker's static member id; empty: `roomlogs worker` uses "<host name>-<metrics port>".
    kafka_group_instance_id: str = ""
    # --- Kafka security: pipeline/kafka_client.py turns these into the arguments of every Kafka client ---
    #: PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL.
    kafka_security_protocol: str = "PLAINTEXT"
    #: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (with SASL_PLAINTEXT / SASL_SSL).
    kafka_sasl_mechanism: str = "SCRAM-SHA-512"
    kafka_sasl_username: str = ""
    kafka_sasl_password: Secret = field(default_factory=lambda: Secret(""))
    #: PEM file of the CA(s) that signed the brokers' certificates; empty: the system's trust store.
    kafka_ssl_ca_file: str = ""
    #: Client certificate chain and key (PEM), for brokers that authenticate clients by TLS certificate.
    kafka_ssl_cert_file: str = ""
    kafka_ssl_key_file: str = ""
    kafka_ssl_key_password: Secret = field(default_factory=lambda: Secret(""))
    # --- PostgreSQL ------------------------------------------------------------------------------------
    #: Empty means "start an embedded server" (only `roomlogs up` / `demo` do that; `worker` requires a DSN).
    postgres_dsn: Secret = field(default_factory=lambda: Secret(""))
    #: Schema holding every roomlogs table; tests run each in a schema of its own.
    postgres_schema: str = "roomlogs"
    postgres_pool_size: int = 4
    # --- Ingest ----------------------------------------------------------------------------------------
    batch_max_events: int = 20_000
    batch_max_wait_seconds: float = 0.25
    max_event_bytes: int = 64 * 1024
    chat_text_max_chars: int = 2_000
    reason_max_chars: int = 500
    #: An event stamped further than this in the future is dead-lettered (clock skew allowance).
    max_future_skew_seconds: float = 300.0
    #: Back-off bounds while PostgreSQL is unreachable (the worker pauses, it never dead-letters).
    db_retry_initial_seconds: float = 0.2
    db_retry_max_seconds: float = 5.0
    #: How long a stopping worker may take to finish the batch in hand.
    shutdown_drain_seconds: float = 30.0
    # --- Partitions and retention -----------------------------------------------------------------------
    partitions_ahead_days: int = 3
    #: Retention class of a room the pipeline has no settings for yet.
    default_retention_class: str = "public"
    #: A public room whose `max_occupancy` reaches this is a busy room (shorter retention).
    busy_room_min_occupancy: int = 50
    dead_letter_retention_days: int = 7
    # --- Serving ---------------------------------------------------------------------------------------
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 9308
    # --- Worker app (faust) ----------------------------------------------------------------------------
    worker_data_dir: str = ".roomlogs/worker"
    #: Partition upkeep (premake) and room-class refresh interval.
    maintenance_interval_seconds: float = 60.0
    log_level: str = "info"
    #: "json" (one object per line, one shape for every process) or "text" for a terminal.
    log_format: str = "text"

    def __post_init__(self) -> None:
        if not _SCHEMA_NAME.match(self.postgres_schema):
            raise ConfigurationError(
                f"ROOMLOGS_POSTGRES_SCHEMA={self.postgres_schema!r} is not a plain lower-case identifier"
            )
        for name in ("batch_max_events", "max_event_bytes", "events_topic_partitions", "postgres_pool_size"):
            if getattr(self, name) <= 0:
                raise ConfigurationError(f"ROOMLOGS_{name.upper()} must be positive")
        if self.log_format not in ("json", "text"):
            raise ConfigurationError(f"ROOMLOGS_LOG_FORMAT={self.log_format!r}: use json or text")
        self._check_kafka_security()
        if self.kafka_compression not in ("none", "gzip", "snappy", "lz4", "zstd"):
            raise ConfigurationError(
                f"ROOMLOGS_KAFKA_COMPRESSION={self.kafka_compression!r}: use none, gzip, snappy, lz4 or zstd"
            )

    def _check_kafka_security(self) -> None:
        protocol, mechanism = self.kafka_security_protocol, self.kafka_sasl_mechanism
        if protocol not in KAFKA_SECURITY_PROTOCOLS:
            raise ConfigurationError(
                f"ROOMLOGS_KAFKA_SECURITY_PROTOCOL={protocol!r}: use {', '.join(KAFKA_SECURITY_PROTOCOLS)}"
            )
        if mechanism not in KAFKA_SASL_MECHANISMS:
            raise ConfigurationError(
                f"ROOMLOGS_KAFKA_SASL_MECHANISM={mechanism!r}: use {', '.join(KAFKA_SASL_MECHANISMS)}"
            )
        if protocol.startswith("SASL_") and not (self.kafka_sasl_username and self.kafka_sasl_password):
            raise ConfigurationError(
                f"ROOMLOGS_KAFKA_SECURITY_PROTOCOL={protocol} needs ROOMLOGS_KAFKA_SASL_USERNAME and "
                "ROOMLOGS_KAFKA_SASL_PASSWORD"
            )
        if bool(self.kafka_ssl_cert_file) != bool(self.kafka_ssl_key_file):
            raise ConfigurationError(
                "set both ROOMLOGS_KAFKA_SSL_CERT_FILE and ROOMLOGS_KAFKA_SSL_KEY_FILE, or neither"
            )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Read every ``ROOMLOGS_*`` variable; unknown ones are an error (a typo must not pass silently)."""
        env = os.environ if environ is None else environ
        known = {f.name: f for f in dataclasses.fields(cls)}
        values: dict[str, Any] = {}
        for key, raw in env.items():
            if not key.startswith(ENV_PREFIX) or key.startswith(_OTHER_PREFIXES):
                continue  # the tests' and the API's own settings are read by their own objects
            name = key[len(ENV_PREFIX) :].lower()
            if name not in known:
                raise ConfigurationError(f"unknown setting {key}; see the Configuration section of README.md")
            values[name] = _parse(key, raw, known[name])
        values.update(overrides)
        return cls(**values)

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)

    def to_env(self) -> dict[str, str]:
        """The environment that reproduces these settings in a child process (e.g. the worker)."""
        env = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Secret):
                value = value.get()
            elif isinstance(value, bool):
                value = "true" if value else "false"
            env[ENV_PREFIX + f.name.upper()] = str(value)
        return env

    @staticmethod
    def env_names() -> list[str]:
        return [ENV_PREFIX + f.name.upper() for f in dataclasses.fields(Settings)]


def _parse(key: str, raw: str, f: dataclasses.Field[Any]) -> Any:
    kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
    if kind == "bool":
        lowered = raw.strip().lower()
        if lowered in ("1", "true", "yes", "on", "0", "false", "no", "off"):
            return lowered in ("1", "true", "yes", "on")
    elif kind in ("int", "float"):
        with contextlib.suppress(ValueError):
            return int(raw) if kind == "int" else float(raw)
    elif kind == "Secret":
        return Secret(raw)
    else:
        return raw
    raise ConfigurationError(f"{key}={raw!r} is not a valid {kind}")
