"""Signing in: a token from the identity provider becomes a session cookie; signing out ends it."""

from __future__ import annotations

from typing import Any

import httpx
from browsing import SignIn, open_page, shot
from console_world import ConsoleWorld, token


async def test_sign_in_link_opens_the_owners_rooms(world: ConsoleWorld, sign_in: SignIn) -> None:
    page = await sign_in("u-owner")
    assert page.url.endswith("/console/")
    assert "#token" not in page.url  # the token is removed from the address bar
    await shot(page, "rooms-owner")
    rows = page.locator("table.grid tbody tr")
    assert sorted(await rows.locator("th").all_inner_texts()) == ["room-1", "room-del"]
    assert await page.locator("#account").inner_text() == "Signed in as u-owner Sign out"
    cookie = next(c for c in await page.context.cookies() if "roomlogs_session" in c["name"])
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert not await page.evaluate("document.cookie.includes('roomlogs_session')")
    assert page.errors == []  # type: ignore[attr-defined]


async def test_sign_out_ends_the_session_everywhere(world: ConsoleWorld, sign_in: SignIn) -> None:
    page = await sign_in("u-mod")
    cookie = next(c for c in await page.context.cookies() if "roomlogs_session" in c["name"])
    await page.get_by_role("button", name="Sign out").click()
    await page.wait_for_url("**/console/sign-in?signed_out=1")
    await page.get_by_text("You have signed out.").wait_for()  # said, not a bare token box
    await shot(page, "sign-in")
    assert not [c for c in await page.context.cookies() if "roomlogs_session" in c["name"]]
    # the old cookie value no longer works, even replayed by someone who copied it
    async with httpx.AsyncClient(base_url=world.base_url) as client:
        answer = await client.get("/v1/me/rooms", headers={"Cookie": f"{cookie['name']}={cookie['value']}"})
    assert answer.status_code == 401
    assert answer.json()["error"]["code"] == "session_expired"
    assert [
        r["action"] for r in await world.audit("u-mod", outcome="ok") if r["action"].startswith("session")
    ][-2:] == [
        "session.start",
        "session.end",
    ]


async def test_without_a_session_pages_send_you_to_sign_in(world: ConsoleWorld, new_context: Any) -> None:
    context = await new_context()
    page = await context.new_page()
    await page.goto(world.base_url + "/console/rooms/room-1/day/2024-01-01")
    await page.wait_for_url("**/console/sign-in?next=*")
    await page.get_by_label("Token from the identity provider").fill(token("u-owner"))
    await page.get_by_role("button", name="Sign in").click()
    await page.wait_for_url("**/console/rooms/room-1/day/2024-01-01")
    await open_page(page, page.url)
    assert "Events of 2024-01-01" in await page.locator("h2").first.inner_text()


async def test_a_refused_token_is_said_so(world: ConsoleWorld, new_context: Any) -> None:
    context = await new_context()
    page = await context.new_page()
    await page.goto(world.base_url + "/console/sign-in#token=not-a-token")
    await page.get_by_text("Sign-in refused").wait_for()
    assert "not a JWT" in await page.locator(".status.error").inner_text()
