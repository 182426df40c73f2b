"""The query API as a Starlette app: routes, the gate every /v1 request passes, start-up and shutdown.

The routes are `pipeline.api.route_table.ROUTES`; /openapi.json describes exactly those.

`create_app(settings, schema)` is called once by `roomlogs api serve` (and by tests, which may hand in a
pool and a registry). Every /v1 request passes through `pipeline.api.security.gate.Gate`: request id,
bearer token, rate limit, route, one JSON error shape, the audit of every refusal and error, metrics; the
handler only does its own work. Every /v1 answer, refusals included, is `no-store` and `nosniff`
(`pipeline.api.security.headers.PrivateAnswers`). Unauthenticated routes: /openapi.json, /healthz,
/metrics, and the /v1 routes marked public (/v1/seal-keys), which the gate still rate-limits (by client
address).

Start-up opens a pool to the API's own database role and refuses to run when that role could edit or
delete logs or audit rows (`queries.role.check_role`, unless `allow_privileged_db_role`), and starts the
flush of 429 tallies.
Shutdown ends live tails, writes the open 429 tallies, then closes the pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import asyncpg
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from pipeline.api.context import ApiState, Call, JSONResponse, error_response
from pipeline.api.errors import ApiError, InternalError, MethodNotAllowed, NotFound
from pipeline.api.metrics import ApiMetrics
from pipeline.api.openapi import document
from pipeline.api.params import Params
from pipeline.api.queries.role import check_role
from pipeline.api.route_table import ROUTES, RouteSpec
from pipeline.api.security import gate
from pipeline.api.security.access import AccessPolicy
from pipeline.api.security.auth import TokenVerifier
from pipeline.api.security.cursors import CursorCodec
from pipeline.api.security.floods import FloodTally
from pipeline.api.security.headers import PrivateAnswers
from pipeline.api.security.oidc import OidcClient
from pipeline.api.security.ratelimit import RateLimiter, StreamQuota
from pipeline.api.settings import ApiSettings
from pipeline.errors import ConfigurationError
from pipeline.storage import db
from pipeline.storage.migrate import SchemaNotReadyError, check_schema

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
        oidc=OidcClient.from_settings(settings, settings.cursor_secret()),
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
            if state.oidc is not None:
                await state.oidc.aclose()

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
        gate.GatedRoute(
            Route(spec.path, _endpoint(state, spec), methods=[spec.method]),
            spec.action,
            spec.public,
            spec.browser,
        )
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
        # outermost: the gate's own refusals are private answers too
        middleware=[Middleware(PrivateAnswers), Middleware(gate.Gate, state=state, routes=gated)],
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
async def _check_schema(conn: asyncpg.Connection, schema: str) -> None:
    """SchemaNotReadyError unless `schema` has every migration this code has (pipeline.storage.migrate)."""
    try:
        await check_schema(conn, schema)
    except asyncpg.InsufficientPrivilegeError:  # the grant is migration 0028's: a schema without it is behind
        raise SchemaNotReadyError(
            f"PostgreSQL schema {schema!r} is behind this code (without migration 0028 at least): run "
            "`roomlogs migrate` first (or check ROOMLOGS_POSTGRES_SCHEMA)"
        ) from None


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
            await _check_schema(conn, schema)
    except BaseException:
        await pool.close()
        raise
    return pool
