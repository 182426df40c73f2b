"""Log records in one shape for every roomlogs process (worker, API, retention, CLI commands).

Who calls it: the CLI, once, right after reading the settings (`configure_logging`), and the worker command,
which hands `logging_config(...)` to faust (faust's worker replaces the root handlers when it starts; given
this config it installs ours instead of its coloured console handler).

One JSON object per line on stderr (stdout stays for command output such as `roomlogs migrate`):

    {"ts": "2026-11-24T05:13:49.123Z", "level": "warning", "logger": "roomlogs.ingest", "msg": "...",
     "process": "worker", "pid": 4711, ...extra fields}

- ``ts`` is UTC, RFC 3339 with milliseconds; ``level`` is lower case; ``process`` is the role (the CLI
  command), ``pid`` tells replicas apart on one host.
- Extra fields are what the caller passed as ``extra={...}``; values that JSON cannot hold are written as
  their ``str()``.
- An exception adds ``exc_type`` and ``exc`` (the formatted traceback).

No room content ever reaches a log: extra fields named like content (`CONTENT_FIELDS`: chat text, bodies,
payloads, raw records) are replaced by ``"[withheld]"`` whatever their value, and a message longer than
`MAX_MESSAGE_CHARS` is cut (a log line is for operators, not a copy of the data). Code that logs must still
never format content into the message itself: log ids, counts and reason codes. The same config makes
uvicorn's loggers (`roomlogs api serve`) write this shape, and its access log drop query strings (a chat
search `q=` is room content).

Outages are logged as two lines, not one per retry: `OutageLog` writes when a dependency stops answering
and when it answers again (with how long it was out), and asyncpg's pool retries (a traceback each) are
held back unless the level is debug.
"""

from __future__ import annotations

import logging
import logging.config
import os
import re
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson

from pipeline.errors import ConfigurationError

__all__ = [
    "CONTENT_FIELDS",
    "MAX_MESSAGE_CHARS",
    "JsonFormatter",
    "OutageLog",
    "TextFormatter",
    "configure_logging",
    "logging_config",
    "outage_log",
]

#: Extra-field names whose values are never written (they would be room content or personal data).
CONTENT_FIELDS = frozenset({"text", "body", "payload", "raw", "value", "record", "data", "display_name"})
WITHHELD = "[withheld]"
MAX_MESSAGE_CHARS = 2_000
_LEVELS = ("debug", "info", "warning", "error", "critical")

# Every attribute a LogRecord has without `extra` (what remains are the caller's fields), and uvicorn's
# `color_message` (its message again, with terminal colour codes).
_RECORD_ATTRS = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message", "asctime", "color_message",
}  # fmt: skip


