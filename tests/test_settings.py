"""Settings an operator gets wrong are refused at start-up, with the variable and what it may be."""

from __future__ import annotations

import pytest

from pipeline.api.settings import ApiSettings
from pipeline.errors import ConfigurationError
from pipeline.settings import Secret, Settings


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"ROOMLOGS_METRICS_PORT": "0"}, "ROOMLOGS_METRICS_PORT=0: must be 1..65535"),
        ({"ROOMLOGS_METRICS_PORT": "70000"}, "ROOMLOGS_METRICS_PORT=70000: must be 1..65535"),
        ({"ROOMLOGS_BATCH_MAX_WAIT_SECONDS": "-1"}, "ROOMLOGS_BATCH_MAX_WAIT_SECONDS=-1.0: must be 0..60"),
        (
            {"ROOMLOGS_DB_RETRY_INITIAL_SECONDS": "0"},
            "ROOMLOGS_DB_RETRY_INITIAL_SECONDS=0.0: must be above 0",
        ),
        ({"ROOMLOGS_SHUTDOWN_DRAIN_SECONDS": "nan"}, "ROOMLOGS_SHUTDOWN_DRAIN_SECONDS=nan: must be a finite"),
        ({"ROOMLOGS_MAINTENANCE_INTERVAL_SECONDS": "-5"}, "ROOMLOGS_MAINTENANCE_INTERVAL_SECONDS"),
        (
            {"ROOMLOGS_DEAD_LETTER_RETENTION_DAYS": "0"},
            "ROOMLOGS_DEAD_LETTER_RETENTION_DAYS=0: must be 1..3650",
        ),
        ({"ROOMLOGS_MAX_EVENT_BYTES": "-1"}, "ROOMLOGS_MAX_EVENT_BYTES"),
        ({"ROOMLOGS_PARTITIONS_AHEAD_DAYS": "-1"}, "ROOMLOGS_PARTITIONS_AHEAD_DAYS=-1: must be 0..366"),
        ({"ROOMLOGS_LOG_LEVEL": "verbose"}, "ROOMLOGS_LOG_LEVEL='verbose': must be one of debug, info"),
        ({"ROOMLOGS_LOG_FORMAT": "xml"}, "ROOMLOGS_LOG_FORMAT='xml': must be one of json, text"),
        ({"ROOMLOGS_KAFKA_COMPRESSION": "brotli"}, "ROOMLOGS_KAFKA_COMPRESSION='brotli': must be one of"),
        ({"ROOMLOGS_DEFAULT_RETENTION_CLASS": "Public Rooms"}, "ROOMLOGS_DEFAULT_RETENTION_CLASS="),
        ({"ROOMLOGS_EVENTS_TOPIC": "room events"}, "ROOMLOGS_EVENTS_TOPIC='room events': must be a Kafka"),
        ({"ROOMLOGS_POSTGRES_SCHEMA": "Room-Logs"}, "ROOMLOGS_POSTGRES_SCHEMA='Room-Logs': must be a plain"),
        ({"ROOMLOGS_KAFKA_BOOTSTRAP": "kafka-1"}, "ROOMLOGS_KAFKA_BOOTSTRAP='kafka-1': use host:port"),
        ({"ROOMLOGS_KAFKA_BOOTSTRAP": "kafka-1:99999"}, "ROOMLOGS_KAFKA_BOOTSTRAP"),
        ({"ROOMLOGS_KAFKA_BOOTSTRAP": "::1:9092"}, "ROOMLOGS_KAFKA_BOOTSTRAP='::1:9092': use host:port"),
        (
            {"ROOMLOGS_EVENTS_TOPIC_PARTITIONS": "six"},
            "ROOMLOGS_EVENTS_TOPIC_PARTITIONS='six' is not a valid int",
        ),
        (
            {"ROOMLOGS_DB_RETRY_INITIAL_SECONDS": "10", "ROOMLOGS_DB_RETRY_MAX_SECONDS": "5"},
            "ROOMLOGS_DB_RETRY_MAX_SECONDS must not be below ROOMLOGS_DB_RETRY_INITIAL_SECONDS",
        ),
    ],
)
def test_a_value_out_of_range_names_the_variable_and_what_it_may_be(
    env: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigurationError) as refused:
        Settings.from_env(env)
    assert str(refused.value).startswith(message)


