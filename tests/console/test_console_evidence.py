"""An owner sees which days are sealed and downloads their evidence; `roomlogs verify FILE --key PEM`
accepts what the console downloaded, with no database at all.

A world of its own (rows written directly, a console server on it): once a schema has a seal key, ingest
refuses every closed day, and the shared world's tests still store events on past days. u-owner's room has
events five days ago, which the real sealing run seals, and today, which stays open.
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from browsing import Contexts, axe_violations, open_page, ready, shot
from console_world import TODAY, ConsoleWorld, console_server, drop_schema, new_schema

from pipeline.evidence.keys import SealKey
from pipeline.sealing.run import seal_closed_days
from pipeline.settings import Secret, Settings
from pipeline.storage import db
from pipeline.storage.batch import EVENT_COLUMNS
from pipeline.storage.partitions import PartitionManager, day_start

ROOM = "room-sealed"
SEALED_DAY = TODAY - timedelta(days=5)


@dataclass(frozen=True)
class Sealed:
    world: ConsoleWorld
    key_id: str
    #: the public key as /v1/seal-keys gives it
    key_file: Path


def _rows(day: date, n: int, hour: int) -> list[tuple[Any, ...]]:
    start = day_start(day) + timedelta(hours=hour)
    return [
        (uuid.uuid4(), start + timedelta(minutes=i), "private", ROOM, "chat.message", 1, "u-guest", None,
         f"sealed line {i}", {"actor": {"user_id": "u-guest", "display_name": "Gus"}}, 0, i)
        for i in range(n)
    ]  # fmt: skip


@pytest.fixture(scope="module")
async def sealed(postgres_dsn: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Sealed]:
    """ROOM (u-owner's): 8 chat lines on SEALED_DAY, sealed; 2 today, open; served by a console."""
    schema, api_pool = await new_schema(postgres_dsn)
    try:
        settings = Settings(postgres_dsn=Secret(postgres_dsn), postgres_schema=schema)
        conn = await db.connect(postgres_dsn, schema)
        try:
            await conn.execute(
                "INSERT INTO rooms (room_id, privacy, retention_class, owner_id) "
                "VALUES ($1, 'private', 'private', 'u-owner')",
                ROOM,
            )
            rows = _rows(SEALED_DAY, 8, 12) + _rows(TODAY, 2, 0)
            partitions = PartitionManager()
            await partitions.load(conn)
            await partitions.ensure(conn, {("private", r[1].date()) for r in rows})
            await conn.copy_records_to_table("events", records=rows, columns=EVENT_COLUMNS)
            key = SealKey.generate(tmp_path_factory.mktemp("seal") / "seal.pem")
            report = await seal_closed_days(conn, settings, key, now=datetime.now(UTC))
            assert SEALED_DAY in report.days and TODAY not in report.days
        finally:
            await conn.close()
        world = ConsoleWorld(schema, postgres_dsn, api_pool, settings, publisher=None, ingest=None)
        async with console_server(world) as base_url:
            world.base_url = base_url
            async with httpx.AsyncClient(base_url=base_url) as client:
                keys = (await client.get("/v1/seal-keys")).json()["keys"]  # public: no token
            [pem] = [k["public_key_pem"] for k in keys if k["key_id"] == key.key_id]
            key_file = tmp_path_factory.mktemp("keys") / f"{key.key_id}.pem"
            key_file.write_text(pem)
            yield Sealed(world, key.key_id, key_file)
    finally:
        await api_pool.close()
        await drop_schema(postgres_dsn, schema)


async def signed_in(new_context: Contexts, world: ConsoleWorld, next_page: str, **options: Any) -> Any:
    """A page of u-owner's, signed in to `world`'s console at `next_page`."""
    context = await new_context(**options)
    page = await context.new_page()
    page.errors = []
    page.on("pageerror", lambda e: page.errors.append(str(e)))
    await page.goto(world.link("u-owner", next_page=next_page))
    await page.wait_for_url(re.compile(r".*/console/(?!sign-in).*"))
    await ready(page)
    return page


async def verify(bundle: Path, key_file: Path) -> tuple[int, str]:
    """`roomlogs verify FILE --key PEM` in a process of its own, with no database setting at all."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROOMLOGS_")}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pipeline.cli", "verify", str(bundle), "--key", str(key_file),
        cwd=bundle.parent, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(process.communicate(), 60)
    return process.returncode or 0, out.decode()


async def download(page: Any, button: str, into: Path) -> Path:
    async with page.expect_download() as info:
        await page.get_by_role("button", name=button).click()
    done = await info.value
    path = into / done.suggested_filename
    await done.save_as(path)
    return path


async def test_the_seal_shows_and_the_downloaded_evidence_verifies(
    new_context: Contexts, sealed: Sealed, tmp_path: Path
) -> None:
    world = sealed.world
    day = SEALED_DAY.isoformat()
    page = await signed_in(new_context, world, f"/console/rooms/{ROOM}/?month={day[:7]}")
    await shot(page, "calendar-sealed")
    cell = page.locator(f"td.active a[data-day='{day}'] .seal")
    assert await cell.inner_text() == "Sealed"
    row = await page.locator("table.counts tbody tr").filter(has_text=day).inner_text()
    assert f"with key {sealed.key_id} (8 events)" in row.split("\t")[-1]
    await page.locator(f"td.active a[data-day='{day}']").click()
    await ready(page)
    await shot(page, "day-sealed")
    state = await page.locator("#seal-state").inner_text()
    assert state.startswith("Sealed ") and f"with key {sealed.key_id}" in state
    # the whole day: roomlogs verify says exactly what it proves
    whole = await download(page, "Download evidence: whole day", tmp_path / "whole")
    assert whole.name == f"roomlogs-evidence-{ROOM}-{day}.json"
    code, out = await verify(whole, sealed.key_file)
    assert code == 0, out
    assert out.startswith(f"these 8 events are exactly room {ROOM}'s events of {day} as sealed at ")
    # the events in view: a search of the day, each event with its inclusion proof
    await page.get_by_label("Chat text contains").fill("line 3")
    await page.get_by_role("button", name="Apply filters").click()
    await ready(page)
    assert await page.locator("ol.events li").count() == 1
    some = await download(page, "Download evidence: events in view", tmp_path / "some")
    code, out = await verify(some, sealed.key_file)
    assert code == 0, out
    assert out.startswith(f"these 1 events are among room {ROOM}'s 8 events of {day}")
    assert "Downloaded" in await page.locator(".evidence-status").inner_text()
    # each download is an audited read
    taken = await world.audit("u-owner", action="evidence", outcome="ok")
    assert [a["row_count"] for a in taken] == [8, 1]
    # a changed byte, and the same command refuses it
    tampered = tmp_path / "tampered.json"
    tampered.write_bytes(whole.read_bytes().replace(b"sealed line 5", b"sealed line 6"))
    code, out = await verify(tampered, sealed.key_file)
    assert (code, out.split(":")[0]) == (1, "NOT VERIFIED")
    # today is still open: it says until when, and offers nothing to download
    await open_page(page, f"{world.base_url}/console/rooms/{ROOM}/day/{TODAY.isoformat()}")
    closes = day_start(TODAY + timedelta(days=1)) + timedelta(hours=1)
    assert (await page.locator("#seal-state").inner_text()).startswith(
        f"Open until {closes:%Y-%m-%d %H:%M:%S} UTC"
    )
    assert await page.get_by_role("button", name="Download evidence: whole day").count() == 0
    assert page.errors == []


async def test_the_evidence_views_pass_axe(new_context: Contexts, sealed: Sealed) -> None:
    world = sealed.world
    day = SEALED_DAY.isoformat()
    # bypass_csp only so that the test can inject axe-core
    page = await signed_in(new_context, world, f"/console/rooms/{ROOM}/day/{day}", bypass_csp=True)
    found = {}
    for name, path in {
        "day-sealed": f"/console/rooms/{ROOM}/day/{day}",
        "days-sealed": f"/console/rooms/{ROOM}/day/{day}?days=7",
        "calendar-sealed": f"/console/rooms/{ROOM}/?month={day[:7]}",
    }.items():
        await open_page(page, world.base_url + path)
        await shot(page, f"a11y-{name}")
        violations = await axe_violations(page)
        if violations:
            found[name] = violations
        if name == "days-sealed":  # a range of days: each sealed day has its own download
            assert await page.get_by_role("button", name=f"Download evidence of {day}").count() == 1
    assert not found, found
