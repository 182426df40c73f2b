"""Refusals a person's browser is shown as a page, not as JSON: single sign-on's way back from the provider.

The provider sends the browser itself to ``/v1/session/oidc/callback`` (and the console's button to
``/v1/session/oidc/start``), so a refusal there (another browser's state, a replayed code, an expired ID
token, the provider's ``error=access_denied``...) is read by a person, not a program. The gate answers
such a route's errors (`RouteSpec.browser`) with `error_page` when the request prefers HTML to JSON
(`wants_html`: a browser's navigation asks for text/html first; a client that asks for application/json,
or for anything, ``*/*``, gets the API's JSON error as before).

The page is small and static: what happened in plain words, a link back to sign-in and the request id to
quote; every text is escaped (never parsed as HTML, whatever the provider or the caller put in it), no
script at all, and the console's strict Content-Security-Policy (`PAGE_SECURITY_HEADERS`). It carries the
error's status and headers, and is audited like the JSON answer (the gate writes that row either way).
"""

from __future__ import annotations

from html import escape

from starlette.responses import HTMLResponse

from pipeline.api.errors import ApiError
from pipeline.api.security.headers import PAGE_SECURITY_HEADERS

__all__ = ["SIGN_IN_PAGE", "error_page", "wants_html"]

SIGN_IN_PAGE = "/console/sign-in"

#: The page's heading, by status.
_TITLES = {
    400: "This sign-in cannot be finished",
    401: "You are not signed in",
    403: "You may not sign in here",
    404: "Single sign-on is not set up here",
    429: "Too many sign-in attempts",
}
_UNAVAILABLE = "Signing in is not possible right now"
#: What to do next, by status (else: sign in again).
_NEXT = {
    404: "Ask your administrator how to sign in to the room console.",
    429: "Wait a minute, then sign in again.",
}
_RETRY_LATER = "Try again in a few minutes; if it keeps happening, tell your administrator."


def wants_html(accept: str | None) -> bool:
    """Whether the request ranks text/html above application/json (Accept, RFC 9110 12.5.1): a browser's
    navigation does; no Accept, ``*/*`` or JSON first is a program, which gets JSON."""
    html = json = 0.0
    for item in (accept or "").split(","):
        kind, *options = (part.strip() for part in item.split(";"))
        quality = 1.0
        for option in options:
            name, _, value = option.partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = min(max(float(value), 0.0), 1.0)
                except ValueError:
                    quality = 0.0
        kind = kind.lower()
        if kind in ("text/html", "application/xhtml+xml"):
            html = max(html, quality)
        elif kind in ("application/json", "application/problem+json"):
            json = max(json, quality)
    return html > json


def error_page(error: ApiError, request_id: str) -> HTMLResponse:
    """The error as a page for a person (see the module docstring)."""
    status = error.status
    title = _TITLES.get(status, _UNAVAILABLE if status >= 500 else _TITLES[400])
    said = error.message.strip() or title
    said = said[0].upper() + said[1:]
    said = said if said.endswith((".", "!", "?")) else said + "."
    then = _NEXT.get(status, _RETRY_LATER if status >= 500 else "")
    body = f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>{escape(title)} · Room console</title>
<link rel="icon" href="/console/static/icon.svg" type="image/svg+xml">
<link rel="stylesheet" href="/console/static/console.css">
</head>
<body data-ready="true" data-error-code="{escape(error.code)}">
<header class="top"><a class="brand" href="/console/">roomlogs <span>room console</span></a></header>
<main id="main">
<h1>{escape(title)}</h1>
<p class="status error" id="what-happened">{escape(said)}</p>
{f"<p>{escape(then)}</p>" if then else ""}
<p><a class="button" href="{SIGN_IN_PAGE}">Sign in again</a></p>
<p class="muted">If you ask for help, quote this reference: <code>{escape(request_id)}</code></p>
</main>
</body>
</html>
"""
    return HTMLResponse(body, status_code=status, headers={**error.headers(), **PAGE_SECURITY_HEADERS})
