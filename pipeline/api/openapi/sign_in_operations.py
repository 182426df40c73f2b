"""The OpenAPI operations of single sign-on (`pipeline.api.handlers.oidc`): public, browser-driven.

Merged into the API's document by `assembly.document` like the console's operations.
"""

from __future__ import annotations

from typing import Any

from pipeline.api.openapi.parts import errors, ok_json, operation, param

__all__ = ["sign_in_operations"]


def sign_in_operations(client_id: dict[str, Any]) -> dict[str, Any]:
    """Single sign-on's operations, by the audit action of the route they describe."""
    redirect = {"description": "To the identity provider (start) or back to the console (callback)"}
    text = {"type": "string", "minLength": 1, "maxLength": 4096}
    return {
        "session.oidc": operation(
            "getSingleSignOn",
            "Whether single sign-on is configured, the provider's name and where signing out of it goes "
            "(public: no token needed)",
            [client_id],
            {"200": ok_json({"type": "object"}), **errors()},
        ),
        "session.oidc_start": operation(
            "startSingleSignOn",
            "Start signing in with the identity provider (OpenID Connect, authorization code with PKCE)",
            [client_id, param("next", "query", {"type": "string", "pattern": "^/console/"}, "Page after")],
            {"302": redirect, **_browser_errors()},
        ),
        "session.oidc_callback": operation(
            "finishSingleSignOn",
            "The identity provider's redirect back: verifies the ID token and opens a console session",
            [
                client_id,
                param("code", "query", text, "Authorization code"),
                param("state", "query", text, "The state of the sign-in this browser started"),
            ],
            {"303": redirect, **_browser_errors()},
        ),
    }


def _browser_errors() -> dict[str, Any]:
    """The errors, as JSON or, to a browser that prefers HTML (Accept), as a page for a person."""
    page = {
        "schema": {"type": "string", "description": "What happened in plain words, and a link to sign in"}
    }
    return {
        status: {**answer, "content": {**answer["content"], "text/html": page}}
        for status, answer in errors().items()
    }
