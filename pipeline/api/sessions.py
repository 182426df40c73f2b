"""Who is calling, for every /v1 request: a bearer token, or a console session made from one.

`authenticate()` is called by the API's request wrapper (`app._endpoint`) before anything else:
- with an ``Authorization`` header, the bearer token decides (`TokenVerifier`), as for every API client;
- otherwise the console's session cookie: the session must exist, not be signed out, not be expired, and a
  request that changes state must carry the session's CSRF token (``X-CSRF-Token``) and come from this
  origin. Refusals are ApiErrors (401 `session_expired`, 403 `csrf_failed`) like any other.

A session is made by exchanging a token from the platform's identity provider (``POST /v1/session`` with
``Authorization: Bearer``): the same verification, then a random 256-bit session id in an HttpOnly,
SameSite=Strict cookie. PostgreSQL keeps only its SHA-256 (`console_sessions`, migration 0007). The CSRF
token is derived from the session id (HMAC), so it is never stored and dies with the session.

Support staff state their ticket or case id once per session (``PUT /v1/session/reason``); it then stands
in for ``X-Access-Reason`` on every request they make, live tails and downloads included (an EventSource or
a download link cannot send headers), and the access audit records it as if they had sent the header.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import orjson
from starlette.datastructures import Headers
from starlette.requests import Request, cookie_parser
from starlette.responses import Response
from starlette.types import Scope

from pipeline.api.auth import Identity, IdentityKind
from pipeline.api.context import SESSION_REASON, ApiState, Call, JSONResponse
from pipeline.api.errors import (
    ApiError,
    CsrfFailed,
    Forbidden,
    InvalidBody,
    SessionExpired,
    Unauthenticated,
    Unavailable,
)

__all__ = [
    "COOKIE_NAME",
    "CSRF_HEADER",
    "ConsoleSession",
    "authenticate",
    "check_csrf",
    "current_session",
    "database_refusal",
    "identity_proof",
    "session_is_live",
]

#: The ASGI scope key of the request's console session (set by `authenticate`).
SESSION = "roomlogs.console_session"
COOKIE_NAME = "roomlogs_session"
#: The cookie's name when it is Secure: the __Host- prefix also pins it to this host and path "/".
SECURE_COOKIE_NAME = "__Host-roomlogs_session"
CSRF_HEADER = "x-csrf-token"
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_SESSION_ID_BYTES = 32
_MAX_BODY_BYTES = 1024


@dataclass(frozen=True, slots=True)
class ConsoleSession:
    session_hash: bytes
    subject: str
    kind: IdentityKind
    staff_reason: str | None
    expires_at: datetime
    csrf_token: str

    @property
    def identity(self) -> Identity:
        return Identity(self.subject, self.kind)


def current_session(request: Request) -> ConsoleSession | None:
    """The console session this request was authenticated by (None: a bearer token)."""
    session = request.scope.get(SESSION)
    return session if isinstance(session, ConsoleSession) else None


def cookie_name(state: ApiState) -> str:
    return SECURE_COOKIE_NAME if state.settings.session_cookie_secure else COOKIE_NAME


async def authenticate(state: ApiState, scope: Scope) -> Identity:
    """The identity of a /v1 request (see the module docstring); raises the refusal otherwise.

    Called by the gate for every /v1 request. A session found here is kept in the request's scope for
    `check_csrf` and the handlers (`current_session`), and its stated case stands in for X-Access-Reason.
    """
    headers = Headers(scope=scope)
    authorization = headers.get("authorization")
    raw = cookie_parser(headers.get("cookie", "")).get(cookie_name(state))
    if authorization or not raw:
        return state.verifier.identify(authorization)
    session = await _load(state, raw)
    if session is None:
        raise SessionExpired("your console session has ended; sign in again")
    scope[SESSION] = session
    scope[SESSION_REASON] = session.staff_reason
    return session.identity


def identity_proof(state: ApiState, request: Request) -> tuple[str, str]:
    """What shows the database who is asking (migration 0010): ("bearer", the token as sent) or ("session",
    the session cookie's value), the same choice `authenticate` made. The deletion functions verify it
    themselves rather than take the API's word for the caller."""
    headers = request.headers
    authorization = headers.get("authorization")
    raw = cookie_parser(headers.get("cookie", "")).get(cookie_name(state))
    if authorization or not raw:
        return "bearer", (authorization or "").strip().partition(" ")[2].strip()
    return "session", raw


def database_refusal(e: asyncpg.PostgresError) -> ApiError:
    """The API's answer when the database's own identity check (migration 0010) refuses a proof the API
    accepted (SQLSTATE 28000: its key differs from the API's) or has no key (55000). A setup problem, not
    the caller's: 503 with the fix."""
    if isinstance(e, asyncpg.ObjectNotInPrerequisiteStateError):
        return Unavailable("the database has no key to verify identities with: run `roomlogs api trust-key`")
    return Unavailable(
        "the database does not accept the token the API accepted: run `roomlogs api trust-key` with the "
        "API's token settings"
    )


def check_csrf(scope: Scope) -> None:
    """A state change on a session cookie must carry the session's CSRF token and come from this origin."""
    session = scope.get(SESSION)
    if not isinstance(session, ConsoleSession) or scope.get("method") in _SAFE_METHODS:
        return
    headers = Headers(scope=scope)
    given = headers.get(CSRF_HEADER, "")
    if not hmac.compare_digest(given.encode(), session.csrf_token.encode()):
        raise CsrfFailed("this change needs the console's CSRF token (X-CSRF-Token)")
    _check_same_origin(headers)


async def session_is_live(conn: asyncpg.Connection, session: ConsoleSession) -> bool:
    """Still signed in (for streams that outlive the request that opened them)."""
    return bool(
        await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM console_sessions WHERE session_hash = $1 "
            "AND ended_at IS NULL AND expires_at > clock_timestamp())",
            session.session_hash,
        )
    )


