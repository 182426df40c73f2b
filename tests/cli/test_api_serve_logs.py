"""`roomlogs api serve` logs like every roomlogs process, and its access log never carries a query string
(a chat search `q=` is room content)."""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx
import jwt
import orjson

from pipeline.stack import free_port
from pipeline.storage import db
from pipeline.storage.migrate import migrate

SEARCH = "meet me behind the fountain"
JWT_KEY = "k" * 48


async def api_role_dsn(admin_dsn: str, schema: str) -> str:
    """Migrate `schema`, give its API role a password, return a DSN connecting as that role."""
    password = secrets.token_hex(16)
    conn = await db.connect(admin_dsn, schema)
    try:
        await migrate(conn, schema)
        await conn.execute(f"ALTER ROLE \"{schema}_api\" PASSWORD '{password}'")
    finally:
        await conn.close()
    parts = urlsplit(admin_dsn)
    netloc = f"{schema}_api:{password}@{parts.netloc.rpartition('@')[2]}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def test_api_logs_are_json_lines_and_the_access_log_has_no_query_strings(
    postgres_dsn: str, pg_schema: str, tmp_path: Path
) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROOMLOGS_")}
    env.update(
        {
            "ROOMLOGS_LOG_FORMAT": "json",
            "ROOMLOGS_POSTGRES_SCHEMA": pg_schema,
            "ROOMLOGS_API_POSTGRES_DSN": asyncio.run(api_role_dsn(postgres_dsn, pg_schema)),
            "ROOMLOGS_API_JWT_KEY": JWT_KEY,
            "ROOMLOGS_API_JWT_ALGORITHM": "HS256",
            "ROOMLOGS_API_CURSOR_KEY": "c" * 48,
            "ROOMLOGS_API_PORT": str(port),
        }
    )
    stderr_path = tmp_path / "api.stderr"
    with open(stderr_path, "wb") as stderr:
        server = subprocess.Popen(
            [sys.executable, "-m", "pipeline.cli", "api", "serve"], env=env, stderr=stderr, cwd=tmp_path
        )
    try:
        now = int(time.time())
        token = jwt.encode({"sub": "u-1", "iat": now, "exp": now + 300}, JWT_KEY, algorithm="HS256")
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
            deadline = time.monotonic() + 60
            while True:
                assert server.poll() is None, stderr_path.read_text()[-3000:]
                try:
                    if http.get("/healthz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, "the API never became healthy"
                time.sleep(0.2)
            answer = http.get(
                "/v1/rooms/room-1/events",
                params={"q": SEARCH, "actor": "u-2"},
                headers={"Authorization": f"Bearer {token}"},
            )
            assert answer.status_code == 403  # u-1 owns nothing: refused, and still logged
            assert http.get("/openapi.json", params={"q": SEARCH}).status_code == 200
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(60)
    text = stderr_path.read_text()
    assert "fountain" not in text and "u-2" not in text
    assert "color_message" not in text and "\x1b[" not in text  # no terminal colour codes
    lines = [orjson.loads(line) for line in text.splitlines() if line.strip()]  # every line is JSON
    assert {line["process"] for line in lines} == {"api"}
    assert all(list(line)[:6] == ["ts", "level", "logger", "msg", "process", "pid"] for line in lines)
    access = [line["msg"] for line in lines if line["logger"] == "uvicorn.access"]
    assert any('"GET /v1/rooms/room-1/events HTTP/1.1" 403' in msg for msg in access), access
    assert any('"GET /openapi.json HTTP/1.1" 200' in msg for msg in access), access
    assert any(line["logger"] == "uvicorn.error" for line in lines), "uvicorn's own lines, in the same shape"
