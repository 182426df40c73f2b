"""The one place every /v1 request passes through: request ids, who is asking, rate limits, errors to
answers, and the audit of every refusal and error.

`Gate` is ASGI middleware around the router (`create_app` installs it). For each request under /v1/ it:

1. gives the request a server-generated id: `X-Request-Id` on the answer, `request_id` of its audit rows
   and of the deletion request it makes. A client's own `X-Request-Id` is a label, never a key: kept as
   `client_request_id` and echoed as `X-Client-Request-Id` if it is 1..128 visible ASCII characters,
   ignored otherwise;
2. verifies the bearer token or the console's session cookie (401; failed attempts are charged to the
   client address; a session's state change needs its CSRF token, 403: `security.sessions`), charges
   the caller's rate limit (429), matches the route (404, 405). A public route (`RouteSpec.public`: the
   seal keys) needs no token: its rate limit is the client address's;
3. runs the handler, which adds to the request's `Exchange` what it learns (room or user, filters, grant)
   and raises on a refusal;
4. turns any error into the API's JSON error answer and audits it before answering: every 4xx and 5xx,
   with who asked (`anonymous` when no token was verified), the action, room or user, outcome, status
   and error code. 429s go through `FloodTally` (bounded rows under a flood). On a route a person's
   browser is sent to (`GatedRoute.browser`: single sign-on), a request that prefers HTML gets the same
   error as a small page instead (`error_pages`).

When an audit row cannot be written (PostgreSQL down), the refusal is still answered, and the entry is
logged and counted (`ApiState.record_apart`). An error after a streamed answer has started cannot change
its status: the stream is cut off and its own end row says how it ended (see export and tail).
Requests outside /v1/ (/openapi.json, /healthz, /metrics, anything mounted beside the API) pass untouched.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
from starlette.datastructures import Headers, MutableHeaders
from starlette.routing import Match, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pipeline.api.context import ApiState, error_response
from pipeline.api.errors import (
    ApiError,
    Conflict,
    InternalError,
    MethodNotAllowed,
    NotFound,
    QueryTimeout,
    RateLimited,
    Unauthenticated,
    Unavailable,
)
from pipeline.api.security import audit, sessions
from pipeline.api.security.error_pages import error_page, wants_html
from pipeline.events.identifiers import is_identifier
from pipeline.storage import db

log = logging.getLogger("roomlogs.api")

#: The ASGI scope key under which the gate hands the request's `Exchange` to the endpoint.
EXCHANGE = "roomlogs.exchange"
PREFIX = "/v1/"
CLIENT_REQUEST_ID_HEADER = "X-Client-Request-Id"
_CLIENT_REQUEST_ID = re.compile(r"[\x21-\x7e]{1,128}")
#: Path parameters the gate records on the exchange (when they are valid identifiers).
_SUBJECT_PARAMS = ("room_id", "user_id")


@dataclass(frozen=True, slots=True)
class GatedRoute:
    route: Route
    #: access_audit.action of the route's requests
    action: str
    #: answered without a token (`RouteSpec.public`)
    public: bool = False
    #: refusals a page for a browser that prefers HTML (`RouteSpec.browser`)
    browser: bool = False


def client_request_id(raw: str | None) -> str | None:
    """A client's X-Request-Id as the audit keeps it, or None when it is absent or not a plain label."""
    if raw is None:
        return None
    raw = raw.strip(" \t")
    return raw if _CLIENT_REQUEST_ID.fullmatch(raw) else None


