"""Retention where workers run on their own role: the owner's `roomlogs retention enforce --apply --loop`
drops what expires, and the worker's role is told it cannot."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import time
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from conftest import StoreEvents
from db_roles import login_as

from pipeline.cli.retention import COMMANDS, add_commands
from pipeline.retention import RetentionError
from pipeline.settings import Secret, Settings


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="roomlogs")
    add_commands(parser.add_subparsers(dest="command"))
    return parser.parse_args(argv)


async def test_enforce_on_the_workers_role_says_whose_dsn_drops(
    conn: asyncpg.Connection,
    settings: Settings,
    store_events: StoreEvents,
    capsys: pytest.CaptureFixture[str],
) -> None:
    old = datetime.now(UTC).date() - timedelta(days=5)
    await store_events("busy_public", old, {"r": 3})
    owner = await conn.fetchval("SELECT current_user")
    dsn = await login_as(settings.postgres_dsn.get(), f"{settings.postgres_schema}_worker")
    worker = settings.replace(postgres_dsn=Secret(dsn))
    args = _parse(["retention", "enforce", "--apply"])
    with pytest.raises(RetentionError, match=f"run it with a DSN of {owner}"):
        await asyncio.to_thread(COMMANDS["retention"], worker, args)
    assert "partitions created ahead" in capsys.readouterr().out
    assert await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", f"events_busy_public_p{old:%Y%m%d}")


@pytest.mark.parametrize(
    "argv", [["--loop"], ["--loop", "--dry-run"], ["--apply", "--loop", "--as-of", "2030-01-01"]]
)
def test_loop_needs_apply_and_the_real_clock(settings: Settings, argv: list[str]) -> None:
    args = _parse(["retention", "enforce", *argv])
    with pytest.raises(RetentionError):
        COMMANDS["retention"](settings, args)


async def test_the_loop_drops_what_expires_and_stops_on_sigterm(
    conn: asyncpg.Connection, settings: Settings, store_events: StoreEvents
) -> None:
    old = datetime.now(UTC).date() - timedelta(days=5)
    await store_events("busy_public", old, {"r": 3})
    name = f"events_busy_public_p{old:%Y%m%d}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROOMLOGS_")}
    env.update(settings.replace(maintenance_interval_seconds=3600).to_env())
    child = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "pipeline.cli", "retention", "enforce", "--apply", "--loop"),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while not await conn.fetchval("SELECT count(*) FROM deletion_ledger WHERE partition_name = $1", name):
            assert child.returncode is None, "the loop exited early: " + (await child.stdout.read()).decode()
            assert time.monotonic() < deadline, "the loop's first run did not drop the expired day"
            await asyncio.sleep(0.2)
        child.send_signal(signal.SIGTERM)
        out, _ = await asyncio.wait_for(child.communicate(), 30)
    finally:
        if child.returncode is None:
            child.kill()
            await child.wait()
    assert child.returncode == 0, out.decode()
    text = out.decode()
    assert "a run every 3600 s until stopped" in text and f"dropped {name} (3 rows" in text
