"""Log lines: one JSON shape in every process, and never any room content."""

from __future__ import annotations

import io
import logging
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from mode.utils.logging import setup_logging

from pipeline.errors import ConfigurationError
from pipeline.logs import MAX_MESSAGE_CHARS, JsonFormatter, TextFormatter, configure_logging, logging_config

CHAT_TEXT = "meet me behind the fountain, my number is 555-0199"


@pytest.fixture
def root_logger() -> Iterator[logging.Logger]:
    """The root logger, with its handlers and level put back afterwards (configure_logging replaces them)."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield root
    root.handlers[:] = handlers
    root.setLevel(level)
    logging.captureWarnings(False)


def emit(formatter: logging.Formatter, *args: Any, **kwargs: Any) -> str:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    logger = logging.getLogger("roomlogs.test")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning(*args, **kwargs)
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
    return stream.getvalue()


def test_a_json_line_has_the_fixed_fields_then_the_extras() -> None:
    line = emit(JsonFormatter("worker"), "stored %d events", 12, extra={"partition": 3, "event_type": "x"})
    doc = orjson.loads(line)
    assert list(doc)[:6] == ["ts", "level", "logger", "msg", "process", "pid"]
    assert doc["level"] == "warning"
    assert doc["logger"] == "roomlogs.test"
    assert doc["msg"] == "stored 12 events"
    assert doc["process"] == "worker"
    assert doc["partition"] == 3
    assert doc["ts"].endswith("Z") and len(doc["ts"]) == len("2026-11-24T05:13:49.123Z")


def test_content_fields_are_withheld_whatever_their_value() -> None:
    for formatter in (JsonFormatter("worker"), TextFormatter("worker")):
        extra = {"text": CHAT_TEXT, "payload": {"data": {"text": CHAT_TEXT}}}
        line = emit(formatter, "event refused", extra=extra)
        assert CHAT_TEXT not in line
        assert "[withheld]" in line


def test_an_extra_cannot_overwrite_a_fixed_field_and_odd_values_are_written_as_text() -> None:
    doc = orjson.loads(emit(JsonFormatter("api"), "x", extra={"level": "forged", "when": object()}))
    assert doc["level"] == "warning"
    assert doc["when"].startswith("<object object")


def test_long_messages_are_cut() -> None:
    doc = orjson.loads(emit(JsonFormatter("worker"), "%s", "y" * (MAX_MESSAGE_CHARS * 3)))
    assert len(doc["msg"]) < MAX_MESSAGE_CHARS + 100
    assert doc["msg"].endswith("more chars cut]")


def test_an_exception_adds_its_type_and_traceback() -> None:
    try:
        raise ConnectionResetError("peer went away")
    except ConnectionResetError:
        line = emit(JsonFormatter("worker"), "write failed", exc_info=True)
    doc = orjson.loads(line)
    assert doc["exc_type"] == "ConnectionResetError"
    assert "peer went away" in doc["exc"]
    assert "\n" not in line.rstrip("\n")  # still one line


def test_a_wrong_level_fails_with_the_setting_name(root_logger: logging.Logger) -> None:
    with pytest.raises(ConfigurationError, match="ROOMLOGS_LOG_LEVEL"):
        configure_logging("verbose", json=True)


def test_configure_logging_installs_the_shape_on_the_root_logger(
    root_logger: logging.Logger, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging("info", json=True, process="migrate")
    logging.getLogger("roomlogs.storage").debug("not shown at info")
    logging.getLogger("roomlogs.storage").info("applied %d migrations", 1)
    lines = capsys.readouterr().err.splitlines()
    assert [orjson.loads(x)["msg"] for x in lines] == ["applied 1 migrations"]
    assert orjson.loads(lines[0])["process"] == "migrate"


def test_faust_workers_logging_setup_keeps_our_shape(
    root_logger: logging.Logger, capsys: pytest.CaptureFixture[str]
) -> None:
    # faust.Worker calls mode's setup_logging(logging_config=...) on start; with ours, lines stay JSON.
    setup_logging(loglevel="info", logging_config=logging_config("info", json=True, process="worker"))
    logging.getLogger("faust.worker").info("started")
    doc = orjson.loads(capsys.readouterr().err.splitlines()[-1])
    assert (doc["logger"], doc["msg"], doc["process"]) == ("faust.worker", "started", "worker")


def test_another_process_writes_the_same_shape() -> None:
    code = (
        "import logging; from pipeline.logs import configure_logging; "
        "configure_logging('info', json=True, process='retention'); "
        "logging.getLogger('roomlogs.retention').info('dropped %d partitions', 2, extra={'text': 'hi'})"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    doc = orjson.loads(done.stderr.strip().splitlines()[-1])
    assert {k: doc[k] for k in ("level", "logger", "msg", "process", "text")} == {
        "level": "info", "logger": "roomlogs.retention", "msg": "dropped 2 partitions",
        "process": "retention", "text": "[withheld]",
    }
    assert done.stdout == ""
