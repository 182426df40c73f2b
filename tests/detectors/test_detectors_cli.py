"""`roomlogs detectors`: set, show, reset and history against a migrated schema; a running worker's
Detectors picks a change up without a restart (after its settings cache expires); bad input is refused."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

import orjson
import pytest

from pipeline.cli.detectors import COMMANDS, add_commands
from pipeline.detectors import Detectors
from pipeline.errors import ConfigurationError
from pipeline.settings import Secret, Settings
from pipeline.storage import db, migrate


def _run(settings: Settings, argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="roomlogs")
    add_commands(parser.add_subparsers(dest="command"))
    code: int = COMMANDS["detectors"](settings, parser.parse_args(argv))
    return code


async def roomlogs(settings: Settings, capsys: pytest.CaptureFixture[str], *argv: str) -> Any:
    assert await asyncio.to_thread(_run, settings, ["detectors", *argv]) == 0
    out = capsys.readouterr().out
    return orjson.loads(out) if out.lstrip().startswith(("{", "[")) else out


async def test_set_show_reset_and_history(
    postgres_dsn: str, pg_schema: str, capsys: pytest.CaptureFixture[str]
) -> None:
    conn = await db.connect(postgres_dsn, pg_schema)
    await migrate.migrate(conn, pg_schema)
    settings = Settings(postgres_dsn=Secret(postgres_dsn), postgres_schema=pg_schema)
    clock = [0.0]
    worker = Detectors(settings_ttl_seconds=10, clock=lambda: clock[0])
    try:
        await worker.refresh(conn)
        assert worker.effective("chat_flood", "public", "r1").params["max_messages"] == 40
        shown = await roomlogs(settings, capsys, "show", "--class", "busy_public", "--json")
        assert shown["detectors"]["raid"]["params"]["min_users"] == 80
        assert shown["detectors"]["raid"]["from"]["min_users"] == "built-in for busy_public"

        said = await roomlogs(settings, capsys, "set", "chat_flood", "--class", "public", "-p",
                              "max_messages=20", "--by", "ops-1", "--reason", "chatty")  # fmt: skip
        assert said.startswith("chat_flood for class public: max_messages=20; on or off as inherited")
        await roomlogs(settings, capsys, "set", "chat_flood", "--room", "r1", "--disable",
                       "--by", "ops-2", "--reason", "a bot room")  # fmt: skip
        shown = await roomlogs(settings, capsys, "show", "--room", "r1", "--json")
        assert shown["detectors"]["chat_flood"] == {
            "enabled": False,
            "params": {"window_seconds": 10, "max_messages": 20},
            "from": {"window_seconds": "built-in", "max_messages": "class public (by ops-1)"},
        }
        # the worker's cache: the old value until its ttl runs out, then the new one, no restart
        await worker.refresh(conn)
        assert worker.effective("chat_flood", "public", "r1").enabled
        clock[0] = 11.0
        await worker.refresh(conn)
        assert not worker.effective("chat_flood", "public", "r1").enabled
        assert worker.effective("chat_flood", "public", "r2").params["max_messages"] == 20

        said = await roomlogs(
            settings, capsys, "reset", "chat_flood", "--room", "r1", "--by", "ops-2", "--reason", "done"
        )
        assert said.startswith("chat_flood for room r1: setting removed (recorded)")
        said = await roomlogs(
            settings, capsys, "reset", "chat_flood", "--room", "r1", "--by", "ops-2", "--reason", "again"
        )
        assert said.strip() == "chat_flood for room r1: no setting to remove, nothing changed"
        # the operator's view: a table, newest first, before and after each change
        lines = (await roomlogs(settings, capsys, "history")).splitlines()
        assert lines[0].split() == ["changed", "at", "(UTC)", "by", "action", "scope", "detector", "before",
                                    "after", "reason"]  # fmt: skip
        assert [line.split()[2:6] for line in lines[1:]] == [
            ["ops-2", "reset", "room", "r1"],
            ["ops-2", "set", "room", "r1"],
            ["ops-1", "set", "class", "public"],
        ]  # fmt: skip
        assert "off" in lines[1] and lines[1].endswith("done") and "max_messages=20" in lines[3]
        history = await roomlogs(settings, capsys, "history", "--json")
        assert [(h["action"], h["scope_id"], h["changed_by"]) for h in history] == [
            ("reset", "r1", "ops-2"), ("set", "r1", "ops-2"), ("set", "public", "ops-1"),
        ]  # fmt: skip
        assert history[0]["enabled_before"] is False and history[0]["params_after"] is None
        for bad in (["-p", "max_messages=0"], ["-p", "max_message=3"], ["-p", "max_messages=x"], []):
            argv = ["detectors", "set", "chat_flood", "--class", "public", *bad, "--by", "x", "--reason", "y"]
            with pytest.raises(ConfigurationError):
                await asyncio.to_thread(_run, settings, argv)
    finally:
        await conn.close()
