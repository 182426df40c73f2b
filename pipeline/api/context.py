"""What a route handler is given: the process-wide `ApiState` and the per-request `Call`.

`Call` carries the request's `Exchange` (its ids and the identity the gate verified) and the helpers every
handler uses in the same order: read the parameters, say what is asked (`asking`), `authorize_*`, query,
`audit()` the read, answer. A handler only raises on a refusal: the gate answers and audits it.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson
from starlette.requests import Request
from starlette.responses import Response

from pipeline.api.errors import ApiError, InvalidBody, Unavailable
from pipeline.api.metrics import ApiMetrics
from pipeline.api.params import REASON_HEADER, Params, check_ident
from pipeline.api.security import audit
from pipeline.api.security.access import AccessPolicy, Action, Grant
from pipeline.api.security.auth import Identity, TokenVerifier
from pipeline.api.security.cursors import CursorCodec
from pipeline.api.security.floods import FloodTally
from pipeline.api.security.oidc import OidcClient
from pipeline.api.security.ratelimit import RateLimiter, StreamQuota
from pipeline.api.settings import ApiSettings
from pipeline.storage import db

log = logging.getLogger("roomlogs.api.audit")

JSON_OPTIONS = orjson.OPT_UTC_Z
#: ASGI scope key: the ticket or case id a staff member stated for their console session
#: (set by `pipeline.api.security.sessions.authenticate`); stands in for a missing X-Access-Reason header.
SESSION_REASON = "roomlogs.session_reason"
_PG_UUID: type = type(asyncpg.pgproto.pgproto.UUID(bytes(16)))  # asyncpg's own UUID, unknown to orjson


def json_default(value: Any) -> Any:
    if isinstance(value, _PG_UUID | uuid.UUID):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def dumps(value: Any) -> bytes:
    """JSON as the API writes it: orjson, UTC times with a Z, UUIDs as strings."""
    return orjson.dumps(value, default=json_default, option=JSON_OPTIONS)


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(slots=True)
class ApiState:
    """Everything the routes share in one process; built once by `create_app`."""

    settings: ApiSettings
    schema: str
    verifier: TokenVerifier
    policy: AccessPolicy
    cursors: CursorCodec
    limiter: RateLimiter
    streams: StreamQuota
    metrics: ApiMetrics
    floods: FloodTally
    clock: Callable[[], datetime] = utc_now
    pool: asyncpg.Pool | None = None
    #: Single sign-on with the identity provider (None: ROOMLOGS_API_OIDC_ISSUER is not set).
    oidc: OidcClient | None = None
    #: Set while the process shuts down: live tails end at their next poll.
    closing: bool = False

    async def record_apart(self, entry: audit.AuditEntry) -> bool:
        """Append one audit row on a connection of its own; never raises.

        For rows that must not turn an answer into a failure (a refusal, the end of a stream): when the
        row cannot be written it goes to the log instead, and roomlogs_api_audit_failures_total counts it.
        """
        try:
            await self._append(entry)
        except Exception:
            self.metrics.audit_failures.labels(entry.outcome).inc()
            log.exception(
                "audit row not written: request %s action %s outcome %s detail %s status %s subject %s "
                "room %s user %s occurrences %d",
                entry.request_id,
                entry.action,
                entry.outcome,
                entry.detail,
                entry.http_status,
                entry.caller[0],
                entry.room_id,
                entry.user_id,
                entry.occurrences,
            )
            return False
        return True

    async def _append(self, entry: audit.AuditEntry) -> None:
        pool = self.pool
        if pool is None:
            raise Unavailable("the API is starting or stopping")
        async with pool.acquire(timeout=self.settings.statement_timeout_seconds) as conn:
            await audit.record(conn, entry)


class JSONResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return dumps(content)


def error_response(error: ApiError, request_id: uuid.UUID | str) -> JSONResponse:
    return JSONResponse(error.body(str(request_id)), status_code=error.status, headers=error.headers())


@dataclass(slots=True)
class Call:
    request: Request
    state: ApiState
    exchange: audit.Exchange
    params: Params

    @property
    def settings(self) -> ApiSettings:
        return self.state.settings

    @property
    def request_id(self) -> uuid.UUID:
        return self.exchange.request_id

    @property
    def identity(self) -> Identity:
        identity = self.exchange.identity
        assert identity is not None, "the gate verifies the caller before any handler runs"
        return identity

    @property
    def route(self) -> str:
        return self.exchange.route or audit.UNMATCHED

    @property
    def stated_reason(self) -> str | None:
        """X-Access-Reason, or the case a staff member stated for their console session."""
        value = self.request.headers.get(REASON_HEADER)
        if value:
            return value.strip()
        reason = self.request.scope.get(SESSION_REASON)
        return reason if isinstance(reason, str) else None

    def path(self, name: str) -> str:
        return check_ident(str(self.request.path_params[name]), name)

    def asking(self, filters: dict[str, Any]) -> None:
        """What the request asks for, as its audit rows (refusals included) record it."""
        self.exchange.filters = filters

    def granted(self, grant: Grant) -> Grant:
        self.exchange.grant = grant
        return grant

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[asyncpg.Connection]:
        pool = self.state.pool
        if pool is None:
            raise Unavailable("the API is starting or stopping")
        async with pool.acquire() as conn:
            try:
                yield conn
            except asyncpg.InterfaceError as e:
                # leaving a transaction after PostgreSQL went away raises InterfaceError: an outage (503),
                # not a bug (500), when the connection is dead
                if await db.gone(e, conn):
                    raise Unavailable("the database is unavailable; retry shortly") from e
                raise

    @asynccontextmanager
    async def opening_stream(self) -> AsyncIterator[asyncpg.Connection]:
        """A connection to open a stream on (an export, a live tail) and a slot of the caller's stream
        quota (TooManyStreams when none is free). The slot stays taken by the stream, which releases it
        when it ends; here only when opening the stream fails."""
        caller = self.identity.caller_key
        self.state.streams.acquire(caller)
        try:
            async with self.connection() as conn:
                yield conn
        except BaseException:
            self.state.streams.release(caller)
            raise

    def entry(self, action: str | None = None, *, http_status: int = 200, **fields: Any) -> audit.AuditEntry:
        """A row about this request; `action` defaults to the route's."""
        if action is not None:
            fields["action"] = action
        return self.exchange.entry(http_status=http_status, **fields)

    async def authorize_room(
        self, conn: asyncpg.Connection, room_id: str, action: Action, filters: dict[str, Any]
    ) -> Grant:
        """The grant for this room, or the refusal (raised; the gate audits it)."""
        self.asking(filters)
        return self.granted(
            await self.state.policy.room(conn, self.identity, room_id, action, self.stated_reason)
        )

    async def audit(self, conn: asyncpg.Connection, entry: audit.AuditEntry) -> None:
        await audit.record(conn, entry)

    async def json_body(self, limit: int) -> Any:
        """The request's JSON body (None when it is empty), read no further than `limit` bytes; InvalidBody
        when it is longer or not JSON."""
        chunks: list[bytes] = []
        size = 0
        async for chunk in self.request.stream():
            size += len(chunk)
            if size > limit:
                raise InvalidBody(f"the body may be at most {limit} bytes")
            chunks.append(chunk)
        raw = b"".join(chunks)
        if not raw.strip():
            return None
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise InvalidBody("the body must be a JSON object") from None