def _timestamp(record: logging.LogRecord) -> str:
    moment = datetime.fromtimestamp(record.created, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _bounded(msg: str) -> str:
    if len(msg) <= MAX_MESSAGE_CHARS:
        return msg
    return f"{msg[:MAX_MESSAGE_CHARS]}... [{len(msg) - MAX_MESSAGE_CHARS} more chars cut]"


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for key, value in record.__dict__.items():
        if key in _RECORD_ATTRS or key.startswith("_"):
            continue
        fields[key] = WITHHELD if key.lower() in CONTENT_FIELDS else value
    return fields


class _Shape(logging.Formatter):
    """The fields every line has, in order; subclasses only choose how to write them."""

    def __init__(self, process: str) -> None:
        super().__init__()
        self.process = process

    def fields(self, record: logging.LogRecord) -> dict[str, Any]:
        out: dict[str, Any] = {
            "ts": _timestamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": _bounded(record.getMessage()),
            "process": self.process,
            "pid": record.process,
        }
        for key, value in _extras(record).items():
            out.setdefault(key, value)  # an extra cannot overwrite the fixed fields
        if record.exc_info and record.exc_info[0] is not None:
            out["exc_type"] = record.exc_info[0].__name__
            out["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            out["exc"] = record.exc_text
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        return out


class JsonFormatter(_Shape):
    """One JSON object per record (see the module docstring for the fields)."""

    def format(self, record: logging.LogRecord) -> str:
        return orjson.dumps(self.fields(record), default=str).decode()


class TextFormatter(_Shape):
    """The same fields for a terminal: ``ts level logger [process] msg key=value ...``."""

    def format(self, record: logging.LogRecord) -> str:
        f = self.fields(record)
        head = f"{f.pop('ts')} {f.pop('level'):<7} {f.pop('logger')} [{f.pop('process')}] {f.pop('msg')}"
        f.pop("pid")
        exc = f.pop("exc", None)
        f.pop("exc_type", None)
        tail = "".join(f" {k}={v}" for k, v in f.items())
        return head + tail + (f"\n{exc}" if exc else "")


class WithoutQueryString(logging.Filter):
    """Drops the query string from uvicorn's access-log lines: ``"GET /v1/rooms/r/events HTTP/1.1" 200``.

    Chat search terms (`q=`) and other filters are room content or personal data; the path, method and
    status are what an operator needs. Works on the formatted line, whatever uvicorn's argument order.
    """

    _QUERY = re.compile(r"(?<=\S)\?[^\s\"]*")

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "?" in message:
            record.msg, record.args = self._QUERY.sub("", message), None
        return True


class QuietPoolRetries(logging.Filter):
    """asyncpg's pool logs a warning with a traceback each time it fails to reconnect during an outage;
    `OutageLog` already said the server is gone. Those records pass only when the root level is debug."""

    def filter(self, record: logging.LogRecord) -> bool:
        if str(record.msg).startswith("Failed to restore the pool connection"):
            return logging.getLogger().isEnabledFor(logging.DEBUG)
        return True


class QuietKafkaRepeats(logging.Filter):
    """aiokafka logs every failed connect, metadata update, fetch and coordinator request while a broker is
    away: an outside tester counted 3,800 ERROR lines in a 63 s outage. Of its warnings and errors, the
    first of each kind (logger and message) passes; the same kind again within `window_seconds` is
    counted, not written, and the next one after the window says how many were held back. Debug logging
    lets everything through."""

    def __init__(self, window_seconds: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.window_seconds = window_seconds
        self._clock = clock
        #: (logger, message template) -> (when the last one was written, how many were held back since)
        self._seen: dict[tuple[str, str], tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith("aiokafka") or record.levelno < logging.WARNING:
            return True
        if logging.getLogger().isEnabledFor(logging.DEBUG):
            return True
        key = (record.name, str(record.msg))
        now = self._clock()
        last = self._seen.get(key)
        if last is not None and now - last[0] < self.window_seconds:
            self._seen[key] = (last[0], last[1] + 1)
            return False
        if len(self._seen) > 1_000:  # bounded: kinds are few, but messages could carry varying text
            self._seen.clear()
        self._seen[key] = (now, 0)
        if last is not None and last[1]:
            record.msg = f"{record.msg} (and {last[1]} more like it in the {self.window_seconds:g} s before)"
        return True


class OutageLog:
    """One line when a dependency stops answering, one when it answers again (with the outage's length).

    Callers report every failure (`down`) and every success (`up`); only the changes are logged, so a
    retry loop waiting out an outage writes two lines in all. `outage_log(name)` gives the process's one
    instance per dependency, so every part of a process that notices the same outage (the ingest loop, the
    maintenance timer) shares its two lines.
    """

    def __init__(
        self, what: str, logger: logging.Logger, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.what = what
        self._log = logger
        self._clock = clock
        self._since: float | None = None

    @property
    def is_down(self) -> bool:
        return self._since is not None

    def down(self, error: BaseException | str, consequence: str) -> None:
        """`error` happened; the first one of an outage is logged with `consequence` (what waits for it)."""
        if self._since is not None:
            return
        self._since = self._clock()
        cause = error if isinstance(error, str) else f"{type(error).__name__}: {error}".rstrip(": ")
        self._log.warning(
            "%s unavailable (%s): %s", self.what, cause, consequence, extra={"outage": "started"}
        )

    def up(self, consequence: str = "") -> None:
        """A call succeeded; the first one after an outage is logged with how long it lasted."""
        if self._since is None:
            return
        seconds = self._clock() - self._since
        self._since = None
        self._log.warning(
            "%s available again after %.1f s%s",
            self.what,
            seconds,
            f": {consequence}" if consequence else "",
            extra={"outage": "ended", "outage_seconds": round(seconds, 3)},
        )


_OUTAGES: dict[str, OutageLog] = {}


def outage_log(what: str) -> OutageLog:
    """This process's OutageLog for `what` (e.g. "PostgreSQL"), logging as ``roomlogs.outage``."""
    if what not in _OUTAGES:
        _OUTAGES[what] = OutageLog(what, logging.getLogger("roomlogs.outage"))
    return _OUTAGES[what]


def _level(level: str) -> str:
    name = level.strip().lower()
    if name not in _LEVELS:
        raise ConfigurationError(f"ROOMLOGS_LOG_LEVEL={level!r}: use one of {', '.join(_LEVELS)}")
    return name.upper()


def logging_config(level: str, json: bool, *, process: str = "roomlogs") -> dict[str, Any]:
    """A `logging.config.dictConfig` dict: one stderr handler with our formatter on the root logger.

    Existing loggers stay enabled (module-level loggers are created at import, before this runs). uvicorn's
    loggers write through the same handler (uvicorn takes this dict as its `log_config`), its access log
    without query strings; asyncpg's pool reconnect tracebacks only at debug; aiokafka's notes of a
    consumer's subscription not at all, its repeated warnings and errors once a minute per kind.
    """
    formatter = JsonFormatter if json else TextFormatter
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"roomlogs": {"()": formatter, "process": process}},
        "filters": {
            "without_query_string": {"()": WithoutQueryString},
            "quiet_pool_retries": {"()": QuietPoolRetries},
            "quiet_kafka_repeats": {"()": QuietKafkaRepeats},
        },
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stderr",
                "formatter": "roomlogs",
                "filters": ["quiet_kafka_repeats"],
            },
        },
        "loggers": {
            # propagate to the root handler; no handlers of their own (uvicorn's defaults would add some)
            "uvicorn": {"handlers": [], "propagate": True},
            "uvicorn.error": {"handlers": [], "propagate": True},
            "uvicorn.access": {"handlers": [], "propagate": True, "filters": ["without_query_string"]},
            "asyncpg.pool": {"filters": ["quiet_pool_retries"]},
            # "Updating subscribed topics to: ..." at info, once per consumer: `roomlogs status` opens one
            # per partition, and its output drowned in them
            "aiokafka.consumer.subscription_state": {"level": "WARNING"},
        },
        "root": {"level": _level(level), "handlers": ["stderr"]},
    }


def configure_logging(level: str, json: bool, *, process: str | None = None) -> None:
    """Install the roomlogs log shape for this process (replaces any handlers on the root logger).

    `level` is a name (debug, info, warning, error, critical); a wrong one raises ConfigurationError naming
    the setting. `process` defaults to the program name.
    """
    name = process or os.path.basename(sys.argv[0]) or "roomlogs"
    logging.config.dictConfig(logging_config(level, json, process=name))
    logging.captureWarnings(True)
