"""Who is calling, for every /v1 request: a bearer token, or a console session made from one.

`authenticate()` is called by the gate (`security.gate.Gate`) before anything else:
- with an ``Authorization`` header, the bearer token decides (`TokenVerifier`), as for every API client;
- otherwise the console's session cookie: the session must exist, not be signed out, not be expired, and a
  request that changes state must carry the session's CSRF token (``X-CSRF-Token``) and come from this
  origin. Refusals are ApiErrors (401 `session_expired`, 403 `csrf_failed`) like any other.

A session is made by exchanging a token from the platform's identity provider (``POST /v1/session`` with
``Authorization: Bearer``), or by single sign-on (`pipeline.api.security.oidc`): the same verification,
each token or authorization request opening one session at most (migration 0019), then a random 256-bit
session id in an HttpOnly, SameSite=Strict cookie. PostgreSQL keeps only its SHA-256 (`console_sessions`,
migration 0007). The CSRF token is derived from the session id (HMAC), so it is never stored and dies
with the session.

Support staff state their ticket or case id once per session (``PUT /v1/session/reason``); it then stands
in for ``X-Access-Reason`` on every request they make, live tails and downloads included (an EventSource or
a download link cannot send headers), and the access audit records it as if they had sent the header.
The routes that open, describe and end a session are `pipeline.api.handlers.sessions`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlsplit

import asyncpg
from starlette.datastructures import Headers
from starlette.requests import Request, cookie_parser
from starlette.types import Scope

from pipeline.api.context import SESSION_REASON, ApiState
from pipeline.api.errors import CsrfFailed, InvalidToken, SessionExpired, Unavailable
from pipeline.api.queries import sessions as session_rows
from pipeline.api.security.auth import Identity, IdentityKind

__all__ = [
    "COOKIE_NAME",
    "CSRF_HEADER",
    "ConsoleSession",
    "authenticate",
    "check_csrf",
    "check_same_origin",
    "cookie_name",
    "cookie_value",
    "csrf_token",
    "current_session",
    "database_checks_proof",
    "identity_proof",
    "new_session_id",
    "session_hash",
    "session_is_live",
    "signed_in_once",
]

#: The ASGI scope key of the request's console session (set by `authenticate`).
SESSION = "roomlogs.console_session"
COOKIE_NAME = "roomlogs_session"
#: The cookie's name when it is Secure: the __Host- prefix also pins it to this host and path "/".
SECURE_COOKIE_NAME = "__Host-roomlogs_session"
CSRF_HEADER = "x-csrf-token"
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_SESSION_ID_BYTES = 32


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
    authorization, raw = _credentials(state, Headers(scope=scope))
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
    authorization, raw = _credentials(state, request.headers)
    if authorization or not raw:
        return "bearer", (authorization or "").strip().partition(" ")[2].strip()
    return "session", raw


@contextmanager
def database_checks_proof() -> Iterator[None]:
    """Around a database function that verifies the caller's proof itself (migration 0010): when it refuses
    a proof the API accepted (SQLSTATE 28000: its key differs from the API's) or has no key (55000), that is
    a setup problem, not the caller's: 503 with the fix. A narrower refusal of SQLSTATE class 55 (a legal
    hold's ObjectInUseError) must be caught inside it."""
    try:
        yield
    except asyncpg.ObjectNotInPrerequisiteStateError:
        raise Unavailable(
            "the database has no key to verify identities with: run `roomlogs api trust-key`"
        ) from None
    except asyncpg.InvalidAuthorizationSpecificationError:
        raise Unavailable(
            "the database does not accept the token the API accepted: run `roomlogs api trust-key` with the "
            "API's token settings"
        ) from None


@contextmanager
def signed_in_once() -> Iterator[None]:
    """Around a database function that opens a session (migration 0019): a token or an authorization
    request that has already opened one is refused (401), whether or not that session was signed out."""
    try:
        yield
    except asyncpg.UniqueViolationError:
        raise InvalidToken(
            "this sign-in has already opened a session (or was issued before every session was signed "
            "out); sign in again"
        ) from None


def check_csrf(scope: Scope) -> None:
    """A state change on a session cookie must carry the session's CSRF token and come from this origin."""
    session = scope.get(SESSION)
    if not isinstance(session, ConsoleSession) or scope.get("method") in _SAFE_METHODS:
        return
    headers = Headers(scope=scope)
    given = headers.get(CSRF_HEADER, "")
    if not hmac.compare_digest(given.encode(), session.csrf_token.encode()):
        raise CsrfFailed("this change needs the console's CSRF token (X-CSRF-Token)")
    check_same_origin(headers)


def check_same_origin(headers: Headers) -> None:
    """Refuse a state change a browser says came from another site (Sec-Fetch-Site / Origin)."""
    site = headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        raise CsrfFailed("changes must come from the console's own pages")
    origin = headers.get("origin")
    if origin is not None and urlsplit(origin).netloc != headers.get("host", ""):
        raise CsrfFailed("changes must come from the console's own origin")


async def session_is_live(conn: asyncpg.Connection, session: ConsoleSession) -> bool:
    """Still signed in (for streams that outlive the request that opened them)."""
    return await session_rows.session_is_live(conn, session.session_hash)


def new_session_id() -> bytes:
    """A new session's random id (256 bits): the cookie carries it, the database only its hash."""
    return secrets.token_bytes(_SESSION_ID_BYTES)


def session_hash(secret: bytes) -> bytes:
    """What `console_sessions` keeps of a session id."""
    return hashlib.sha256(secret).digest()


def cookie_value(secret: bytes) -> str:
    return _b64(secret)


def csrf_token(secret: bytes) -> str:
    """The session's CSRF token, derived from its id: never stored, it dies with the session."""
    return _b64(hmac.new(secret, b"roomlogs console csrf", hashlib.sha256).digest())


def _credentials(state: ApiState, headers: Headers) -> tuple[str | None, str | None]:
    """(the Authorization header, the session cookie's value) of a request."""
    return headers.get("authorization"), cookie_parser(headers.get("cookie", "")).get(cookie_name(state))


async def _load(state: ApiState, raw: str) -> ConsoleSession | None:
    secret = _decode_id(raw)
    if secret is None:
        return None
    pool = state.pool
    if pool is None:
        raise Unavailable("the API is starting or stopping")
    digest = session_hash(secret)
    async with pool.acquire() as conn:
        row = await session_rows.live_session(conn, digest)
    if row is None:
        return None
    return ConsoleSession(
        digest, row["subject"], IdentityKind(row["identity_type"]), row["staff_reason"], row["expires_at"],
        csrf_token(secret),
    )  # fmt: skip


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
