"""Which settings each `roomlogs` command reads: shown at the end of its `--help`.

`pipeline.cli` adds `epilog(command)` to every sub-command's parser. A command added to the CLI needs an
entry in `READS` (tests/cli/test_cli_help.py checks that each has one and that every name is a real
setting).
"""

from __future__ import annotations

import textwrap

from pipeline.settings import ENV_PREFIX, Settings

__all__ = ["READS", "epilog", "names"]

_LOGGING = ("log_level", "log_format")
_POSTGRES = ("postgres_dsn", "postgres_schema")
#: every Kafka client: bootstrap and security (pipeline/kafka_client.py)
_KAFKA = (
    "kafka_bootstrap",
    "kafka_security_protocol",
    "kafka_sasl_mechanism",
    "kafka_sasl_username",
    "kafka_sasl_password",
    "kafka_ssl_ca_file",
    "kafka_ssl_cert_file",
    "kafka_ssl_key_file",
    "kafka_ssl_key_password",
)
_TOPICS = (
    "events_topic",
    "dead_letter_topic",
    "deletions_topic",
    "alerts_topic",
    "events_topic_partitions",
    "kafka_replication_factor",
)
_NORMALIZE = (
    "max_event_bytes",
    "chat_text_max_chars",
    "reason_max_chars",
    "max_future_skew_seconds",
    "default_retention_class",
    "busy_room_min_occupancy",
)
#: every Settings field
_ALL = tuple(name.removeprefix(ENV_PREFIX).lower() for name in Settings.env_names())
#: every ApiSettings field (see `_api_fields`)
_API = ("api_*",)

#: Per top-level command: the settings (field names, ``api_...`` for the API's) it reads.
READS: dict[str, tuple[str, ...]] = {
    "migrate": (*_POSTGRES, *_LOGGING),
    "worker": _ALL,
    "simulate": (
        *_KAFKA, *_TOPICS, "kafka_idempotent_producer", "kafka_compression", "max_event_bytes",
        "max_future_skew_seconds", *_LOGGING,
    ),
    "up": _ALL,
    "demo": _ALL,
    "partitions": (*_POSTGRES, "partitions_ahead_days", "dead_letter_retention_days", *_LOGGING),
    "retention": (
        *_POSTGRES, "partitions_ahead_days", "dead_letter_retention_days", "maintenance_interval_seconds",
        "seal_key_file", "seal_late_window_seconds", "seal_heads_topic", *_KAFKA, "kafka_replication_factor",
        *_LOGGING,
    ),
    # the DSN: `api trust-key`, as the schema's owner; the late window: when days close, if the API's own
    # ROOMLOGS_API_SEAL_LATE_WINDOW_SECONDS is not set
    "api": (*_POSTGRES, "seal_late_window_seconds", *_LOGGING, *_API),
    "status": (
        *_KAFKA, "events_topic", "consumer_group", "maintenance_interval_seconds",
        "dead_letter_retention_days", "seal_late_window_seconds", "seal_heads_topic", *_POSTGRES, *_LOGGING,
    ),
    "dead-letters": (*_POSTGRES, *_KAFKA, "events_topic", "consumer_group", *_NORMALIZE, *_LOGGING),
    "offsets": (*_POSTGRES, *_KAFKA, "events_topic", "consumer_group", *_LOGGING),
    "detectors": (*_POSTGRES, "default_retention_class", *_LOGGING),
    "seals": (
        *_POSTGRES, *_KAFKA, "seal_key_file", "seal_late_window_seconds", "seal_heads_topic",
        "kafka_replication_factor", *_LOGGING,
    ),
    "verify": (*_POSTGRES, *_KAFKA, "seal_late_window_seconds", "seal_heads_topic", *_LOGGING),
}  # fmt: skip


def names(command: str) -> list[str]:
    """The environment variables `command` reads, in the order of READS."""
    fields = [f for field in READS[command] for f in (_api_fields() if field == "api_*" else [field])]
    return [ENV_PREFIX + field.upper() for field in fields]


def _api_fields() -> list[str]:
    """The API's settings; only their prefix when the API's dependencies are not installed (importing
    `pipeline.api.settings` imports the API package)."""
    try:
        from pipeline.api.settings import ApiSettings
    except ModuleNotFoundError:
        return ["api_*"]
    return [name.removeprefix(ENV_PREFIX).lower() for name in ApiSettings.env_names()]


def epilog(command: str) -> str:
    """The end of `roomlogs COMMAND --help`: the variables it reads, wrapped (also for raw formatters)."""
    text = (
        "settings it reads (environment variables; README.md, Configuration"
        + (", Query API" if "api_*" in READS[command] else "")
        + "): "
        + ", ".join(names(command))
    )
    return textwrap.fill(text, width=100, break_on_hyphens=False)
