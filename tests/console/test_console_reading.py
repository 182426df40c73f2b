"""Reading a room as its people do: times in their own zone (UTC on hover, a remembered switch, days stated
as UTC days), a permanent link that opens the whole day at the event (after a reload, and for a moderator
who signs in first), the id fields offering the names seen, insights that label every axis and bar."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from browsing import PHONE, Contexts, SignIn, open_page, ready, shot
from console_world import NEEDLE, TODAY, ConsoleWorld, day_at, stamp

from pipeline.publisher import events as ev


def day(days_ago: int) -> str:
    return TODAY.fromordinal(TODAY.toordinal() - days_ago).isoformat()


async def in_view(page: Any, selector: str) -> bool:
    return bool(
        await page.locator(selector).evaluate(
            "el => { const r = el.getBoundingClientRect(); return r.top >= 0 && r.bottom <= innerHeight; }"
        )
    )


async def test_times_are_the_viewers_with_utc_on_hover_and_a_switch(
    world: ConsoleWorld, sign_in: SignIn
) -> None:
    # 20:00 UTC is 01:30 the next day in Kolkata (UTC+5:30, no summer time)
    url = f"/console/rooms/room-1/day/{day(1)}"
    page = await sign_in("u-owner", next_page=url, timezone_id="Asia/Kolkata")
    first = page.locator("ol.events li time").first
    assert await first.inner_text() == f"01:30:00 ({day(0)})"
    assert await first.get_attribute("title") == f"{day(1)} 20:00:00 UTC"
    assert "Days are UTC days." in await page.locator("main").inner_text()
    local, utc = page.locator("input[name=times][value=local]"), page.locator("input[name=times][value=utc]")
    assert await local.is_checked()
    assert "your time (Asia/" in await page.locator(".zone-switch").inner_text()  # Kolkata, or Calcutta
    async with page.expect_navigation():  # the page reloads in the chosen zone
        await utc.check()
    await ready(page)
    assert await page.locator("ol.events li time").first.inner_text() == "20:00:00"
    # remembered: another page, another load
    await open_page(page, f"{world.base_url}/console/rooms/room-1/events/{world.ids['needle']}")
    assert await utc.is_checked()
    assert (await page.locator("dl.facts time").inner_text()).endswith(" 20:11:00 UTC")
    async with page.expect_navigation():
        await local.check()
    await ready(page)
    assert f"{day(0)} 01:41:00 " in await page.locator("dl.facts time").inner_text()


async def test_open_the_whole_day_scrolls_to_the_event_and_marks_it(
    world: ConsoleWorld, sign_in: SignIn
) -> None:
    needle = world.ids["needle"]
    page = await sign_in("u-owner", next_page=f"/console/rooms/room-1/events/{needle}", viewport=PHONE)
    await page.get_by_role("link", name="Open the whole day").click()
    await page.wait_for_url(f"**#e-{needle}")
    await ready(page)
    assert page.url.endswith(f"/console/rooms/room-1/day/{day(1)}#e-{needle}")
    marked = page.locator("ol.events li.current")
    assert await marked.count() == 1 and NEEDLE in await marked.inner_text()
    assert await marked.get_attribute("aria-current") == "true"
    assert await in_view(page, "ol.events li.current")
    await shot(page, "permalink-day-phone")
    await page.reload()
    await ready(page)
    assert NEEDLE in await page.locator("ol.events li.current").inner_text()
    assert await in_view(page, "ol.events li.current")


async def test_a_shared_day_link_opens_at_the_event_for_a_moderator(
    world: ConsoleWorld, sign_in: SignIn, new_context: Contexts
) -> None:
    needle = world.ids["needle"]
    link = f"/console/rooms/room-1/day/{day(1)}#e-{needle}"
    # opened without a session, the link goes to sign-in and keeps its #fragment in ?next=
    stranger = await (await new_context()).new_page()
    await stranger.goto(world.base_url + link)
    await stranger.wait_for_url("**/console/sign-in?next=*")
    assert stranger.url.endswith(f"%23e-{needle}")
    # a moderator of the room signing in from it lands on the event, marked and in view
    page = await sign_in("u-mod", next_page=link, viewport=PHONE)
    assert page.url.endswith(f"#e-{needle}")
    assert NEEDLE in await page.locator("ol.events li.current").inner_text()
    assert await in_view(page, "ol.events li.current")


async def test_the_acting_user_field_offers_the_names_seen(world: ConsoleWorld, sign_in: SignIn) -> None:
    page = await sign_in("u-owner", next_page=f"/console/rooms/room-1/day/{day(1)}")
    field = page.get_by_label("Acting user id")
    assert await field.get_attribute("list") == "users-seen"
    assert "user id" in await page.locator("#actor-hint").inner_text()
    options = await page.locator("datalist#users-seen option").evaluate_all(
        "os => os.map(o => [o.value, o.label])"
    )
    assert ["u-guest", "Gus (u-guest)"] in options and ["u-mod", "Mo the moderator (u-mod)"] in options
    await field.fill("u-mod")
    await page.get_by_role("button", name="Apply filters").click()
    await page.wait_for_url("**actor=u-mod*")
    await ready(page)
    assert set(await page.locator("ol.events .type").all_inner_texts()) == {"MUTE"}


async def test_insights_label_every_axis_and_bar_and_say_why_when_empty(
    world: ConsoleWorld, sign_in: SignIn
) -> None:
    page = await sign_in("u-owner", next_page="/console/rooms/room-1/insights?weeks=1")
    assert await page.get_by_label("Range").input_value() == "1"
    entries = page.locator("figure.chart-box", has_text="Entries and exits per day")
    labels = await entries.locator("text.bar-label").all_text_contents()
    assert len(labels) == 7 and labels[-1] == day(0)[5:]  # today's bar has its date
    assert len(await entries.locator("text.axis-title").all_text_contents()) == 2
    for chart in await page.locator("figure.chart-box:has(svg)").all():
        assert await chart.locator("text.axis-title").count() == 2
        assert await chart.locator("text.bar-label").count() > 0
    await page.get_by_label("Range").select_option("12")
    await page.get_by_role("button", name="Show").click()
    await page.wait_for_url("**weeks=12*")
    await ready(page)
    assert "weeks=12" in page.url
    await shot(page, "insights-12-weeks")
    # a room with no entries, exits, moderation or gifts says so instead of drawing empty frames
    other = await sign_in("u-owner2", next_page="/console/rooms/room-2/insights")
    text = await other.locator("main").inner_text()
    assert "Nobody entered or left the room" in text and "No gifts were sent" in text
    assert "No warnings, mutes, kicks or bans" in text


async def test_a_permanent_link_past_the_days_first_page_opens_its_page(
    world: ConsoleWorld, sign_in: SignIn
) -> None:
    room, owner = "room-busy", ev.user("u-busy-owner", "Bea")
    await world.publish(ev.settings_changed(room, owner, {"privacy": (None, "private")}))
    await world.publish(ev.permissions_changed(room, None, "owner_transferred", owner))
    ids = []
    for i in range(130):  # more than the day view's page of 100
        event = ev.chat_message(room, owner, f"line {i:03d}")
        event["occurred_at"] = stamp(day_at(2, 8) + timedelta(seconds=i))
        ids.append(await world.publish(event, wait=i == 129))
    wanted = ids[120]
    page = await sign_in("u-busy-owner", next_page=f"/console/rooms/{room}/events/{wanted}")
    await page.get_by_role("link", name="Open the whole day").click()
    await page.wait_for_url(f"**cursor=*#e-{wanted}")
    await ready(page)
    marked = page.locator("ol.events li.current")
    assert "line 120" in await marked.inner_text()
    assert await in_view(page, "ol.events li.current")
    assert await page.get_by_role("link", name="First page").count() == 1
    await page.reload()
    await ready(page)
    assert "line 120" in await page.locator("ol.events li.current").inner_text()
