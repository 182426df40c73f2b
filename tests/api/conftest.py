"""Fixtures of the query API's tests (helpers live in api_world.py).

`pipeline_world` (once per session) publishes a scripted set of room events with the real publisher, runs
the real ingest loop until they are stored, and opens a pool as the API's own database role. The world is
read-only for the tests that use it; tests that delete use `small_world` (binary COPY, a schema per test).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from typing import Any

import httpx
import pytest
from api_world import (
    NOW,
    SMALL_ROOMS,
    World,
    api_settings,
    drop_schema,
    load_rows,
    new_schema,
    run_pipeline,
    scripted_events,
    small_rows,
)
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette

from pipeline.api import create_app
from pipeline.api.context import ApiState


@pytest.fixture(scope="session")
async def pipeline_world(kafka_bootstrap: str, postgres_dsn: str) -> AsyncIterator[World]:
    schema, api_dsn, pool = await new_schema(postgres_dsn)
    try:
        events, names = scripted_events()
        await run_pipeline(kafka_bootstrap, postgres_dsn, schema, events)
        world = World(schema, postgres_dsn, api_dsn, pool, ids=names)
        for r in await world.fetch("SELECT room_id, count(*) AS n FROM events GROUP BY room_id"):
            world.counts[r["room_id"]] = r["n"]
        yield world
    finally:
        await drop_schema(postgres_dsn, schema, pool)


@pytest.fixture
async def small_world(postgres_dsn: str) -> AsyncIterator[World]:
    """Two private rooms of 30 events each (binary COPY), owners and a moderator; a schema of its own."""
    schema, api_dsn, pool = await new_schema(postgres_dsn)
    world = World(schema, postgres_dsn, api_dsn, pool)
    try:
        conn = await world.admin()
        try:
            for room, (owner, mods) in SMALL_ROOMS.items():
                await conn.execute(
                    "INSERT INTO rooms (room_id, privacy, retention_class, owner_id) "
                    "VALUES ($1, 'private', 'private', $2)",
                    room,
                    owner,
                )
                for m in mods:
                    await conn.execute("INSERT INTO room_moderators VALUES ($1, $2, now())", room, m)
                await load_rows(conn, small_rows(room, 30, NOW - timedelta(hours=2)))
                world.counts[room] = 30
        finally:
            await conn.close()
        yield world
    finally:
        await drop_schema(postgres_dsn, schema, pool)


# --- apps and clients ---------------------------------------------------------------------------------------
AppFactory = Callable[..., Awaitable[tuple[httpx.AsyncClient, ApiState]]]


@pytest.fixture
async def app_factory() -> AsyncIterator[AppFactory]:
    """`client, state = await app_factory(world, **overrides)`: an in-process client of a fresh app."""
    clients: list[httpx.AsyncClient] = []

    async def build(world: World, **overrides: Any) -> tuple[httpx.AsyncClient, ApiState]:
        holder: list[ApiState] = []
        app: Starlette = create_app(
            api_settings(**overrides),
            world.schema,
            pool=world.api_pool,
            registry=CollectorRegistry(),
            state_hook=holder.append,
        )
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api")
        clients.append(client)
        return client, holder[0]

    yield build
    for c in clients:
        await c.aclose()


@pytest.fixture
async def api(app_factory: AppFactory, pipeline_world: World) -> httpx.AsyncClient:
    client, _ = await app_factory(pipeline_world)
    return client
