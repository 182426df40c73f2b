"""What a route handler is given: the process-wide `ApiState` and the per-request `Call`.

`Call` carries the authenticated identity and the helpers every handler uses in the same order:
read the parameters, `authorize_*` (which audits a refusal), query, `audit()` the read, answer.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson
from starlette.requests import Request
from starlette.responses import Response

from pipeline.api import audit
from pipeline.api.access import AccessPolicy, Action, CursorCodec, Grant
from pipeline.api.auth import Identity, TokenVerifier
from pipeline.api.errors import ApiError, Forbidden, Unavailable
from pipeline.api.metrics import ApiMetrics
from pipeline.api.params import REASON_HEADER, Params, check_ident
from pipeline.api.ratelimit import RateLimiter, StreamQuota
from pipeline.api.settings import ApiSettings

JSON_OPTIONS = orjson.OPT_UTC_Z
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
    clock: Callable[[], datetime] = utc_now
    pool: asyncpg.Pool | None = None
    #: Set while the process shuts down: live tails end at their next poll.
    closing: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


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
    request_id: uuid.UUID
    identity: Identity
    route: str
    params: Params

    @property
    def settings(self) -> ApiSettings:
        return self.state.settings

    @property
    def stated_reason(self) -> str | None:
        value = self.request.headers.get(REASON_HEADER)
        return value.strip() if value else None

    def path(self, name: str) -> str:
        return check_ident(str(self.request.path_params[name]), name)

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[asyncpg.Connection]:
        pool = self.state.pool
        if pool is None:
            raise Unavailable("the API is starting or stopping")
        async with pool.acquire() as conn:
            yield conn

    def entry(self, action: str, **fields: Any) -> audit.AuditEntry:
        return audit.AuditEntry(request_id=self.request_id, identity=self.identity, action=action, **fields)

    async def authorize_room(
        self,
        conn: asyncpg.Connection,
        room_id: str,
        action: Action,
        audit_action: str,
        filters: dict[str, Any],
    ) -> Grant:
        """The grant for this room, or the refusal (audited as `denied`, then raised)."""
        try:
            return await self.state.policy.room(conn, self.identity, room_id, action, self.stated_reason)
        except Forbidden as e:
            await audit.record(
                conn,
                self.entry(audit_action, room_id=room_id, filters=filters, outcome="denied", detail=e.code),
            )
            raise

    async def audit(self, conn: asyncpg.Connection, entry: audit.AuditEntry) -> None:
        await audit.record(conn, entry)
