"""Fuzz the API from its own OpenAPI description: whatever the document allows gets no 5xx.

A real server (uvicorn, in a thread, on 127.0.0.1) answers as support staff with a ticket, so requests
reach the database; the world is two small rooms (binary COPY) in a schema of this module's own. The
number of examples per operation is bounded so the whole module runs in well under a minute or two.

Schemathesis generates both documented and undocumented (negative) values. Beyond its defaults: a `uuid`
is any UUID at all (every version nibble and variant, UUIDv7 times up to the year 10889), and every
deletion and erasure carries the same X-Request-Id, as a client retrying with its own id would.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import schemathesis
import uvicorn
from api_world import NOW, SMALL_ROOMS, api_settings, drop_schema, load_rows, new_schema, small_rows, staff
from hypothesis import HealthCheck, settings
from prometheus_client import CollectorRegistry
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import content_type_conformance, status_code_conformance
from strategies import any_uuid

from pipeline.api import create_app
from pipeline.api.openapi import document
from pipeline.settings import Secret
from pipeline.storage import db

schemathesis.openapi.format("uuid", any_uuid().map(str))
SETTINGS = api_settings(tail_max_seconds=0.3, tail_poll_seconds=0.1)
schema = schemathesis.openapi.from_dict(document(SETTINGS))
HEADERS = staff()
REUSED_REQUEST_ID = str(uuid.uuid4())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def base_url(postgres_dsn: str) -> Iterator[str]:
    port = _free_port()
    ready = threading.Event()
    failure: list[BaseException] = []
    holder: dict[str, Any] = {}

    async def serve() -> None:
        name, api_dsn, pool = await new_schema(postgres_dsn)
        try:
            conn = await db.connect(postgres_dsn, name)
            try:
                for room, (owner, _mods) in SMALL_ROOMS.items():
                    await conn.execute(
                        "INSERT INTO rooms (room_id, privacy, retention_class, owner_id) "
                        "VALUES ($1, 'private', 'private', $2)",
                        room,
                        owner,
                    )
                    await load_rows(conn, small_rows(room, 200, NOW - timedelta(hours=5)))
            finally:
                await conn.close()
            app = create_app(
                SETTINGS.replace(postgres_dsn=Secret(api_dsn)), name, registry=CollectorRegistry()
            )
            server = uvicorn.Server(
                uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
            )
            holder["server"] = server
            task = asyncio.create_task(server.serve())
            for _ in range(3000):  # uvicorn has no "started" event to wait on
                if server.started or task.done():
                    break
                await asyncio.sleep(0.02)
            ready.set()
            await task
        finally:
            await drop_schema(postgres_dsn, name, pool)

    def run() -> None:
        try:
            asyncio.run(serve())
        except BaseException as e:
            failure.append(e)
        finally:
            ready.set()

    thread = threading.Thread(target=run, name="fuzz-api-server", daemon=True)
    thread.start()
    assert ready.wait(60), "the API server did not start"
    if failure:
        raise failure[0]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        holder["server"].should_exit = True
        thread.join(30)
        if failure:
            raise failure[0]


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_documented_request_gets_a_server_error(case: schemathesis.Case, base_url: str) -> None:
    started = time.monotonic()
    headers = {**HEADERS, "X-Request-Id": REUSED_REQUEST_ID} if case.method == "POST" else HEADERS
    response = case.call_and_validate(
        base_url=base_url,
        headers=headers,
        timeout=30,
        checks=[not_a_server_error, status_code_conformance, content_type_conformance],
    )
    assert time.monotonic() - started < 30
    assert response.headers["x-request-id"] != [REUSED_REQUEST_ID]
