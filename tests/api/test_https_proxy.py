"""deploy/caddy/Caddyfile in front of the real API: HTTPS serves the console and the API with their own
headers, plain HTTP only redirects, and the session cookie is Secure.

Runs Debian's caddy (`make caddy-tools`) with the deployment's Caddyfile, its internal CA (the local-use
mode) and the API served by uvicorn on 127.0.0.1. Without caddy the test is skipped, except under CI=true.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from api_world import World, api_settings, bearer
from prometheus_client import CollectorRegistry

from pipeline.api import create_app
from pipeline.api.security.headers import PRIVATE_ANSWER_HEADERS
from pipeline.console import mount
from pipeline.console.pages import SECURITY_HEADERS

CADDYFILE = Path(__file__).resolve().parents[2] / "deploy" / "caddy" / "Caddyfile"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@asynccontextmanager
async def _api(world: World) -> AsyncIterator[int]:
    app = mount(create_app(api_settings(), world.schema, pool=world.api_pool, registry=CollectorRegistry()))
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        assert not task.done(), "the API did not start"
        await asyncio.sleep(0.05)
    try:
        yield port
    finally:
        server.should_exit = True
        await task


@asynccontextmanager
async def _caddy(tmp: Path, api_port: int) -> AsyncIterator[tuple[int, int, Path]]:
    """Caddy with the deployment's Caddyfile: (its HTTP port, its HTTPS port, its CA's root certificate)."""
    caddy = shutil.which("caddy")
    if caddy is None:
        if os.environ.get("CI") == "true":
            pytest.fail("no caddy (make caddy-tools)")
        pytest.skip("no caddy (make caddy-tools)")
    http_port, https_port, health_port = _free_port(), _free_port(), _free_port()
    env = {
        **os.environ,
        "XDG_DATA_HOME": str(tmp / "data"),
        "XDG_CONFIG_HOME": str(tmp / "config"),
        "HOME": str(tmp),
        "HTTP_PORT": str(http_port),
        "HTTPS_PORT": str(https_port),
        "API_UPSTREAM": f"127.0.0.1:{api_port}",
        "CONSOLE_SITE": "localhost",
        "HEALTH_PORT": str(health_port),
    }
    command = [caddy, "run", "--config", str(CADDYFILE), "--adapter", "caddyfile"]
    with (tmp / "caddy.log").open("ab") as log:
        process = subprocess.Popen(command, env=env, stdout=log, stderr=log)  # noqa: ASYNC220 (runs on)
    root = tmp / "data" / "caddy" / "pki" / "authorities" / "local" / "root.crt"
    try:
        deadline = time.monotonic() + 30
        while not root.exists() or not (_listening(https_port) and _listening(health_port)):
            assert process.poll() is None, (tmp / "caddy.log").read_text()
            assert time.monotonic() < deadline, "caddy did not start in 30 s"
            await asyncio.sleep(0.1)
        async with httpx.AsyncClient(timeout=10) as http:  # the container's health check
            assert (await http.get(f"http://127.0.0.1:{health_port}/healthz")).json() == {"status": "ok"}
            assert (await http.get(f"http://127.0.0.1:{health_port}/v1/me/rooms")).status_code == 404
        yield http_port, https_port, root
    finally:
        process.terminate()
        process.wait(10)


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


async def test_caddy_serves_console_and_api_over_https_and_redirects_http(
    app_factory: Any, small_world: World, tmp_path: Path
) -> None:
    async with _api(small_world) as api_port, _caddy(tmp_path, api_port) as (http_port, https_port, root):
        base = f"https://localhost:{https_port}"
        async with httpx.AsyncClient(verify=ssl.create_default_context(cafile=root), timeout=10) as https:
            page = await https.get(base + "/console/")
            assert page.status_code == 200 and "<html" in page.text.lower()
            assert page.http_version in ("HTTP/1.1", "HTTP/2")
            for name, value in SECURITY_HEADERS.items():
                assert page.headers.get(name) == value, name
            assert page.headers["strict-transport-security"].startswith("max-age=")
            assert "server" not in page.headers
            rooms = await https.get(base + "/v1/me/rooms", headers=bearer("u-owner"))
            assert rooms.status_code == 200 and "room-a" in rooms.text
            for name, value in PRIVATE_ANSWER_HEADERS.items():
                assert rooms.headers.get(name) == value, name
            # a console sign-in through the proxy: the same-origin check sees the public origin, the cookie
            # is Secure
            signed_in = await https.post(
                base + "/v1/session", headers={**bearer("u-owner"), "Origin": f"https://localhost:{https_port}"}
            )
            assert signed_in.status_code == 201, signed_in.text
            cookie = signed_in.headers["set-cookie"]
            assert "Secure" in cookie and cookie.startswith("__Host-")
        async with httpx.AsyncClient(timeout=10) as http:
            plain = await http.get(f"http://localhost:{http_port}/console/")
            assert plain.status_code in (301, 308), plain.text
            # to HTTPS on the standard port (the one the deployment publishes)
            assert plain.headers["location"] == "https://localhost/console/"
            assert not plain.content or "room" not in plain.text
