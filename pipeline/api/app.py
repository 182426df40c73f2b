"""The query API as a Starlette app: routes, the gate every /v1 request passes, start-up and shutdown.

The routes are `pipeline.api.endpoints.ROUTES`; /openapi.json describes exactly those.

`create_app(settings, schema)` is called once by `roomlogs api serve` (and by tests, which may hand in a
pool and a registry). Every /v1 request passes through `pipeline.api.gate.Gate`: request id, bearer token,
rate limit, route, one JSON error shape, the audit of every refusal and error, metrics; the handler only
does its own work. Unauthenticated routes: /openapi.json, /healthz, /metrics.

Start-up opens a pool to the API's own database role and refuses to run when that role could edit or
delete logs or audit rows (unless `allow_privileged_db_role`), and starts the flush of 429 tallies.
Shutdown ends live tails, writes the open 429 tallies, then closes the pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from pipeline.api import gate
from pipeline.api.access import AccessPolicy, CursorCodec
from pipeline.api.auth import TokenVerifier
from pipeline.api.context import ApiState, Call, JSONResponse, error_response
from pipeline.api.endpoints import ROUTES, RouteSpec
from pipeline.api.errors import ApiError, InternalError, MethodNotAllowed, NotFound
from pipeline.api.floods import FloodTally
from pipeline.api.metrics import ApiMetrics
from pipeline.api.openapi import document
from pipeline.api.params import Params
from pipeline.api.ratelimit import RateLimiter, StreamQuota
from pipeline.api.settings import ApiSettings
from pipeline.errors import ConfigurationError
from pipeline.storage import db

log = logging.getLogger("roomlogs.api")


def create_app(
    settings: ApiSettings,
    schema: str,
    *,
    pool: asyncpg.Pool | None = None,
    registry: CollectorRegistry | None = None,
    state_hook: Callable[[ApiState], None] | None = None,
) -> Starlette:
    """The ASGI app. With `pool`, the app uses it (and does not close it); otherwise it opens its own."""
    state = ApiState(
        settings=settings,
        schema=schema,
        verifier=TokenVerifier(settings),
        policy=AccessPolicy(settings.staff_reason_pattern),
        cursors=CursorCodec(settings.cursor_secret(), settings.cursor_ttl_seconds),
        limiter=RateLimiter(settings.rate_limit_per_second, settings.rate_limit_burst),
        streams=StreamQuota(settings.max_streams_per_caller),
        metrics=ApiMetrics(registry if registry is not None else CollectorRegistry()),
        floods=FloodTally(settings.rate_limited_audit_window_seconds),
        pool=pool,
    )
    if state_hook is not None:
        state_hook(state)
    openapi_doc = document(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        own_pool = state.pool is None
        if own_pool:
            state.pool = await open_pool(settings, schema)
        flusher = asyncio.create_task(gate.flush_floods_periodically(state))
        try:
            yield
        finally:
            state.closing = True
            flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await flusher
            await gate.flush_floods(state, everything=True)
            if own_pool and state.pool is not None:
                pool_, state.pool = state.pool, None
                await pool_.close()

    async def openapi(request: Request) -> Response:
        return JSONResponse(openapi_doc)

    async def healthz(request: Request) -> Response:
        pool = state.pool
        if pool is None:
            return JSONResponse({"status": "unavailable"}, status_code=503)
        try:
            async with pool.acquire() as conn:
                await conn.fetchval("SELECT 1")
        except db.CONNECTION_ERRORS:
            return JSONResponse({"status": "unavailable"}, status_code=503)
        return JSONResponse({"status": "ok"})

    async def metrics(request: Request) -> Response:
        return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    gated = [
        gate.GatedRoute(Route(spec.path, _endpoint(state, spec), methods=[spec.method]), spec.action)
        for spec in ROUTES
    ]
    table = [g.route for g in gated]
    table += [Route("/openapi.json", openapi, methods=["GET"]), Route("/healthz", healthz, methods=["GET"])]
    if settings.metrics_path:
        table.append(Route(settings.metrics_path, metrics, methods=["GET"]))

    async def http_error(request: Request, exc: Exception) -> Response:
        status = getattr(exc, "status_code", 500)
        error: ApiError = (
            NotFound("no such route")
            if status == 404
            else MethodNotAllowed("method not allowed")
            if status == 405
            else InternalError("unexpected error")
        )
        state.metrics.observe("unmatched", error.status, 0.0)
        return error_response(error, uuid.uuid4())

    app = Starlette(
        routes=table,
        lifespan=lifespan,
        middleware=[Middleware(gate.Gate, state=state, routes=gated)],
        exception_handlers={HTTPException: http_error},
    )
    app.state.api = state
    return app


def _endpoint(state: ApiState, spec: RouteSpec) -> Callable[[Request], Awaitable[Response]]:
    """The route's endpoint: the gate has verified the caller; the handler's errors go back to the gate."""

    async def endpoint(request: Request) -> Response:
        exchange = request.scope[gate.EXCHANGE]
        return await spec.handler(Call(request, state, exchange, Params(request.query_params, state.clock())))

    return endpoint


# --- database ------------------------------------------------------------------------------------------
async def open_pool(settings: ApiSettings, schema: str) -> asyncpg.Pool:
    """A pool on the API's role, with the API's statement timeout; refuses a role that could edit logs."""
    dsn = settings.postgres_dsn.get()
    if not dsn:
        raise ConfigurationError(
            f"no DSN for the API: set ROOMLOGS_API_POSTGRES_DSN to connect as the role {schema}_api "
            f"(created by `roomlogs migrate`; give it a password with ALTER ROLE {schema}_api PASSWORD '...')"
        )
    server_settings = {
        **db.server_settings(schema),
        "application_name": "roomlogs-api",
        "statement_timeout": str(int(settings.statement_timeout_seconds * 1000)),
        "idle_in_transaction_session_timeout": str(int(settings.long_statement_timeout_seconds * 1000)),
    }
    try:
        pool = await asyncpg.create_pool(
            dsn,
            min_size=1,
            max_size=settings.postgres_pool_size,
            server_settings=server_settings,
            init=db.init_connection,
        )
    except db.CONNECT_FAILURES as e:
        raise db.connect_failure(e, "ROOMLOGS_API_POSTGRES_DSN") from e
    assert pool is not None
    try:
        async with pool.acquire() as conn:
            await check_role(conn, schema, allow_privileged=settings.allow_privileged_db_role)
    except BaseException:
        await pool.close()
        raise
    return pool


async def check_role(conn: asyncpg.Connection, schema: str, *, allow_privileged: bool) -> None:
    """ConfigurationError unless 0003 is applied and the role can only read logs and append audit rows."""
    facts: Any = await conn.fetchrow(
        """SELECT current_user AS role,
                  (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) AS superuser,
                  to_regclass('access_audit') IS NOT NULL AS migrated""",
    )
    if not facts["migrated"]:
        raise ConfigurationError(
            f"schema {schema!r} has no access_audit table: run `roomlogs migrate` first "
            "(or check ROOMLOGS_POSTGRES_SCHEMA and the database in ROOMLOGS_API_POSTGRES_DSN)"
        )
    powers = await conn.fetchrow(
        """SELECT has_table_privilege('events', 'UPDATE') OR has_table_privilege('events', 'DELETE')
                  OR has_table_privilege('events', 'TRUNCATE') AS edit_logs,
                  has_table_privilege('access_audit', 'UPDATE')
                  OR has_table_privilege('access_audit', 'DELETE')
                  OR has_table_privilege('access_audit', 'TRUNCATE') AS edit_audit,
                  has_table_privilege('events', 'SELECT') AS read_logs,
                  has_table_privilege('access_audit', 'INSERT') AS append_audit"""
    )
    assert powers is not None
    if not (powers["read_logs"] and powers["append_audit"]):
        raise ConfigurationError(
            f"role {facts['role']!r} cannot read events or append to access_audit: set "
            f"ROOMLOGS_API_POSTGRES_DSN to connect as {schema}_api"
        )
    if (facts["superuser"] or powers["edit_logs"] or powers["edit_audit"]) and not allow_privileged:
        raise ConfigurationError(
            f"role {facts['role']!r} may edit or delete logs or audit rows: set ROOMLOGS_API_POSTGRES_DSN to "
            f"connect as {schema}_api (or ROOMLOGS_API_ALLOW_PRIVILEGED_DB_ROLE=true for local development)"
        )
