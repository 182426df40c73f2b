"""`roomlogs --version`, and every command's --help naming the settings (environment variables) it reads."""

from __future__ import annotations

import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

from pipeline.api.settings import ApiSettings
from pipeline.cli import settings_help
from pipeline.settings import Settings

KNOWN = set(Settings.env_names()) | set(ApiSettings.env_names())


def roomlogs(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pipeline.cli", *args],
        capture_output=True, text=True, timeout=60, check=False, cwd=cwd,
    )  # fmt: skip


def commands(cwd: Path) -> list[str]:
    usage = roomlogs("--help", cwd=cwd).stdout
    choices = re.search(r"\{([a-z,-]+)\}", usage)
    assert choices, usage
    return choices.group(1).split(",")


def test_version(tmp_path: Path) -> None:
    done = roomlogs("--version", cwd=tmp_path)
    assert (done.returncode, done.stdout.strip()) == (0, f"roomlogs {metadata.version('roomlogs')}")


def test_every_command_says_what_it_does_and_which_settings_it_reads(tmp_path: Path) -> None:
    top = roomlogs("--help", cwd=tmp_path).stdout
    assert "roomlogs demo" in top and "roomlogs up" in top, top  # where a newcomer starts
    listed = commands(tmp_path)
    assert {"migrate", "worker", "simulate", "up", "demo", "retention", "partitions", "api"} <= set(listed)
    for command in listed:
        done = roomlogs(command, "--help", cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        text = " ".join(done.stdout.split())  # unwrapped
        said = done.stdout.split("\n\n")[1]  # after the usage: what the command does, before its options
        assert not said.startswith(("options:", "positional arguments:")), f"{command} --help: {said}"
        assert "settings it reads (environment variables" in text, command
        named = set(re.findall(r"\bROOMLOGS_[A-Z_]+[A-Z]\b", text.split("settings it reads", 1)[1]))
        assert named, command
        assert named <= KNOWN, f"{command} --help names settings that do not exist: {named - KNOWN}"
        assert named == set(settings_help.names(command))


@pytest.mark.parametrize(
    ("command", "reads", "not_reads"),
    [
        ("migrate", {"ROOMLOGS_POSTGRES_DSN", "ROOMLOGS_POSTGRES_SCHEMA"}, {"ROOMLOGS_KAFKA_BOOTSTRAP"}),
        ("simulate", {"ROOMLOGS_KAFKA_BOOTSTRAP", "ROOMLOGS_EVENTS_TOPIC"}, {"ROOMLOGS_POSTGRES_DSN"}),
        ("api", {"ROOMLOGS_API_POSTGRES_DSN", "ROOMLOGS_API_PORT"}, {"ROOMLOGS_KAFKA_BOOTSTRAP"}),
        ("worker", set(Settings.env_names()), set(ApiSettings.env_names())),
    ],
)  # fmt: skip
def test_what_a_command_reads(command: str, reads: set[str], not_reads: set[str]) -> None:
    named = set(settings_help.names(command))
    assert reads <= named
    assert not (not_reads & named)