class Gate:
    def __init__(self, app: ASGIApp, state: ApiState, routes: Sequence[GatedRoute]) -> None:
        self.app = app
        self.state = state
        self.routes = tuple(routes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        matched, params, partial = self._match(scope)
        if matched is None and partial is None and not _route_path(scope).startswith(PREFIX):
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        exchange = audit.Exchange(
            request_id=uuid.uuid4(),
            client_request_id=client_request_id(Headers(scope=scope).get("x-request-id")),
        )
        scope[EXCHANGE] = exchange
        known = matched or partial
        if known is not None:
            exchange.route = known.route.path
        if matched is not None:
            exchange.action = matched.action
            for name in _SUBJECT_PARAMS:
                value = params.get(name)
                if isinstance(value, str) and is_identifier(value):
                    setattr(exchange, name, value)
        status: int | None = None

        async def answer(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                headers = MutableHeaders(scope=message)
                headers["X-Request-Id"] = str(exchange.request_id)
                if exchange.client_request_id is not None:
                    headers[CLIENT_REQUEST_ID_HEADER] = exchange.client_request_id
                self.state.metrics.observe(
                    exchange.route or audit.UNMATCHED, status, time.perf_counter() - started
                )
            await send(message)

        try:
            if matched is not None and matched.public:
                self.state.limiter.take(_address_key(scope))
            else:
                await self._admit(scope, exchange, matched is not None, partial is not None)
            await self.app(scope, receive, answer)
        except Exception as exc:
            if status is not None:
                raise  # a streamed answer has started: it is cut off, and its end row says how it ended
            error = _as_api_error(exc, exchange)
            await self._audit(exchange, error)
            if matched is not None and matched.browser and wants_html(Headers(scope=scope).get("accept")):
                await error_page(error, str(exchange.request_id))(scope, receive, answer)
            else:
                await error_response(error, exchange.request_id)(scope, receive, answer)
            return
        if status is not None and status >= 400:  # an error answered without an exception
            await self.state.record_apart(
                exchange.entry(
                    http_status=status,
                    grant=exchange.grant,
                    filters=exchange.filters,
                    outcome="error" if status >= 500 else "rejected",
                    detail=f"http_{status}",
                )
            )

    def _match(self, scope: Scope) -> tuple[GatedRoute | None, dict[str, Any], GatedRoute | None]:
        """(the route that matches, its path parameters, a route that matches all but the method)."""
        partial: GatedRoute | None = None
        for gated in self.routes:
            match, child = gated.route.matches(scope)
            if match is Match.FULL:
                return gated, dict(child.get("path_params", {})), None
            if match is Match.PARTIAL and partial is None:
                partial = gated
        return None, {}, partial

    async def _admit(self, scope: Scope, exchange: audit.Exchange, matched: bool, partial: bool) -> None:
        """Who is asking (401), whether they may ask now (429), whether there is such a route (404, 405).
        Unknown paths are answered after authentication, so probing them needs a token and costs tokens."""
        state = self.state
        try:
            identity = await sessions.authenticate(state, scope)  # a bearer token or a console session
        except Unauthenticated as e:
            exchange.unverified_subject = e.unverified_subject
            # failed authentication is charged to the client address, so guessing costs time too
            state.limiter.take(_address_key(scope))
            raise
        exchange.identity = identity
        sessions.check_csrf(scope)
        state.limiter.take(identity.caller_key)
        if not matched:
            raise MethodNotAllowed("method not allowed") if partial else NotFound("no such route")

    async def _audit(self, exchange: audit.Exchange, error: ApiError) -> None:
        if error.denial is not None:
            self.state.metrics.denials.labels(error.denial).inc()
        entry = exchange.refusal(error)
        rows = self.state.floods.note(entry) if isinstance(error, RateLimited) else [entry]
        for row in rows:
            await self.state.record_apart(row)


def _as_api_error(exc: Exception, exchange: audit.Exchange) -> ApiError:
    """The answer to an exception a handler raised: its own, or one for what the database said."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, asyncpg.QueryCanceledError):
        return QueryTimeout("the query ran past its time limit; narrow the range or filters")
    if isinstance(exc, asyncpg.LockNotAvailableError | asyncpg.TransactionRollbackError):
        return Conflict("a concurrent change held the same rows; retry shortly")
    if isinstance(exc, db.CONNECTION_ERRORS):
        return Unavailable("the database is unavailable; retry shortly")
    log.error("request %s to %s failed", exchange.request_id, exchange.route, exc_info=exc)
    return InternalError("unexpected error; quote the request id")


def _address_key(scope: Scope) -> str:
    """The rate limit of a caller who has shown no identity: their client address."""
    client = scope.get("client")
    return f"address:{client[0] if client else 'unknown'}"


def _route_path(scope: Scope) -> str:
    path = str(scope["path"])
    root = str(scope.get("root_path", ""))
    return path[len(root) :] if root and path.startswith(root) else path


# --- tallied 429s ----------------------------------------------------------------------------------------
async def flush_floods(state: ApiState, *, everything: bool = False) -> None:
    """Write the rows of the 429 tallies whose window has closed (all of them with `everything`)."""
    for row in state.floods.drain() if everything else state.floods.due():
        await state.record_apart(row)


async def flush_floods_periodically(state: ApiState) -> None:
    """Runs for the app's lifetime: a caller whose flood stopped still gets its tally row."""
    period = min(state.floods.window_seconds, 5.0)
    while True:
        await asyncio.sleep(period)
        await flush_floods(state)