async def _load(state: ApiState, raw: str) -> ConsoleSession | None:
    secret = _decode_id(raw)
    if secret is None:
        return None
    pool = state.pool
    if pool is None:
        raise Unavailable("the API is starting or stopping")
    digest = hashlib.sha256(secret).digest()
    async with pool.acquire() as conn:
        row = await conn.fetchrow(
            """SELECT subject, identity_type, staff_reason, expires_at FROM console_sessions
                WHERE session_hash = $1 AND ended_at IS NULL AND expires_at > clock_timestamp()""",
            digest,
        )
    if row is None:
        return None
    return ConsoleSession(
        digest, row["subject"], IdentityKind(row["identity_type"]), row["staff_reason"], row["expires_at"],
        _csrf_token(secret),
    )  # fmt: skip


def _check_same_origin(headers: Headers) -> None:
    """Refuse a state change a browser says came from another site (Sec-Fetch-Site / Origin)."""
    site = headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        raise CsrfFailed("changes must come from the console's own pages")
    origin = headers.get("origin")
    if origin is not None and urlsplit(origin).netloc != headers.get("host", ""):
        raise CsrfFailed("changes must come from the console's own origin")


def _csrf_token(secret: bytes) -> str:
    return _b64(hmac.new(secret, b"roomlogs console csrf", hashlib.sha256).digest())


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _decode_id(raw: str) -> bytes | None:
    if len(raw) != 43:  # 32 bytes, unpadded base64url
        return None
    try:
        secret = base64.urlsafe_b64decode(raw + "=")
    except ValueError:
        return None
    return secret if len(secret) == _SESSION_ID_BYTES else None


