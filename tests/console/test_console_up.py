"""`roomlogs up` serves the room console and prints a sign-in link that works, then stops what it started."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from urllib.parse import unquote, urlsplit

import asyncpg
import httpx
import pytest

from pipeline.console import CONTENT_SECURITY_POLICY

pytestmark = pytest.mark.slow


def test_up_prints_a_sign_in_link_for_a_room_owner(tmp_path: Path, postgres_dsn: str) -> None:
    schema = f"up_{uuid.uuid4().hex[:10]}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROOMLOGS_")}
    env.update({"ROOMLOGS_POSTGRES_DSN": postgres_dsn, "ROOMLOGS_POSTGRES_SCHEMA": schema})
    up = subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", "up", "--work-dir", str(tmp_path / "work")],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    printed: list[str] = []
    try:
        assert up.stdout is not None
        for line in up.stdout:
            printed.append(line)
            if line.startswith("(written to") or up.poll() is not None:
                break
        out = "".join(printed)
        link = re.search(r"^sign_in_link\s+(\S+)$", out, re.MULTILINE)
        assert link, out[-3000:]
        # another shell reaches the same stack with the printed exports, or stack.json while `up` runs
        exports = dict(re.findall(r"^export (ROOMLOGS_\w+)=(\S+)$", out, re.MULTILINE))
        assert exports["ROOMLOGS_POSTGRES_DSN"] == postgres_dsn, out[-3000:]
        assert exports["ROOMLOGS_POSTGRES_SCHEMA"] == schema
        written = json.loads((tmp_path / "work" / "stack.json").read_text())
        assert written["env"] == exports and written["pid"] == up.pid
        parts = urlsplit(link.group(1))
        base = f"{parts.scheme}://{parts.netloc}"
        token = parts.fragment.removeprefix("token=")
        room = unquote(parts.query.removeprefix("next=")).split("/")[3]
        with httpx.Client(base_url=base, timeout=30) as client:
            page = client.get(parts.path)
            assert (
                page.status_code == 200 and page.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
            )
            session = client.post("/v1/session", headers={"Authorization": f"Bearer {token}"})
            assert session.status_code == 201, session.text
            cookie = {"Cookie": session.headers["set-cookie"].split(";", 1)[0]}
            days = client.get(f"/v1/rooms/{room}/days", headers=cookie)
            assert days.status_code == 200, days.text
            assert days.json()["days"], "the owner's room has logs to look at"
    finally:
        up.send_signal(signal.SIGINT)
        try:
            up.wait(90)
        except subprocess.TimeoutExpired:
            up.kill()
            up.wait()
        if up.stdout is not None:
            up.stdout.close()
        asyncio.run(_drop(postgres_dsn, schema))
    assert up.returncode == 0, "".join(printed)[-3000:]
    assert not (tmp_path / "work" / "stack.json").exists(), "`up` removes its stack.json when it stops"
    found = subprocess.run(["pgrep", "-af", str(tmp_path)], capture_output=True, text=True, check=False)
    leftovers = [line for line in found.stdout.splitlines() if "pgrep" not in line]
    assert not leftovers, leftovers


async def _drop(dsn: str, schema: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await conn.execute(f'DROP OWNED BY "{schema}_api"')
        await conn.execute(f'DROP ROLE IF EXISTS "{schema}_api"')
    finally:
        await conn.close()
