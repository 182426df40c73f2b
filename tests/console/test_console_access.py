"""Who sees what: the console shows only what the API's rules allow, and every read is in the audit."""

from __future__ import annotations

from browsing import SignIn, open_page, ready, shot
from console_world import TICKET, TODAY, ConsoleWorld

NO_ACCESS = "You do not have access to this room, or it does not exist."


def pages(world: ConsoleWorld, room: str) -> list[str]:
    base = f"{world.base_url}/console/rooms/{room}"
    return [
        f"{base}/",
        f"{base}/day/{TODAY.isoformat()}",
        f"{base}/events/{world.ids['needle']}",
        f"{base}/live",
        f"{base}/insights",
        f"{base}/transparency",
    ]


async def test_a_regular_user_learns_nothing_of_a_room(world: ConsoleWorld, sign_in: SignIn) -> None:
    page = await sign_in("u-guest")
    assert "You do not own or moderate any room." in await page.locator("main").inner_text()
    seen: dict[str, str] = {}
    for room in ("room-1", "no-such-room"):
        for url in pages(world, room):
            await open_page(page, url)
            body = page.locator(".page")
            if url.endswith("/live"):
                await page.get_by_text("The live view stopped").wait_for()
                seen[url.replace(room, "ROOM")] = "live stopped"
                continue
            text = await body.inner_text()
            assert text == NO_ACCESS, (url, text)
            assert "hello" not in await page.locator("main").inner_text()
            seen.setdefault(url.replace(room, "ROOM"), text)
    await shot(page, "no-access")
    # an existing room and a missing one look the same; the API said 403 and recorded every refusal
    denied = await world.audit("u-guest", room_id="room-1", outcome="denied")
    assert {r["action"] for r in denied} >= {"days", "events.list", "events.context", "insights", "tail"}
    assert all(r["http_status"] == 403 for r in denied)


async def test_another_rooms_owner_cannot_follow_links_into_room_1(
    world: ConsoleWorld, sign_in: SignIn
) -> None:
    page = await sign_in("u-owner2")
    rooms = await page.locator("table.grid tbody th").all_inner_texts()
    assert rooms == ["room-2"]
    for url in pages(world, "room-1"):
        if url.endswith("/live"):
            continue
        await open_page(page, url)
        assert await page.locator(".page").inner_text() == NO_ACCESS
    # room-1's event id under room-2 is not found there either (ids do not cross rooms)
    await open_page(page, f"{world.base_url}/console/rooms/room-2/events/{world.ids['needle']}")
    assert await page.locator(".page").inner_text() == "Not found."


async def test_a_removed_moderator_has_no_access_left(world: ConsoleWorld, sign_in: SignIn) -> None:
    page = await sign_in("u-revoked")
    assert "You do not own or moderate any room." in await page.locator("main").inner_text()
    await open_page(page, f"{world.base_url}/console/rooms/room-1/")
    assert await page.locator(".page").inner_text() == NO_ACCESS


async def test_a_moderator_reads_but_does_not_see_the_access_log(
    world: ConsoleWorld, sign_in: SignIn
) -> None:
    page = await sign_in("u-mod")
    assert await page.locator("table.grid tbody td").first.inner_text() == "moderator"
    await open_page(page, f"{world.base_url}/console/rooms/room-1/transparency")
    await shot(page, "transparency-moderator")
    text = await page.locator("main").inner_text()
    assert "Only the room's owner can see who read its logs." in text
    assert "private" in text  # retention is not a secret from the room's moderators


async def test_staff_state_a_case_that_goes_with_every_read(world: ConsoleWorld, sign_in: SignIn) -> None:
    page = await sign_in("s-staff", staff=True)
    # without a case, a room is refused with the way to state one
    await open_page(page, f"{world.base_url}/console/rooms/room-1/")
    assert "must state a ticket or case id" in await page.locator(".page").inner_text()
    await open_page(page, f"{world.base_url}/console/")
    await shot(page, "rooms-staff")
    await page.get_by_label("Ticket or case id").fill("not a ticket")
    await page.get_by_label("Room id").fill("room-1")
    await page.get_by_role("button", name="Open room").click()
    assert (
        "X-Access-Reason must be a ticket or case id" in await page.locator("#case-form .status").inner_text()
    )
    await page.get_by_label("Ticket or case id").fill(TICKET)
    await page.get_by_role("button", name="Open room").click()
    await page.wait_for_url("**/console/rooms/room-1/")
    await ready(page)
    await shot(page, "calendar-staff")
    assert await page.locator("#case-id").inner_text() == TICKET
    assert await page.locator("table.counts tbody tr").count() >= 1  # today's events, at least
    await open_page(page, f"{world.base_url}/console/rooms/room-1/events/{world.ids['script']}")
    reads = await world.audit("s-staff", room_id="room-1", outcome="ok")
    assert {r["action"] for r in reads} >= {"days", "events.context"}
    assert {(r["basis"], r["staff_reason"]) for r in reads} == {("staff", TICKET)}
    # the owner sees who read the room, and why
    owner = await sign_in("u-owner", next_page="/console/rooms/room-1/transparency")
    await shot(owner, "transparency-owner")
    log = owner.locator("#access-log tbody tr", has_text="s-staff")
    assert TICKET in await log.first.inner_text()
