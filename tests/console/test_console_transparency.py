"""The owner's transparency page: retention, who read the logs (paged, filtered, the owner's own reads
folded), and a deletion confirmed in a dialog, audited, offered only to those who may delete."""

from __future__ import annotations

from browsing import SignIn, open_page, shot
from console_world import ConsoleWorld


async def test_the_owner_deletes_a_rooms_logs_after_confirming(world: ConsoleWorld, sign_in: SignIn) -> None:
    page = await sign_in("u-owner", next_page="/console/rooms/room-del/transparency")
    text = await page.locator("main").inner_text()
    assert "kept 30 days (class private)" in text
    assert "Next purge: the first maintenance run after" in text
    opener = page.get_by_role("button", name="Delete this room's logs…")
    dialog = page.locator("dialog#delete-dialog")
    # Escape and Cancel both close the dialog, deleting nothing, and give focus back to its opener
    await opener.click()
    assert await dialog.evaluate("d => d.open")
    assert "deleted for good, now" in await dialog.inner_text()
    await shot(page, "transparency-delete-dialog")
    await page.keyboard.press("Escape")
    assert not await dialog.evaluate("d => d.open")
    assert await opener.evaluate("b => b === document.activeElement")
    await opener.click()
    await dialog.get_by_role("button", name="Cancel").click()
    assert not await dialog.evaluate("d => d.open")
    assert await world.fetch("SELECT 1 FROM events WHERE room_id = 'room-del'")
    buttons = " ".join(await page.locator("button").all_inner_texts())
    assert "Request" not in buttons
    await opener.click()
    await page.get_by_label("Type the room id (room-del) to confirm").fill("room-1")
    await page.get_by_role("button", name="Delete for good, now").click()
    assert "does not match: nothing was deleted" in await dialog.locator(".status.error").inner_text()
    assert await world.fetch("SELECT 1 FROM events WHERE room_id = 'room-del'")
    await page.get_by_label("Type the room id (room-del) to confirm").fill("room-del")
    await page.get_by_label("Note (optional, kept with the request)").fill("closing this room")
    await page.get_by_role("button", name="Delete for good, now").click()
    done = page.locator(".status.ok")
    await done.wait_for()
    await shot(page, "transparency-deleted")
    assert "Deleted 3 events" in await done.inner_text()
    assert not await world.fetch("SELECT 1 FROM events WHERE room_id = 'room-del'")
    [request] = await world.fetch("SELECT * FROM deletion_requests WHERE room_id = 'room-del'")
    assert (request["requested_by"], request["basis"], request["reason"]) == (
        "u-owner",
        "owner",
        "closing this room",
    )
    [audited] = await world.audit("u-owner", room_id="room-del", action="room_logs.delete", outcome="ok")
    assert audited["request_id"] == request["request_id"] and audited["row_count"] == 3


async def test_state_changes_need_the_sessions_csrf_token(world: ConsoleWorld, sign_in: SignIn) -> None:
    page = await sign_in("u-owner2", next_page="/console/rooms/room-2/transparency")
    answer = await page.evaluate(
        """async () => {
            const r = await fetch('/v1/rooms/room-2/deletions', {method: 'POST'});
            return [r.status, (await r.json()).error.code];
        }"""
    )
    assert answer == [403, "csrf_failed"]
    assert await world.fetch("SELECT 1 FROM events WHERE room_id = 'room-2'")
    [refused] = await world.audit("u-owner2", action="room_logs.delete")
    assert (refused["outcome"], refused["detail"], refused["room_id"]) == ("denied", "csrf_failed", "room-2")


async def test_a_moderator_is_not_offered_the_deletion(world: ConsoleWorld, sign_in: SignIn) -> None:
    page = await sign_in("u-mod", next_page="/console/rooms/room-1/transparency")
    assert await page.locator("dialog").count() == 0
    assert await page.get_by_role("button", name="Delete this room's logs…").count() == 0
    assert "private" in await page.locator("main").inner_text()  # retention is still shown
    assert await world.fetch("SELECT 1 FROM events WHERE room_id = 'room-1' LIMIT 1")


async def test_the_access_log_folds_the_owners_reads_and_filters(
    world: ConsoleWorld, sign_in: SignIn
) -> None:
    await sign_in("u-mod", next_page="/console/rooms/room-1/")  # a read the owner should see
    page = await sign_in("u-owner", next_page="/console/rooms/room-1/transparency")
    log = page.locator("#access-log tbody tr")
    whos = await page.locator("#access-log tbody th").all_inner_texts()
    assert whos and "u-owner" not in whos and "u-mod" in whos  # folded by default
    assert await page.locator("#own-folded").count() == 1
    await page.get_by_role("link", name="Show them too").click()
    await page.wait_for_url("**mine=1")
    await page.wait_for_selector("body[data-ready='true']")
    assert "u-owner" in await page.locator("#access-log tbody th").all_inner_texts()
    # who, what and outcome
    await page.get_by_label("Who (user or service id)").fill("u-mod")
    await page.get_by_label("What", exact=True).select_option("days")
    await page.get_by_label("Outcome").select_option("ok")
    await page.get_by_role("button", name="Apply").click()
    await page.wait_for_url("**who=u-mod*")
    await page.wait_for_selector("body[data-ready='true']")
    await shot(page, "transparency-filtered")
    rows = await log.all_inner_texts()
    assert rows and all("u-mod" in r and "Read the calendar" in r and "Answered" in r for r in rows)
    assert "who=u-mod" in page.url and "what=days" in page.url
    # paged: 25 entries a page, older ones behind a link
    await page.evaluate("async () => { for (let i = 0; i < 30; i++) await fetch('/v1/rooms/room-1/days'); }")
    await open_page(page, f"{world.base_url}/console/rooms/room-1/transparency?mine=1")
    assert await log.count() == 25
    newest = await log.first.locator("time").get_attribute("datetime")
    await page.get_by_role("link", name="Older entries").click()
    await page.wait_for_url("**cursor=*")
    await page.wait_for_selector("body[data-ready='true']")
    assert "cursor=" in page.url and await log.count() > 0
    assert await log.first.locator("time").get_attribute("datetime") <= newest
    assert await page.get_by_role("link", name="Newest entries").count() == 1