# --- routes ------------------------------------------------------------------------------------------------
async def sign_in(call: Call) -> Response:
    """POST /v1/session: exchange the identity provider's bearer token for a console session."""
    call.params.done()
    request = call.request
    if not request.headers.get("authorization"):
        raise Unauthenticated("sign in with a bearer token from the identity provider")
    _check_same_origin(request.headers)
    identity = call.identity
    if identity.kind is IdentityKind.SERVICE:
        raise Forbidden("services use bearer tokens; console sessions are for people")
    secret = secrets.token_bytes(_SESSION_ID_BYTES)
    ttl = timedelta(seconds=call.settings.session_ttl_seconds)
    _, token = identity_proof(call.state, request)
    async with call.connection() as conn, conn.transaction():
        await conn.execute(
            "DELETE FROM console_sessions WHERE expires_at < clock_timestamp() - interval '1 day'"
        )
        try:
            # the database verifies the token itself: the API's role cannot open a session for anyone
            async with conn.transaction():
                expires_at = await conn.fetchval(
                    "SELECT api_open_session($1, $2, $3)",
                    token,
                    hashlib.sha256(secret).digest(),
                    int(ttl.total_seconds()),
                )
        except (
            asyncpg.InvalidAuthorizationSpecificationError,
            asyncpg.ObjectNotInPrerequisiteStateError,
        ) as e:
            raise database_refusal(e) from None
        await call.audit(conn, call.entry(filters={"expires_at": expires_at.isoformat()}))
    response = JSONResponse(
        _describe(identity, expires_at, None, _csrf_token(secret)), status_code=201,
        headers={"Cache-Control": "no-store"},
    )  # fmt: skip
    response.set_cookie(
        cookie_name(call.state),
        _b64(secret),
        max_age=int(ttl.total_seconds()),
        path="/",
        secure=call.settings.session_cookie_secure,
        httponly=True,
        samesite="strict",
    )
    return response


async def session_info(call: Call) -> Response:
    """GET /v1/session: who is signed in, until when, the CSRF token and a staff member's stated case."""
    call.params.done()
    session = current_session(call.request)
    if session is None:
        body = _describe(call.identity, None, None, None)
    else:
        body = _describe(call.identity, session.expires_at, session.staff_reason, session.csrf_token)
    return JSONResponse(body, headers={"Cache-Control": "no-store"})


async def sign_out(call: Call) -> Response:
    """DELETE /v1/session: end this console session (its cookie stops working at once)."""
    call.params.done()
    session = _require_session(call)
    async with call.connection() as conn:
        await conn.execute(
            "UPDATE console_sessions SET ended_at = clock_timestamp() WHERE session_hash = $1 "
            "AND ended_at IS NULL",
            session.session_hash,
        )
        await call.audit(conn, call.entry())
    response = Response(status_code=204, headers={"Cache-Control": "no-store"})
    response.delete_cookie(
        cookie_name(call.state), path="/", secure=call.settings.session_cookie_secure, httponly=True,
        samesite="strict",
    )  # fmt: skip
    return response


async def set_reason(call: Call) -> Response:
    """PUT /v1/session/reason: support staff state the ticket or case id their reads are for."""
    call.params.done()
    session = _require_session(call)
    body = await _json_body(call.request)
    if set(body) != {"reason"}:
        raise InvalidBody('the body must be {"reason": "<ticket or case id>"} or {"reason": null}')
    stated = body["reason"]
    if stated is not None and not isinstance(stated, str):
        raise InvalidBody("reason must be a string or null")
    reason = None if stated is None else call.state.policy.staff_reason(call.identity, stated.strip())
    kind, cookie = identity_proof(call.state, call.request)
    if kind != "session":
        raise Unauthenticated("this needs a console session (sign in at /console/sign-in)")
    async with call.connection() as conn:
        try:
            await conn.execute("SELECT api_set_session_reason($1, $2)", cookie, reason)
        except asyncpg.InvalidAuthorizationSpecificationError:
            raise SessionExpired("your console session has ended; sign in again") from None
        await call.audit(conn, call.entry(filters={"reason": reason}))
    return JSONResponse(
        _describe(call.identity, session.expires_at, reason, session.csrf_token),
        headers={"Cache-Control": "no-store"},
    )


def _require_session(call: Call) -> ConsoleSession:
    session = current_session(call.request)
    if session is None:
        raise Unauthenticated("this needs a console session (sign in at /console/sign-in)")
    return session


async def _json_body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if len(raw) > _MAX_BODY_BYTES:
        raise InvalidBody(f"the body may be at most {_MAX_BODY_BYTES} bytes")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise InvalidBody("the body must be a JSON object") from None
    if not isinstance(body, dict):
        raise InvalidBody("the body must be a JSON object")
    return body


def _describe(
    identity: Identity, expires_at: datetime | None, reason: str | None, csrf: str | None
) -> dict[str, Any]:
    return {
        "subject": identity.subject,
        "kind": identity.kind.value,
        "session": expires_at is not None,
        "expires_at": expires_at,
        "staff_reason": reason,
        "csrf_token": csrf,
    }
