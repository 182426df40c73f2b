"""The owner's transparency page: retention, who read the logs, and a confirmed, audited deletion."""

from __future__ import annotations

from browsing import SignIn, shot
from console_world import ConsoleWorld


async def test_the_owner_deletes_a_rooms_logs_after_confirming(world: ConsoleWorld, sign_in: SignIn) -> None:
    page = await sign_in("u-owner", next_page="/console/rooms/room-del/transparency")
    text = await page.locator("main").inner_text()
    assert "kept 30 days (class private)" in text
    assert "Next purge: the first maintenance run after" in text
    await page.get_by_role("button", name="Request deletion…").click()
    await page.get_by_label("Type the room id (room-del) to confirm").fill("room-1")
    await page.get_by_role("button", name="Delete all logs of this room").click()
    assert "does not match: nothing was deleted" in await page.locator(".status.error").inner_text()
    assert await world.fetch("SELECT 1 FROM events WHERE room_id = 'room-del'")
    await page.get_by_label("Type the room id (room-del) to confirm").fill("room-del")
    await page.get_by_label("Note (optional, kept with the request)").fill("closing this room")
    await page.get_by_role("button", name="Delete all logs of this room").click()
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


async def test_a_moderator_cannot_delete(world: ConsoleWorld, sign_in: SignIn) -> None:
    page = await sign_in("u-mod", next_page="/console/rooms/room-1/transparency")
    await page.get_by_role("button", name="Request deletion…").click()
    await page.get_by_label("Type the room id (room-1) to confirm").fill("room-1")
    await page.get_by_role("button", name="Delete all logs of this room").click()
    refusal = page.locator(".status.error", has_text="Only the room's owner")
    await refusal.wait_for()
    assert await world.fetch("SELECT 1 FROM events WHERE room_id = 'room-1' LIMIT 1")
