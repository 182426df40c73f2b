"""Every console page passes axe-core (vendored, see vendor/README.md) without serious or critical
violations, at desktop and phone width, and renders charts without any network request but its own."""

from __future__ import annotations

import pytest
from browsing import PHONE, SignIn, axe_violations, open_page, shot
from console_world import TODAY, ConsoleWorld


def day(days_ago: int) -> str:
    return TODAY.fromordinal(TODAY.toordinal() - days_ago).isoformat()


@pytest.mark.parametrize("viewport", [None, PHONE], ids=["desktop", "phone"])
async def test_every_page_passes_axe(
    world: ConsoleWorld, sign_in: SignIn, viewport: dict[str, int] | None
) -> None:
    options = {"bypass_csp": True}  # only so that the test can inject axe-core
    if viewport:
        options["viewport"] = viewport  # type: ignore[assignment]
    page = await sign_in("u-owner", **options)
    suffix = "-phone" if viewport else ""
    paths = {
        "rooms": "/console/",
        "calendar": "/console/rooms/room-1/",
        "day": f"/console/rooms/room-1/day/{day(1)}",
        "event": f"/console/rooms/room-1/events/{world.ids['needle']}",
        "live": "/console/rooms/room-1/live",
        "insights": "/console/rooms/room-1/insights",
        "transparency": "/console/rooms/room-1/transparency",
        "no-access": "/console/rooms/room-2/",
    }
    found = {}
    for name, path in paths.items():
        await open_page(page, world.base_url + path)
        await shot(page, f"a11y-{name}{suffix}")
        violations = await axe_violations(page)
        if violations:
            found[name] = violations
    await open_page(page, world.base_url + "/console/sign-in")
    violations = await axe_violations(page)
    if violations:
        found["sign-in"] = violations
    assert not found, found


async def test_the_deletion_dialog_passes_axe(world: ConsoleWorld, sign_in: SignIn) -> None:
    page = await sign_in("u-owner", next_page="/console/rooms/room-1/transparency", bypass_csp=True)
    await page.get_by_role("button", name="Delete this room's logs…").click()
    assert await page.locator("dialog[open]").count() == 1
    assert await axe_violations(page) == []
    await page.keyboard.press("Escape")


async def test_insights_draw_their_charts_from_this_origin_only(world: ConsoleWorld, sign_in: SignIn) -> None:
    page = await sign_in("u-owner")
    requested: list[str] = []
    page.on("request", lambda r: requested.append(r.url))
    await open_page(page, world.base_url + "/console/rooms/room-1/insights")
    await shot(page, "insights")
    charts = page.locator("figure.chart-box")
    assert await charts.count() == 5
    titles = await charts.locator("figcaption").all_inner_texts()
    assert titles[2:] == ["Entries and exits per day", "Moderation actions per week", "Gifts per week"]
    assert await page.locator("svg.chart rect.bar").count() > 10
    top = await page.locator("table.chatters tbody tr").all_inner_texts()
    assert top[0].startswith("Gus (u-guest)")
    assert requested and all(url.startswith(world.base_url) for url in requested)
