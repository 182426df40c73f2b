"""An owner reviews an incident: calendar, a day, filters, a search, the reported message in its context,
an export; chat that carries markup shows as typed and runs nothing."""

from __future__ import annotations

import csv
import io

from browsing import PHONE, SignIn, open_page, ready, shot
from console_world import NEEDLE, SCRIPT_PAYLOAD, TODAY, ConsoleWorld

from pipeline.console import CONTENT_SECURITY_POLICY


def day(days_ago: int) -> str:
    return TODAY.fromordinal(TODAY.toordinal() - days_ago).isoformat()


async def test_calendar_day_search_and_context(world: ConsoleWorld, sign_in: SignIn) -> None:
    page = await sign_in("u-owner")
    await page.get_by_role("link", name="room-1").click()
    await ready(page)
    if day(1)[:7] != day(0)[:7]:
        await page.get_by_role("link", name="← Previous month").click()
        await ready(page)
    await shot(page, "calendar")
    # the days with activity link to their day view, with their counts per type
    counts = page.locator("table.counts tbody tr")
    days = await counts.locator("th").all_inner_texts()
    assert day(1) in days and (day(3)[:7] != day(1)[:7] or day(3) in days)
    d1_counts = await counts.filter(has=page.locator("th", has_text=day(1))).inner_text()
    assert d1_counts.split("\t")[1] == "12"  # 1 entry, 10 chat lines, 1 mute
    d1 = page.locator(f"td.active a[data-day='{day(1)}']")
    # the shared world's days have no seal: open a while after they end, then waiting for a sealing run
    assert await d1.inner_text() in (
        f"{int(day(1)[8:])}\n12 events\n10 chat · 1 mod\n{state}" for state in ("Open", "No seal yet")
    )
    await d1.click()
    await ready(page)
    await shot(page, "day")
    events = page.locator("ol.events li")
    texts = await events.all_inner_texts()
    assert texts[0].startswith("20:00:00")  # oldest first
    assert any("before the report, line 0" in t for t in texts)
    # only chat
    await page.get_by_label("Chat", exact=True).check()
    await page.get_by_role("button", name="Apply filters").click()
    await ready(page)
    types = await page.locator("ol.events .type").all_inner_texts()
    assert set(types) == {"CHAT"}
    # chat text search
    await page.get_by_label("Chat text contains").fill(NEEDLE)
    await page.get_by_role("button", name="Apply filters").click()
    await ready(page)
    await shot(page, "search")
    found = page.locator("ol.events li")
    assert await found.count() == 1
    assert NEEDLE in await found.inner_text()
    # the event's permanent link shows it between the events just before and after
    await found.locator("a.when").click()
    await ready(page)
    await shot(page, "event-context")
    assert page.url.endswith(f"/console/rooms/room-1/events/{world.ids['needle']}")
    current = page.locator("ol.events li.current")
    assert NEEDLE in await current.inner_text()
    around = await page.locator("ol.events li").all_inner_texts()
    mine = next(i for i, t in enumerate(around) if NEEDLE in t)
    assert "script spam" in around[mine + 1] and SCRIPT_PAYLOAD in around[mine - 1]
    assert page.errors == []  # type: ignore[attr-defined]


async def test_markup_in_chat_shows_as_typed_and_runs_nothing(world: ConsoleWorld, sign_in: SignIn) -> None:
    page = await sign_in("u-owner", next_page=f"/console/rooms/room-1/events/{world.ids['script']}")
    current = page.locator("ol.events li.current .what")
    assert await current.inner_text() == SCRIPT_PAYLOAD
    assert await page.evaluate("window.__pwned") is None
    assert await page.locator("ol.events img, ol.events script, ol.events b").count() == 0
    response = await page.request.get(world.base_url + "/console/rooms/room-1/")
    assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert (
        "frame-ancestors 'none'" in CONTENT_SECURITY_POLICY
        and "'unsafe-inline'" not in CONTENT_SECURITY_POLICY
    )
    assert page.errors == []  # type: ignore[attr-defined]


async def test_export_downloads_what_is_on_screen(world: ConsoleWorld, sign_in: SignIn) -> None:
    page = await sign_in("u-owner", next_page=f"/console/rooms/room-1/day/{day(1)}?q=report")
    on_screen = await page.locator("ol.events li").count()
    assert on_screen == 8  # "before the report" x5, "after the report" x3
    async with page.expect_download() as download_info:
        await page.get_by_role("link", name="CSV").click()
    download = await download_info.value
    rows = list(csv.DictReader(io.StringIO((await download.path()).read_text())))
    assert len(rows) == on_screen
    assert all("the report" in r["body"] for r in rows)
    exports = await world.audit("u-owner", action="export", outcome="finished")
    assert exports and exports[-1]["row_count"] == on_screen


async def test_phone_width_and_keyboard(world: ConsoleWorld, sign_in: SignIn) -> None:
    page = await sign_in("u-mod", next_page=f"/console/rooms/room-1/day/{day(1)}", viewport=PHONE)
    await shot(page, "day-phone")
    assert await page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    # the first Tab reaches the skip link, which moves focus to the content
    await page.keyboard.press("Tab")
    assert await page.evaluate("document.activeElement.textContent") == "Skip to content"
    await page.keyboard.press("Enter")
    assert await page.evaluate("document.activeElement.id") == "main"
    # the room's pages are reachable by keyboard
    await page.keyboard.press("Tab")
    for _ in range(12):
        if await page.evaluate("document.activeElement.textContent") == "Insights":
            break
        await page.keyboard.press("Tab")
    await page.keyboard.press("Enter")
    await page.wait_for_url("**/insights")
    await open_page(page, page.url)
    await shot(page, "insights-phone")
    assert await page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
