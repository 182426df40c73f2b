"""The one settings object.

`Settings.from_env()` is called once, at start-up, by the CLI; everything below receives the frozen object
(or the part of it it needs). Nothing else in the package reads the environment.

Every variable has the prefix ``ROOMLOGS_``; the README lists them all (a test checks that it does). Each
field states its allowed values (`setting(default, ge=..., choices=...)`); a value outside them, a value
that does not parse, and an unknown ``ROOMLOGS_*`` variable (with a "did you mean" for a near miss) are a
`ConfigurationError` naming the variable, raised before anything starts. The query API's settings
(`pipeline.api.settings.ApiSettings`) are read by the same machinery (`read_env`).

Why not pydantic-settings: this module is part of the publisher SDK's base install (room servers embed it
through `RoomEventPublisher.from_settings`), which stays free of the worker's and the API's dependencies;
the rules below are the few pydantic would give us (ranges, choices, patterns), and the frozen dataclass
already gives `replace`, `Secret` typing and the unknown-variable check.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from pipeline.errors import ConfigurationError

ENV_PREFIX = "ROOMLOGS_"
_OTHER_PREFIXES = (ENV_PREFIX + "TEST_", ENV_PREFIX + "API_")
KAFKA_SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
#: OAUTHBEARER is left out: aiokafka needs a token-provider object for it, which no setting can carry.
KAFKA_SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
KAFKA_COMPRESSIONS = ("none", "gzip", "snappy", "lz4", "zstd")
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
LOG_FORMATS = ("json", "text")
#: A retention class's name (the CHECK of retention_classes.name in migration 0001).
RETENTION_CLASS_NAME = r"[a-z][a-z0-9_]{0,30}"
_BOOLS = {
    "1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False, "off": False,
}  # fmt: skip
_PORT = {"ge": 1, "le": 65_535}
#: A Kafka topic name (the broker's own rule).
TOPIC_NAME = r"[A-Za-z0-9._-]{1,249}"


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


# --- declaring and checking fields ----------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Rule:
    """What a setting's value may be; checked by `check_rules` whenever a settings object is built."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    #: allowed values (compared case-insensitively when `fold_case`)
    choices: tuple[str, ...] = ()
    fold_case: bool = False
    #: a full-match regular expression, and what it means in words
    pattern: str | None = None
    shape: str = ""

    def problem(self, value: Any) -> str | None:
        """Why `value` is not allowed, in words; None when it is."""
        if isinstance(value, bool):
            return None
        if isinstance(value, int | float):
            return self._number_problem(value)
        if isinstance(value, str):
            if self.choices:
                wanted = value.strip().lower() if self.fold_case else value
                if wanted not in self.choices:
                    return f"must be one of {', '.join(self.choices)}"
            if self.pattern is not None and not re.fullmatch(self.pattern, value):
                return f"must be {self.shape or 'a value matching ' + self.pattern}"
        return None

    def _number_problem(self, value: float) -> str | None:
        if isinstance(value, float) and not math.isfinite(value):
            return "must be a finite number"
        low_ok = (self.ge is None or value >= self.ge) and (self.gt is None or value > self.gt)
        if low_ok and (self.le is None or value <= self.le):
            return None
        if self.ge is not None and self.le is not None:
            return f"must be {_num(self.ge)}..{_num(self.le)}"
        if self.ge is not None:
            return f"must be {_num(self.ge)} or more"
        upper = f" and at most {_num(self.le)}" if self.le is not None else ""
        if self.gt is not None:
            return f"must be above {_num(self.gt)}{upper}"
        return f"must be at most {_num(self.le)}"


def _num(value: float | None) -> str:
    return str(int(value)) if value is not None and float(value).is_integer() else str(value)


def setting(default: Any, **rule: Any) -> Any:
    """A settings field with its allowed values: ``port: int = setting(8080, ge=1, le=65535)``."""
    return field(default=default, metadata={"rule": Rule(**rule)})


def check_rules(obj: Any, prefix: str) -> None:
    """ConfigurationError naming the variable of the first field of `obj` whose value breaks its rule."""
    for f in dataclasses.fields(obj):
        rule: Rule = f.metadata.get("rule") or Rule()
        value = getattr(obj, f.name)
        problem = rule.problem(value)
        if problem is not None:
            raise ConfigurationError(f"{prefix}{f.name.upper()}={value!r}: {problem}")


def read_env(
    cls: type[Any],
    prefix: str,
    environ: Mapping[str, str],
    *,
    skip: tuple[str, ...] = (),
    see: str = "the Configuration section of README.md",
) -> dict[str, Any]:
    """The values of the ``prefix*`` variables for the fields of dataclass `cls`, parsed to the fields' types.

    Variables starting with one of `skip` belong to another object. An unknown variable is an error, with a
    "did you mean" when it is close to a known one (or differs only in case).
    """
    known = {f.name: f for f in dataclasses.fields(cls)}
    names = [prefix + name.upper() for name in known]
    values: dict[str, Any] = {}
    for key, raw in environ.items():
        if not key.startswith(prefix):
            if key.upper().startswith(prefix) and not key.upper().startswith(skip):
                raise ConfigurationError(f"unknown setting {key}{_did_you_mean(key.upper(), names)}")
            continue
        if skip and key.startswith(skip):
            continue  # the tests' and the API's own settings are read by their own objects
        name = key[len(prefix) :].lower()
        if name not in known:
            raise ConfigurationError(f"unknown setting {key}{_did_you_mean(key, names)}; see {see}")
        values[name] = _parse(key, raw, known[name])
    return values


