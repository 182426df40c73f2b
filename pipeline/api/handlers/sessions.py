"""The console session's routes: sign in, who is signed in, sign out, a staff member's stated case.

- ``POST /v1/session``: exchange the identity provider's bearer token for a session cookie (HttpOnly,
  SameSite=Strict); the database verifies the token itself, lets each token open one session only (401
  `invalid_token` for a second one) and keeps only the session id's hash;
- ``GET /v1/session``: who is signed in, until when, the CSRF token and a staff member's stated case;
- ``DELETE /v1/session``: sign out (the cookie stops working at once); a single sign-on session answers
  200 with the provider's ``end_session_url`` (with ``id_token_hint``) for the browser to go to, so the
  provider's session ends too; otherwise 204;
- ``PUT /v1/session/reason``: support staff state the ticket or case id their reads are for.

How a request is authenticated by its session is `pipeline.api.security.sessions`.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import asyncpg
from starlette.responses import Response

from pipeline.api.context import Call, JSONResponse
from pipeline.api.errors import Forbidden, InvalidBody, SessionExpired, Unauthenticated
from pipeline.api.handlers import oidc
from pipeline.api.queries import sessions as session_rows
from pipeline.api.security.auth import Identity, IdentityKind
from pipeline.api.security.sessions import (
    ConsoleSession,
    check_same_origin,
    cookie_name,
    cookie_value,
    csrf_token,
    current_session,
    database_checks_proof,
    identity_proof,
    new_session_id,
    session_hash,
    signed_in_once,
)

__all__ = ["session_info", "set_reason", "sign_in", "sign_out"]

_MAX_BODY_BYTES = 1024
_NO_STORE = {"Cache-Control": "no-store"}


async def sign_in(call: Call) -> Response:
    """POST /v1/session: exchange the identity provider's bearer token for a console session."""
    call.params.done()
    request = call.request
    if not request.headers.get("authorization"):
        raise Unauthenticated("sign in with a bearer token from the identity provider")
    check_same_origin(request.headers)
    identity = call.identity
    if identity.kind is IdentityKind.SERVICE:
        raise Forbidden("services use bearer tokens; console sessions are for people")
    secret = new_session_id()
    ttl = timedelta(seconds=call.settings.session_ttl_seconds)
    _, token = identity_proof(call.state, request)
    async with call.connection() as conn, conn.transaction():
        await session_rows.forget_expired(conn)
        # the database verifies the token itself: the API's role cannot open a session for anyone
        with database_checks_proof(), signed_in_once():
            async with conn.transaction():
                expires_at = await session_rows.open_session(
                    conn, token, session_hash(secret), int(ttl.total_seconds())
                )
        await call.audit(conn, call.entry(filters={"expires_at": expires_at.isoformat()}))
    response = JSONResponse(
        _describe(identity, expires_at, None, csrf_token(secret)), status_code=201, headers=_NO_STORE
    )
    response.set_cookie(
        cookie_name(call.state),
        cookie_value(secret),
        max_age=int(ttl.total_seconds()),
        path="/",
        secure=call.settings.session_cookie_secure,
        httponly=True,
        samesite="strict",
    )
    _forget_hint(call, response)  # a token's session: signing out of it ends no provider session
    return response


async def session_info(call: Call) -> Response:
    """GET /v1/session: who is signed in, until when, the CSRF token and a staff member's stated case."""
    call.params.done()
    session = current_session(call.request)
    if session is None:
        body = _describe(call.identity, None, None, None)
    else:
        body = _describe(call.identity, session.expires_at, session.staff_reason, session.csrf_token)
    return JSONResponse(body, headers=_NO_STORE)


async def sign_out(call: Call) -> Response:
    """DELETE /v1/session: end this console session (its cookie stops working at once)."""
    call.params.done()
    session = _require_session(call)
    async with call.connection() as conn:
        await session_rows.end_session(conn, session.session_hash)
        await call.audit(conn, call.entry())
    # a single sign-on session: where the browser ends the provider's session too (with id_token_hint)
    end_session_url = await oidc.end_provider_session(call)
    response: Response = (
        JSONResponse({"end_session_url": end_session_url}, headers=_NO_STORE)
        if end_session_url
        else Response(status_code=204, headers=_NO_STORE)
    )
    response.delete_cookie(
        cookie_name(call.state), path="/", secure=call.settings.session_cookie_secure, httponly=True,
        samesite="strict",
    )  # fmt: skip
    _forget_hint(call, response)
    return response


def _forget_hint(call: Call, response: Response) -> None:
    """The single sign-on session's ID token is no hint any more (signed out, or another sign-in)."""
    if oidc.hint_cookie(call) in call.request.cookies:
        response.delete_cookie(
            oidc.hint_cookie(call), path=oidc.HINT_PATH, secure=call.settings.session_cookie_secure,
            httponly=True, samesite="strict",
        )  # fmt: skip


async def set_reason(call: Call) -> Response:
    """PUT /v1/session/reason: support staff state the ticket or case id their reads are for."""
    call.params.done()
    session = _require_session(call)
    body: Any = await call.json_body(_MAX_BODY_BYTES)
    if not isinstance(body, dict):
        raise InvalidBody("the body must be a JSON object")
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
            await session_rows.set_session_reason(conn, cookie, reason)
        except asyncpg.InvalidAuthorizationSpecificationError:
            raise SessionExpired("your console session has ended; sign in again") from None
        await call.audit(conn, call.entry(filters={"reason": reason}))
    return JSONResponse(
        _describe(call.identity, session.expires_at, reason, session.csrf_token), headers=_NO_STORE
    )


def _require_session(call: Call) -> ConsoleSession:
    session = current_session(call.request)
    if session is None:
        raise Unauthenticated("this needs a console session (sign in at /console/sign-in)")
    return session


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
