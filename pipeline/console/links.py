"""Sign-in links for development: the console's sign-in page with a token in the URL's fragment.

The fragment (``#token=...``) never reaches a server (not in access logs, not in a Referer); the sign-in
page reads it, exchanges it for a session cookie (``POST /v1/session``) and removes it from the address bar.
Production tokens come from the platform's identity provider; `roomlogs api sign-in-link` and `roomlogs up`
mint development tokens with the HMAC key (see `pipeline.cli.api`).
"""

from __future__ import annotations

from urllib.parse import quote

__all__ = ["sign_in_link"]


def sign_in_link(base_url: str, token: str, *, next_page: str | None = None) -> str:
    """``{base_url}/console/sign-in[?next=...]#token=...``"""
    link = base_url.rstrip("/") + "/console/sign-in"
    if next_page:
        link += "?next=" + quote(next_page, safe="/")
    return link + "#token=" + quote(token, safe="")
