"""Every console page at phone width (375 px) and at desktop width (1280 px): no sideways scroll, nothing out
of its box, ids whole, long and right-to-left names kept in their place; screenshots of each page at each
width under `.roomlogs/artifacts/console/layout/` (the path is printed)."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import timedelta
from typing import Any

import pytest
from browsing import ARTIFACTS, SignIn, open_page
from console_world import LONG_NAME, RLO_NAME, TODAY, ConsoleWorld, day_at, stamp

from pipeline.events.contract import EventType
from pipeline.publisher import events as ev

WIDTHS = {"phone": {"width": 375, "height": 740}, "desktop": {"width": 1280, "height": 800}}
LAYOUT = ARTIFACTS / "layout"

#: Elements drawn outside the viewport, or past their own box: each as "selector: why".
OUT_OF_BOX = """() => {
    const vw = document.documentElement.clientWidth;
    const name = (el) => el.tagName.toLowerCase() + (el.id ? "#" + el.id : "")
        + (typeof el.className === "string" && el.className
           ? "." + el.className.trim().split(/\\s+/).join(".") : "");
    const bad = [];
    for (const el of document.querySelectorAll("body *")) {
        if (el.closest(".skip, .sr-only, thead, script, dialog:not([open])")) continue;
        const r = el.getBoundingClientRect();
        if (r.width <= 1 || r.height <= 1) continue;
        if (r.left < -0.5 || r.right > vw + 0.5)
            bad.push(name(el) + ": outside the viewport " + Math.round(r.right));
    }
    for (const el of document.querySelectorAll("bdi.id, bdi.name")) {
        if (el.title !== el.textContent) bad.push(name(el) + ": no whole value on hover");
        if (el.getClientRects().length > 1 || getComputedStyle(el).whiteSpace !== "nowrap")
            bad.push(name(el) + ": " + el.textContent + " breaks across lines");
    }
    for (const el of document.querySelectorAll(".scroll")) {
        if (el.scrollWidth > el.clientWidth + 1) bad.push(name(el) + ": scrolls sideways");
    }
    for (const a of document.querySelectorAll(".calendar td a, .calendar td > span")) {
        const box = a.getBoundingClientRect();
        for (const part of a.children) {
            const r = part.getBoundingClientRect();
            if (r.width > 0 && getComputedStyle(part).position !== "absolute" && r.right > box.right + 0.5)
                bad.push("calendar cell " + a.textContent + ": spills out");
        }
    }
    for (const li of document.querySelectorAll("ol.events li")) {
        const box = li.getBoundingClientRect();
        for (const part of li.querySelectorAll("bdi, .what, .actor")) {
            const r = part.getBoundingClientRect();
            if (r.width > 0 && r.right > box.right + 0.5)
                bad.push("event " + li.id + ": " + name(part) + " spills out");
        }
    }
    return bad;
}"""


def day(days_ago: int) -> str:
    return TODAY.fromordinal(TODAY.toordinal() - days_ago).isoformat()


def paths(world: ConsoleWorld) -> dict[str, str]:
    room = "/console/rooms/room-1"
    return {
        "rooms": "/console/",
        "calendar": f"{room}/",
        "day": f"{room}/day/{day(1)}",
        "day-names": f"{room}/day/{day(2)}",
        "event": f"{room}/events/{world.ids['needle']}",
        "live": f"{room}/live",
        "insights": f"{room}/insights",
        "transparency": f"{room}/transparency",
        "access-log-all": f"{room}/transparency?mine=1",
    }


async def page_fits(page: Any) -> list[str]:
    problems: list[str] = await page.evaluate(OUT_OF_BOX)
    text = await page.locator("main").inner_text()
    problems += [f"{word!r} shown" for word in ("null", "undefined", "NaN") if f"\n{word}\n" in f"\n{text}\n"]
    if not await page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"):
        width = await page.evaluate("document.documentElement.scrollWidth")
        problems.insert(0, f"the document is {width} px wide")
    return problems


@pytest.mark.parametrize("width", ["phone", "desktop"])
async def test_every_page_fits_its_width(world: ConsoleWorld, sign_in: SignIn, width: str) -> None:
    page = await sign_in("u-owner", viewport=WIDTHS[width])
    LAYOUT.mkdir(parents=True, exist_ok=True)
    found: dict[str, list[str]] = {}
    heights: dict[str, int] = {}
    for name, path in {**paths(world), "sign-in": "/console/sign-in"}.items():
        await open_page(page, world.base_url + path)
        if name == "live":
            await page.get_by_text("Connected").wait_for()
        await page.screenshot(path=str(LAYOUT / f"{name}-{width}.png"), full_page=True)
        heights[name] = await page.evaluate("document.documentElement.scrollHeight")
        problems = await page_fits(page)
        if problems:
            found[name] = problems[:8]
    # the deletion dialog, open, fits too
    await open_page(page, world.base_url + paths(world)["transparency"])
    await page.get_by_role("button", name="Delete this room's logs…").click()
    await page.screenshot(path=str(LAYOUT / f"delete-dialog-{width}.png"))
    dialog = await page.locator("dialog[open]").bounding_box()
    assert dialog and dialog["x"] >= 0 and dialog["x"] + dialog["width"] <= WIDTHS[width]["width"]
    print(f"\nscreenshots at {width} width: {LAYOUT}; page heights (px): {heights}")
    assert not found, found
    assert page.errors == []  # type: ignore[attr-defined]


async def test_staff_and_moderators_pages_fit_at_phone_width(world: ConsoleWorld, sign_in: SignIn) -> None:
    staff = await sign_in("s-layout", staff=True, viewport=WIDTHS["phone"])
    await staff.screenshot(path=str(LAYOUT / "rooms-staff-phone.png"), full_page=True)
    assert await page_fits(staff) == []
    mod = await sign_in("u-mod", next_page="/console/rooms/room-1/transparency", viewport=WIDTHS["phone"])
    await mod.screenshot(path=str(LAYOUT / "transparency-moderator-phone.png"), full_page=True)
    assert await page_fits(mod) == []


async def test_the_calendar_keeps_each_days_count_in_its_cell(world: ConsoleWorld, sign_in: SignIn) -> None:
    page = await sign_in("u-owner", viewport=WIDTHS["phone"])
    if day(1)[:7] != day(0)[:7]:
        await open_page(page, f"{world.base_url}/console/rooms/room-1/?month={day(1)[:7]}")
    else:
        await open_page(page, f"{world.base_url}/console/rooms/room-1/")
    width = await page.evaluate("document.querySelector('table.calendar').getBoundingClientRect().width")
    assert width <= 375
    cell = page.locator(f"td.active a[data-day='{day(1)}']")
    assert await cell.evaluate("a => a.scrollWidth <= a.clientWidth")
    # the count is shown, its unit is still read out
    assert (await cell.inner_text()).split("\n")[1].startswith("12")
    assert "12 events" in await cell.text_content()
    assert "Days are UTC days" in await page.locator("main").inner_text()


async def test_a_right_to_left_override_in_a_name_does_not_reverse_the_id_after_it(
    world: ConsoleWorld, sign_in: SignIn
) -> None:
    for viewport in WIDTHS.values():
        page = await sign_in("u-owner", next_page=f"/console/rooms/room-1/day/{day(2)}", viewport=viewport)
        item = page.locator(f"li[data-event-id='{world.ids['rlo_chat']}']")
        assert await item.locator(".actor bdi.name").get_attribute("title") == RLO_NAME
        # the id is drawn left to right: each character's box is right of the one before it
        lefts = await item.locator(".actor .uid bdi.id").evaluate(
            """el => {
                const text = el.firstChild, out = [];
                for (let i = 0; i < text.length; i++) {
                    const range = document.createRange();
                    range.setStart(text, i);
                    range.setEnd(text, i + 1);
                    out.push(range.getBoundingClientRect().left);
                }
                return out;
            }"""
        )
        assert len(lefts) == len("u-rlo-user") and lefts == sorted(lefts), lefts
        # and the closing parenthesis after it stays after it
        closing = await item.locator(".actor .uid").evaluate(
            """el => {
                const range = document.createRange();
                range.selectNodeContents(el.lastChild);
                return range.getBoundingClientRect().left;
            }"""
        )
        assert closing > lefts[-1]


async def test_a_64_character_name_neither_widens_nor_overlaps(world: ConsoleWorld, sign_in: SignIn) -> None:
    url = f"/console/rooms/room-1/day/{day(2)}"
    phone = await sign_in("u-owner", next_page=url, viewport=WIDTHS["phone"])
    assert await phone.evaluate("document.documentElement.scrollWidth") <= 375
    name = phone.locator(f"li[data-event-id='{world.ids['long_chat']}'] .actor bdi.name")
    assert await name.get_attribute("title") == LONG_NAME  # the whole name on hover
    assert await name.evaluate("el => el.scrollWidth > el.clientWidth")  # ellipsized
    desktop = await sign_in("u-owner", next_page=url, viewport=WIDTHS["desktop"])
    item = desktop.locator(f"li[data-event-id='{world.ids['long_chat']}']")
    actor = await item.locator(".actor").bounding_box()
    name_box = await item.locator(".actor bdi.name").bounding_box()
    chat = await item.locator(".what").bounding_box()
    assert actor and name_box and chat
    assert name_box["x"] + name_box["width"] <= chat["x"], (name_box, chat)
    assert actor["x"] + actor["width"] <= chat["x"]
    # the id after it is whole: one line, never broken
    uid = item.locator(".actor .uid")
    assert await uid.inner_text() == "(u-long-name)"
    assert await uid.evaluate("el => el.getClientRects().length") == 1


async def test_an_event_id_is_shown_whole_at_phone_width(world: ConsoleWorld, sign_in: SignIn) -> None:
    page = await sign_in(
        "u-owner", next_page=f"/console/rooms/room-1/events/{world.ids['needle']}", viewport=WIDTHS["phone"]
    )
    event_id = page.locator("dl.facts code bdi.id")
    assert await event_id.inner_text() == world.ids["needle"]
    assert await event_id.evaluate("el => el.scrollWidth <= el.clientWidth")  # not cut by the ellipsis


async def test_a_month_with_every_event_type_fits_the_desktop_calendar(
    world: ConsoleWorld, sign_in: SignIn
) -> None:
    """A busy room's month, every type of the contract on one day, thousands of some: the calendar's
    "Events per type" table was wider than its box at 1280 px (an outside tester, on the simulator's rooms),
    so the page scrolled sideways inside it."""
    room, owner, the_day = "room-every-type", ev.user("u-every-type", "Eve"), day_at(5, 0)
    users = [ev.user(f"u-et-{i}", f"Visitor {i}") for i in range(60)]
    sent: list[dict[str, Any]] = [ev.permissions_changed(room, None, "owner_transferred", owner)]
    for i in range(12_000):
        sent.append(ev.chat_message(room, users[i % 60], f"line {i}"))
    for i in range(1_200):
        sent.append(ev.user_entered(room, users[i % 60]))
        sent.append(ev.user_left(room, users[i % 60], "quit"))
    for action in (EventType.MOD_WARN, EventType.MOD_MUTE, EventType.MOD_UNMUTE, EventType.MOD_KICK,
                   EventType.MOD_BAN, EventType.MOD_UNBAN):  # fmt: skip
        sent.append(ev.moderation(action, room, owner, users[1], "rule 3"))
    sent.append(ev.gift_sent(room, users[2], owner, "rose-1", 5, item_name="Rose"))
    sent.append(ev.settings_changed(room, owner, {"max_occupancy": (20, 40)}))
    sent.append(ev.permissions_changed(room, owner, "moderator_added", users[3]))
    assert world.publisher is not None
    for i, event in enumerate(sent):  # one every 0.9 s: no flood, no raid, the types' counts as sent
        event["occurred_at"] = stamp(the_day + timedelta(seconds=0.9 * i))
        event["event_id"] = str(uuid.uuid4())
        await world.publisher.send(event)
    await world.publisher.flush()
    deadline = time.monotonic() + 120
    count = "SELECT count(*) AS n FROM events WHERE room_id = $1"
    while (await world.fetch(count, room))[0]["n"] < len(sent):
        assert time.monotonic() < deadline, "the room's events were not all stored"
        await asyncio.sleep(0.2)

    page = await sign_in("u-every-type", viewport=WIDTHS["desktop"])
    await open_page(page, f"{world.base_url}/console/rooms/{room}/?month={the_day:%Y-%m}")
    await page.screenshot(path=str(LAYOUT / "calendar-every-type-desktop.png"), full_page=True)
    headers = await page.locator("table.counts thead th").all_inner_texts()
    assert len(headers) == 2 + 12 + 1, headers  # day, total, every type, seal
    assert await page_fits(page) == []
    assert "12,000 chat" in await page.locator(f"td.active a[data-day='{the_day:%Y-%m-%d}']").inner_text()