def test_values_inside_the_ranges_are_accepted() -> None:
    s = Settings.from_env(
        {
            "ROOMLOGS_METRICS_PORT": "65535",
            "ROOMLOGS_LOG_LEVEL": "WARNING",
            "ROOMLOGS_KAFKA_BOOTSTRAP": "[::1]:9092, kafka-2:9094",
            "ROOMLOGS_PARTITIONS_AHEAD_DAYS": "0",
            "ROOMLOGS_BATCH_MAX_WAIT_SECONDS": "0",
        }
    )
    assert (s.metrics_port, s.log_level, s.partitions_ahead_days) == (65535, "WARNING", 0)


def test_a_misspelt_variable_is_refused_with_the_one_it_was_meant_to_be() -> None:
    with pytest.raises(ConfigurationError, match=r"unknown setting ROOMLOGS_METRICS_PROT \(did you mean "
                       r"ROOMLOGS_METRICS_PORT\?\)"):  # fmt: skip
        Settings.from_env({"ROOMLOGS_METRICS_PROT": "9400"})
    with pytest.raises(ConfigurationError, match=r"did you mean ROOMLOGS_POSTGRES_DSN\?"):
        Settings.from_env({"ROOMLOGS_POSTGRES_DNS": "postgresql://db/roomlogs"})
    with pytest.raises(ConfigurationError, match=r"unknown setting roomlogs_log_level \(did you mean "
                       r"ROOMLOGS_LOG_LEVEL\?\)"):  # fmt: skip
        Settings.from_env({"roomlogs_log_level": "debug"})
    with pytest.raises(ConfigurationError, match=r"did you mean ROOMLOGS_API_MAX_PAGE_SIZE\?"):
        ApiSettings.from_env({"ROOMLOGS_API_MAX_PAGESIZE": "200"})


def test_a_variable_far_from_every_setting_gets_no_guess() -> None:
    with pytest.raises(ConfigurationError) as refused:
        Settings.from_env({"ROOMLOGS_COLOUR_SCHEME": "dark"})
    assert "did you mean" not in str(refused.value)
    assert "README.md" in str(refused.value)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"ROOMLOGS_API_PORT": "0"}, "ROOMLOGS_API_PORT=0: must be 1..65535"),
        ({"ROOMLOGS_API_STATEMENT_TIMEOUT_SECONDS": "-1"}, "ROOMLOGS_API_STATEMENT_TIMEOUT_SECONDS=-1.0"),
        (
            {"ROOMLOGS_API_JWT_LEEWAY_SECONDS": "-30"},
            "ROOMLOGS_API_JWT_LEEWAY_SECONDS=-30.0: must be 0..3600",
        ),
        ({"ROOMLOGS_API_TAIL_LATE_WINDOW_SECONDS": "-1"}, "ROOMLOGS_API_TAIL_LATE_WINDOW_SECONDS"),
        ({"ROOMLOGS_API_METRICS_PATH": "metrics"}, "ROOMLOGS_API_METRICS_PATH='metrics': must be empty or"),
        ({"ROOMLOGS_API_JWT_ALGORITHM": "none"}, "ROOMLOGS_API_JWT_ALGORITHM='none'"),
    ],
)
def test_api_settings_are_checked_the_same_way(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigurationError) as refused:
        ApiSettings.from_env(env)
    assert str(refused.value).startswith(message)


def test_settings_stay_frozen_and_secrets_never_print() -> None:
    s = Settings(postgres_dsn=Secret("postgresql://u:hunter2@db/x"))
    assert "hunter2" not in repr(s) and "hunter2" not in str(s)
    assert s.to_env()["ROOMLOGS_POSTGRES_DSN"] == "postgresql://u:hunter2@db/x"
    assert Settings.from_env(s.to_env()) == s
    with pytest.raises(AttributeError):
        s.metrics_port = 1  # type: ignore[misc]
    with pytest.raises(ConfigurationError, match="ROOMLOGS_METRICS_PORT"):
        s.replace(metrics_port=-1)
