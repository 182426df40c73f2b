"""The live view: an event published through the real pipeline appears; a removed moderator is cut off.

The server's tails end every few seconds here (`tail_max_seconds`), so the browser's EventSource also
reconnects during these tests and resumes after the last event it got (Last-Event-ID).
"""

from __future__ import annotations

from browsing import SignIn, shot
from console_world import GUEST, MOD_LIVE, OWNER, ConsoleWorld

from pipeline.publisher import events as ev


async def test_a_new_event_appears_in_the_live_view(world: ConsoleWorld, sign_in: SignIn) -> None:
    page = await sign_in("u-owner", next_page="/console/rooms/room-1/live")
    await page.get_by_text("Connected").wait_for()
    first = await world.publish(ev.chat_message("room-1", GUEST, "live hello <i>from</i> the pipeline"))
    item = page.locator(f"#e-{first}")
    await item.wait_for(timeout=30_000)
    assert "live hello <i>from</i> the pipeline" in await item.inner_text()
    # after the stream's time limit the browser reconnects by itself and the next event still arrives
    tails_before = len(await world.audit("u-owner", action="tail", outcome="started"))
    while len(await world.audit("u-owner", action="tail", outcome="started")) == tails_before:
        await page.wait_for_timeout(250)
    resumed = (await world.audit("u-owner", action="tail", outcome="started"))[-1]
    assert resumed["filters"].get("resume_after") == first
    second = await world.publish(ev.chat_message("room-1", GUEST, "still here after a reconnect"))
    await page.locator(f"#e-{second}").wait_for(timeout=30_000)
    await shot(page, "live")
    assert await page.locator(f"#e-{first}").count() == 1  # a repeated event is shown once
    assert page.errors == []  # type: ignore[attr-defined]


async def test_a_moderator_removed_meanwhile_is_cut_off(world: ConsoleWorld, sign_in: SignIn) -> None:
    page = await sign_in("u-mod-live", next_page="/console/rooms/room-1/live")
    await page.get_by_text("Connected").wait_for()
    await world.publish(ev.permissions_changed("room-1", OWNER, "moderator_removed", MOD_LIVE), wait=True)
    status = page.locator("#live-status")
    await page.locator("#live-status.error").wait_for(timeout=30_000)
    text = await status.inner_text()
    assert "access to this room was withdrawn" in text or "no longer have access" in text
    await shot(page, "live-revoked")
    # nothing published after the removal reaches the page
    later = await world.publish(ev.chat_message("room-1", GUEST, "not for removed moderators"), wait=True)
    await page.wait_for_timeout(1_000)
    assert await page.locator(f"#e-{later}").count() == 0
    ended = await world.audit("u-mod-live", action="tail")
    assert any(r["detail"] == "access_revoked" for r in ended) or any(r["outcome"] == "denied" for r in ended)