def _did_you_mean(key: str, names: Collection[str]) -> str:
    close = difflib.get_close_matches(key, list(names), n=1, cutoff=0.8)
    return f" (did you mean {close[0]}?)" if close else ""


def env_names(cls: type[Any], prefix: str) -> list[str]:
    return [prefix + f.name.upper() for f in dataclasses.fields(cls)]


def _parse(key: str, raw: str, f: dataclasses.Field[Any]) -> Any:
    kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
    if kind == "Secret":
        return Secret(raw)
    if kind == "bool":
        if raw.strip().lower() not in _BOOLS:
            raise ConfigurationError(f"{key}={raw!r} is not a valid bool (true/false)")
        return _BOOLS[raw.strip().lower()]
    if kind not in ("int", "float"):
        return raw
    try:
        return int(raw) if kind == "int" else float(raw)
    except ValueError:
        raise ConfigurationError(f"{key}={raw!r} is not a valid {kind}") from None


@dataclass(frozen=True, slots=True)
class Settings:
    # --- Kafka -----------------------------------------------------------------------------------------
    #: host:port[,host:port...]; an IPv6 address in brackets ([::1]:9092)
    kafka_bootstrap: str = "127.0.0.1:9092"
    events_topic: str = setting("roomlogs.events", pattern=TOPIC_NAME, shape="a Kafka topic name")
    dead_letter_topic: str = setting("roomlogs.dead-letters", pattern=TOPIC_NAME, shape="a Kafka topic name")
    #: Authorized deletion requests, sealed, kept forever (compacted by request id): a database restored
    #: from a backup re-applies those it lacks before ingest writes (pipeline/ingest/deletion_log.py).
    deletions_topic: str = setting("roomlogs.deletions", pattern=TOPIC_NAME, shape="a Kafka topic name")
    #: One message per alert the detectors store (pipeline/detectors), for other services.
    alerts_topic: str = setting("roomlogs.alerts", pattern=TOPIC_NAME, shape="a Kafka topic name")
    events_topic_partitions: int = setting(6, ge=1, le=10_000)
    #: Consumer group of the ingest workers (offsets of record live in PostgreSQL, see storage/offsets).
    consumer_group: str = setting("roomlogs-ingest", pattern=r"\S.{0,248}", shape="a consumer group name")
    #: Idempotent producer (InitProducerId). Apache Kafka supports it; the embedded Tansu broker does not.
    #: Never guessed: set it to match the broker.
    kafka_idempotent_producer: bool = False
    kafka_compression: str = setting("gzip", choices=KAFKA_COMPRESSIONS)
    #: Replication of the topics roomlogs creates (events, dead letters, the worker app's own).
    #: 3 in production.
    kafka_replication_factor: int = setting(1, ge=1, le=32)
    #: Consumer-group session timeout of the ingest workers: how long a dead worker's partitions wait
    #: before they move (Apache Kafka's default minimum is 6 s).
    kafka_session_timeout_seconds: float = setting(6.0, gt=0, le=3600)
    #: Static group membership (KIP-345): a restarted worker takes its partitions back at once instead of
    #: the group waiting for its old self to time out. Needs a stable, unique id per worker.
    kafka_static_membership: bool = True
    #: This worker's static member id; empty: `roomlogs worker` uses "<host name>-<metrics port>".
    kafka_group_instance_id: str = ""
    # --- Kafka security: pipeline/kafka_client.py turns these into the arguments of every Kafka client ---
    #: PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL.
    kafka_security_protocol: str = setting("PLAINTEXT", choices=KAFKA_SECURITY_PROTOCOLS)
    #: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (with SASL_PLAINTEXT / SASL_SSL).
    kafka_sasl_mechanism: str = setting("SCRAM-SHA-512", choices=KAFKA_SASL_MECHANISMS)
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
    postgres_schema: str = setting(
        "roomlogs", pattern=r"[a-z_][a-z0-9_]{0,40}", shape="a plain lower-case identifier (a-z, 0-9, _)"
    )
    postgres_pool_size: int = setting(4, ge=1, le=1_000)
    # --- Ingest ----------------------------------------------------------------------------------------
    batch_max_events: int = setting(20_000, ge=1, le=10_000_000)
    batch_max_wait_seconds: float = setting(0.25, ge=0, le=60)
    max_event_bytes: int = setting(64 * 1024, ge=1, le=100 * 1024 * 1024)
    chat_text_max_chars: int = setting(2_000, ge=1)
    reason_max_chars: int = setting(500, ge=1)
    #: An event stamped further than this in the future is dead-lettered (clock skew allowance).
    max_future_skew_seconds: float = setting(300.0, ge=0)
    #: Back-off bounds while PostgreSQL is unreachable (the worker pauses, it never dead-letters).
    db_retry_initial_seconds: float = setting(0.2, gt=0, le=3600)
    db_retry_max_seconds: float = setting(5.0, gt=0, le=3600)
    #: How long a stopping worker may take to finish the batch in hand.
    shutdown_drain_seconds: float = setting(30.0, ge=0, le=3600)
    # --- Partitions and retention -----------------------------------------------------------------------
    partitions_ahead_days: int = setting(3, ge=0, le=366)
    #: Retention class of a room the pipeline has no settings for yet (one of `retention_classes`: the
    #: worker checks it at start-up).
    default_retention_class: str = setting(
        "public", pattern=RETENTION_CLASS_NAME, shape="a retention class (`roomlogs retention classes list`)"
    )
    #: A public room whose `max_occupancy` reaches this is a busy room (shorter retention).
    busy_room_min_occupancy: int = setting(50, ge=1)
    dead_letter_retention_days: int = setting(7, ge=1, le=3650)
    # --- Evidence seals (pipeline/sealing) --------------------------------------------------------------
    #: The Ed25519 private key (PEM) room-days are sealed with; empty: this process does not seal.
    seal_key_file: str = setting("", pattern=r".*", shape="a file")
    #: A day is closed this long after it ends: sealed by the next run, then refusing new events (day_sealed).
    seal_late_window_seconds: float = setting(3600.0, ge=0, le=7 * 86_400)
    #: Every daily head of the seals is also published here (the witness; kept forever).
    seal_heads_topic: str = setting("roomlogs.seal-heads", pattern=TOPIC_NAME, shape="a Kafka topic name")
    # --- Detectors -------------------------------------------------------------------------------------
    #: Run the detectors in each batch's transaction (alerts, README "Detectors"); false: store only.
    detectors_enabled: bool = True
    #: How long a worker uses the operators' detector settings (`roomlogs detectors set`) before reading
    #: them again: a change takes effect within this, without a restart.
    detector_settings_ttl_seconds: float = setting(10.0, gt=0, le=3600)
    #: The most chat rows of recent room-hours whose times a worker remembers to skip detector reads that
    #: cannot make a window fire (about 300 bytes each; past it the oldest times go, each hour keeping its
    #: count); 0: read from storage every batch.
    detector_memory_rows: int = setting(300_000, ge=0, le=100_000_000)
    # --- Serving ---------------------------------------------------------------------------------------
    metrics_host: str = setting("127.0.0.1", pattern=r"\S+", shape="an address to listen on")
    metrics_port: int = setting(9308, **_PORT)
    # --- Worker app (faust) ----------------------------------------------------------------------------
    worker_data_dir: str = setting(".roomlogs/worker", pattern=r".+", shape="a directory")
    #: Partition upkeep (premake) and room-class refresh interval.
    maintenance_interval_seconds: float = setting(60.0, gt=0, le=86_400)
    log_level: str = setting("info", choices=LOG_LEVELS, fold_case=True)
    #: "json" (one object per line, one shape for every process) or "text" for a terminal.
    log_format: str = setting("text", choices=LOG_FORMATS)

    def __post_init__(self) -> None:
        check_rules(self, ENV_PREFIX)
        _check_bootstrap(self.kafka_bootstrap)
        topics = (
            self.events_topic, self.dead_letter_topic, self.deletions_topic, self.seal_heads_topic,
            self.alerts_topic,
        )  # fmt: skip
        if len(set(topics)) < len(topics):
            raise ConfigurationError(
                "ROOMLOGS_EVENTS_TOPIC, ROOMLOGS_DEAD_LETTER_TOPIC, ROOMLOGS_DELETIONS_TOPIC, "
                "ROOMLOGS_SEAL_HEADS_TOPIC and ROOMLOGS_ALERTS_TOPIC must be five different topics"
            )
        if self.db_retry_max_seconds < self.db_retry_initial_seconds:
            raise ConfigurationError(
                "ROOMLOGS_DB_RETRY_MAX_SECONDS must not be below ROOMLOGS_DB_RETRY_INITIAL_SECONDS"
            )
        self._check_kafka_security()

    def _check_kafka_security(self) -> None:
        protocol = self.kafka_security_protocol
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
        values = read_env(cls, ENV_PREFIX, env, skip=_OTHER_PREFIXES)
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
        return env_names(Settings, ENV_PREFIX)


def _check_bootstrap(bootstrap: str) -> None:
    """host:port[,host:port...], an IPv6 address in brackets, each port 1..65535."""
    for server in bootstrap.split(","):
        match = re.fullmatch(r"\s*(\[[0-9A-Fa-f:.]+\]|[^\s:,\[\]]+):(\d{1,5})\s*", server)
        if match is None or not 1 <= int(match.group(2)) <= 65_535:
            raise ConfigurationError(
                f"ROOMLOGS_KAFKA_BOOTSTRAP={bootstrap!r}: use host:port[,host:port...] "
                "(an IPv6 address in brackets: [::1]:9092)"
            )
