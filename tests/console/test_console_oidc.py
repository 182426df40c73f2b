"""Signing in with the identity provider in a real browser: "Sign in with <provider>" on the console's
sign-in page, the provider's own login form (mock-oauth2-server, run here: tests/oidc_provider.py), its
redirect back, and the console showing the user's rooms; signing out ends the provider's session too
(its end_session_endpoint, with id_token_hint); a refused sign-in is a page saying why.

The provider signs with ES256 (a P-256 key): the database verifies that ID token itself before it opens
the session (migration 0025).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import jwt
import pytest
from browsing import Contexts, axe_violations, ready, shot
from console_world import ConsoleWorld, console_server, free_port
from oidc_provider import OidcProvider

from pipeline.api.trust import install_oidc, oidc_keys
from pipeline.storage import db

CLIENT_ID = "roomlogs-console"
PROVIDER_NAME = "Example ID"


@pytest.fixture(scope="module")
def provider(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OidcProvider]:
    running = OidcProvider(tmp_path_factory.mktemp("oidc-console"), algorithm="ES256")
    running.start()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
async def sso_url(world: ConsoleWorld, provider: OidcProvider) -> AsyncIterator[str]:
    """The console served with single sign-on at `provider` (the world's rooms), its keys trusted by the
    database as `roomlogs api trust-key` installs them; its base URL."""
    port = free_port()
    settings = {
        "oidc_issuer": provider.issuer,
        "oidc_client_id": CLIENT_ID,
        "oidc_redirect_url": f"http://127.0.0.1:{port}/v1/session/oidc/callback",
        "oidc_provider_name": PROVIDER_NAME,
    }
    state_before = world.api_state
    async with console_server(world, port, **settings) as base_url:
        assert world.api_state is not None
        jwks = await _jwks(provider)
        conn = await db.connect(world.dsn, world.schema)
        try:
            await install_oidc(conn, world.api_state.settings, provider.issuer, oidc_keys(jwks))
        finally:
            await conn.close()
        try:
            yield base_url
        finally:
            world.api_state = state_before


async def _jwks(provider: OidcProvider) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=10) as http:
        keys: dict[str, Any] = (await http.get(provider.issuer + "/jwks")).json()
    return keys


async def _signed_in_with_provider(new_context: Contexts, sso_url: str, user: str, **options: Any) -> Any:
    """A browser that signed in as `user` through the provider's login form, on the console's first page."""
    context = await new_context(**options)
    page = await context.new_page()
    page.errors = []  # type: ignore[attr-defined]
    page.on("pageerror", lambda e: page.errors.append(str(e)))  # type: ignore[attr-defined]
    await page.goto(sso_url + "/console/")
    await page.wait_for_url("**/console/sign-in?next=*")
    await page.get_by_role("link", name=f"Sign in with {PROVIDER_NAME}").click()
    await page.wait_for_url("**/default/authorize?*")  # the provider's own page
    await page.locator("input[name=username]").fill(user)
    await page.locator("textarea[name=claims]").fill("{}")
    await page.locator("input[type=submit]").click()
    await page.wait_for_url(sso_url + "/console/")
    await ready(page)
    return page


async def test_sign_in_with_the_provider_shows_the_users_rooms(
    world: ConsoleWorld, sso_url: str, new_context: Contexts
) -> None:
    page = await _signed_in_with_provider(new_context, sso_url, "u-owner")
    await shot(page, "sso-rooms-owner")
    rows = page.locator("table.grid tbody tr")
    assert sorted(await rows.locator("th").all_inner_texts()) == ["room-1", "room-del"]
    assert await page.locator("#account").inner_text() == "Signed in as u-owner Sign out"
    cookies = {c["name"]: c for c in await page.context.cookies()}
    session = next(c for name, c in cookies.items() if "roomlogs_session" in name)
    assert session["httpOnly"] and session["sameSite"] == "Strict"
    assert not [name for name in cookies if "oidc_login" in name]  # the sign-in's cookie is gone
    assert page.errors == []  # type: ignore[attr-defined]
    [row] = [
        r for r in await world.audit("u-owner", outcome="ok")
        if r["action"] == "session.oidc_callback"
    ][-1:]  # fmt: skip
    assert row["filters"] is not None and "single_sign_on" in str(row["filters"])


async def test_sign_out_ends_the_provider_session_too(
    world: ConsoleWorld, sso_url: str, provider: OidcProvider, new_context: Contexts
) -> None:
    page = await _signed_in_with_provider(new_context, sso_url, "u-mod")
    session = next(c for c in await page.context.cookies() if "roomlogs_session" in c["name"])
    to_provider: list[str] = []
    page.on(
        "request",
        lambda request: to_provider.append(request.url) if "/endsession" in request.url else None,
    )
    await page.get_by_role("button", name="Sign out").click()
    await page.wait_for_url("**/console/sign-in?signed_out=provider")
    await page.get_by_text("You have signed out of the console and your identity provider.").wait_for()
    await shot(page, "sso-signed-out")
    # the browser went through the provider's end_session_endpoint, telling it whose session to end
    [end_session] = to_provider
    assert end_session.startswith(provider.issuer + "/endsession?")
    query = parse_qs(urlsplit(end_session).query)
    assert query["post_logout_redirect_uri"] == [sso_url + "/console/sign-in?signed_out=provider"]
    keys = jwt.PyJWKSet.from_dict(await _jwks(provider))
    hint = query["id_token_hint"][0]
    claims = jwt.decode(
        hint, keys[jwt.get_unverified_header(hint)["kid"]].key, algorithms=["ES256"], audience=CLIENT_ID,
        issuer=provider.issuer,
    )  # fmt: skip
    assert claims["sub"] == "u-mod"
    # the console's session ended, and nothing of it is left in the browser
    names = [c["name"] for c in await page.context.cookies()]
    assert not [n for n in names if "roomlogs_session" in n or "oidc_hint" in n], names
    async with httpx.AsyncClient(base_url=sso_url) as client:
        answer = await client.get("/v1/me/rooms", headers={"Cookie": f"{session['name']}={session['value']}"})
    assert answer.status_code == 401


async def test_a_refused_sign_in_is_a_page_that_says_why(
    world: ConsoleWorld, sso_url: str, new_context: Contexts
) -> None:
    context = await new_context(bypass_csp=True)  # for axe-core, injected below
    page = await context.new_page()
    # what the provider sends back when the person cancels at its login page
    answer = await page.goto(sso_url + "/v1/session/oidc/callback?error=access_denied&state=x")
    assert answer is not None and answer.status == 401
    assert answer.headers["content-type"].startswith("text/html")
    assert await page.locator("h1").inner_text() == "You are not signed in"
    assert await page.locator("#what-happened").inner_text() == (
        f"Signing in was cancelled, or refused, at {PROVIDER_NAME} "
        "(the identity provider said: access_denied)."
    )
    await shot(page, "sso-refused")
    assert await axe_violations(page) == []
    # the provider's words are text, never markup
    await page.goto(sso_url + "/v1/session/oidc/callback?error=%3Cimg%20src%3Dx%3E&state=x")
    assert "<img src=x>" in await page.locator("#what-happened").inner_text()
    assert await page.locator("img").count() == 0
    # and the way back
    await page.get_by_role("link", name="Sign in again").click()
    await page.wait_for_url("**/console/sign-in")
    await page.get_by_role("link", name=f"Sign in with {PROVIDER_NAME}").wait_for()


async def test_the_error_page_is_the_consoles_at_phone_width(
    world: ConsoleWorld, sso_url: str, new_context: Contexts
) -> None:
    context = await new_context(viewport={"width": 375, "height": 740})
    page = await context.new_page()
    await page.goto(sso_url + "/v1/session/oidc/callback?state=x&code=y")  # no sign-in started here
    assert "No sign-in was started in this browser" in await page.locator("#what-happened").inner_text()
    width = await page.evaluate("document.documentElement.scrollWidth")
    assert width <= 375
    await shot(page, "sso-refused-375")
