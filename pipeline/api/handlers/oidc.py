"""Single sign-on routes: the console's "Sign in with <provider>" and its way back.

- ``GET /v1/session/oidc``: whether single sign-on is configured, the provider's name, where to start and
  where signing out of the provider goes (public: no log; the console's sign-in page asks it);
- ``GET /v1/session/oidc/start?next=/console/...``: a new sign-in (state, nonce, PKCE) in a login cookie,
  and a redirect to the provider;
- ``GET /v1/session/oidc/callback?code=...&state=...``: the provider's redirect back: the login cookie's
  state, the code exchanged, the ID token verified (`pipeline.api.security.oidc`), then the database
  verifies the ID token itself and opens the console session (once per sign-in, migration 0019); the
  browser goes on to the page it came from with the session cookie, and keeps the ID token in a cookie
  for /v1/session only (`HINT_COOKIE`): signing out (``DELETE /v1/session``) passes it to the provider's
  end_session_endpoint as ``id_token_hint`` (`end_provider_session`), so the provider's session ends too.

Refusals are the gate's errors, audited like any other (`session.start` with who the ID token named when it
was verified): JSON, or, for a browser that prefers HTML, a small page saying what happened in plain words
with a link back to sign-in (`pipeline.api.security.error_pages`).
"""

from __future__ import annotations

import logging
import re
from datetime import timedelta
from urllib.parse import urlsplit

from starlette.responses import RedirectResponse, Response

from pipeline.api.context import Call, JSONResponse
from pipeline.api.errors import InvalidBody, NotFound, Unauthenticated, Unavailable
from pipeline.api.queries import sessions as session_rows
from pipeline.api.security.oidc import OidcClient
from pipeline.api.security.sessions import (
    cookie_name,
    cookie_value,
    database_checks_proof,
    new_session_id,
    session_hash,
    signed_in_once,
)

__all__ = [
    "HINT_COOKIE", "HINT_PATH", "LOGIN_COOKIE", "callback", "end_provider_session", "hint_cookie", "provider",
    "start",
]  # fmt: skip

log = logging.getLogger("roomlogs.api")

#: The started sign-in's cookie (Lax: it must come back on the provider's top-level redirect).
LOGIN_COOKIE = "roomlogs_oidc_login"
#: The ID token of this browser's single sign-on session, for signing out of the provider too
#: (`id_token_hint`): HttpOnly, Strict, sent only to /v1/session. It opens nothing: the database let its
#: nonce open one session only (migration 0019).
HINT_COOKIE = "roomlogs_oidc_hint"
HINT_PATH = "/v1/session"
MAX_HINT_CHARS = 3500
_JWT = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")
_LOGIN_PATH = "/v1/session/oidc/callback"
_DEFAULT_NEXT = "/console/"
_SIGNED_OUT_PAGE = "/console/sign-in?signed_out=provider"


async def provider(call: Call) -> Response:
    """GET /v1/session/oidc"""
    call.params.done()
    oidc = call.state.oidc
    if oidc is None:
        return JSONResponse({"enabled": False, "provider": None, "start_url": None, "end_session_url": None})
    end = await oidc.end_session_url(_origin(call) + _SIGNED_OUT_PAGE)
    return JSONResponse(
        {"enabled": True, "provider": oidc.provider_name, "start_url": "/v1/session/oidc/start",
         "end_session_url": end}
    )  # fmt: skip


async def start(call: Call) -> Response:
    """GET /v1/session/oidc/start"""
    oidc = _client(call)
    next_page = call.request.query_params.get("next") or _DEFAULT_NEXT
    if not next_page.startswith("/console/") or "//" in next_page or "\\" in next_page:
        raise InvalidBody("next must be a console page (/console/...)")
    url, login = await oidc.begin(next_page)
    response = RedirectResponse(url, status_code=302)
    response.set_cookie(
        _login_cookie(call), login, max_age=call.settings.oidc_login_ttl_seconds, path=_LOGIN_PATH,
        secure=call.settings.session_cookie_secure, httponly=True, samesite="lax",
    )  # fmt: skip
    return response


async def callback(call: Call) -> Response:
    """GET /v1/session/oidc/callback"""
    oidc = _client(call)
    query = call.request.query_params
    if "error" in query:
        raise Unauthenticated(_provider_refusal(oidc.provider_name, query["error"]))
    cookie = call.request.cookies.get(_login_cookie(call), "")
    signed_in = await oidc.finish(query.get("code", ""), query.get("state", ""), cookie)
    call.exchange.identity = signed_in.identity  # who the audit row names
    secret = new_session_id()
    ttl = timedelta(seconds=call.settings.session_ttl_seconds)
    async with call.connection() as conn, conn.transaction():
        await session_rows.forget_expired(conn)
        with database_checks_proof(), signed_in_once():
            async with conn.transaction():
                expires_at = await session_rows.open_oidc_session(
                    conn, signed_in.id_token, session_hash(secret), int(ttl.total_seconds())
                )
        await call.audit(
            conn, call.entry(filters={"expires_at": expires_at.isoformat(), "via": "single_sign_on"})
        )
    response = RedirectResponse(signed_in.next_page, status_code=303)
    response.set_cookie(
        cookie_name(call.state), cookie_value(secret), max_age=int(ttl.total_seconds()), path="/",
        secure=call.settings.session_cookie_secure, httponly=True, samesite="strict",
    )  # fmt: skip
    response.delete_cookie(
        _login_cookie(call), path=_LOGIN_PATH, secure=call.settings.session_cookie_secure, httponly=True,
        samesite="lax",
    )  # fmt: skip
    if len(signed_in.id_token) <= MAX_HINT_CHARS:  # a longer one is no cookie: signing out asks the person
        response.set_cookie(
            hint_cookie(call), signed_in.id_token, max_age=int(ttl.total_seconds()), path=HINT_PATH,
            secure=call.settings.session_cookie_secure, httponly=True, samesite="strict",
        )  # fmt: skip
    return response


async def end_provider_session(call: Call) -> str | None:
    """Where signing out sends the browser to end the provider's session too, with the ID token this
    browser's session was opened with as `id_token_hint` (None: no single sign-on session here, or the
    provider has no end_session_endpoint)."""
    hint = call.request.cookies.get(hint_cookie(call), "")
    if call.state.oidc is None or not _JWT.fullmatch(hint) or len(hint) > MAX_HINT_CHARS:
        return None
    try:
        return await call.state.oidc.end_session_url(_origin(call) + _SIGNED_OUT_PAGE, id_token_hint=hint)
    except Unavailable as e:  # signed out here all the same; the sign-in page offers the provider's link
        log.warning("signed out without ending the identity provider's session: %s", e.message)
        return None


def hint_cookie(call: Call) -> str:
    return "__Secure-" + HINT_COOKIE if call.settings.session_cookie_secure else HINT_COOKIE


#: What the provider's `error` (RFC 6749 4.1.2.1, OpenID Connect Core 3.1.2.6) means for the person.
_PROVIDER_ERRORS = {
    "access_denied": "signing in was cancelled, or refused, at {provider}",
    "login_required": "{provider} needs you to sign in there first",
    "interaction_required": "{provider} needs you to sign in there first",
    "consent_required": "{provider} needs your consent before it signs you in here",
    "account_selection_required": "{provider} needs you to choose an account",
    "temporarily_unavailable": "{provider} cannot sign anyone in right now",
    "server_error": "{provider} failed while signing you in",
}


def _provider_refusal(provider_name: str, error: str) -> str:
    """The provider's refusal in plain words, its own code kept (at most 64 characters of it)."""
    said = _PROVIDER_ERRORS.get(error, "{provider} did not sign you in").format(provider=provider_name)
    return f"{said} (the identity provider said: {error[:64]})"


def _client(call: Call) -> OidcClient:
    if call.state.oidc is None:
        raise NotFound("single sign-on is not configured (ROOMLOGS_API_OIDC_ISSUER)")
    return call.state.oidc


def _login_cookie(call: Call) -> str:
    return "__Secure-" + LOGIN_COOKIE if call.settings.session_cookie_secure else LOGIN_COOKIE


def _origin(call: Call) -> str:
    """Where owners reach the console: the origin of the redirect URL registered at the provider."""
    url = urlsplit(call.settings.oidc_redirect_url)
    return f"{url.scheme}://{url.netloc}"
