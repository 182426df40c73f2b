"""A user's record (user card) one click from any event, and the room's alerts: badges on the room, the
calendar day and the day view, the alerts page, alerts appearing live, and the alerts naming a user on
their card. Every read behind them is audited as a read of the room's logs.

These tests store alerts in the shared world (as the worker's detectors do), on a day the other tests do
not count (two days ago) and at the end of the session's console tests (this file sorts late).
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from browsing import PHONE, SignIn, axe_violations, open_page, ready, shot
from console_world import TODAY, ConsoleWorld, day_at
from test_console_layout import OUT_OF_BOX

from pipeline.detectors.params import DEFAULTS, DETECTORS
from pipeline.publisher import events as ev
from pipeline.storage import alerts as stored
from pipeline.storage import db


def day(days_ago: int) -> str:
    return (TODAY - timedelta(days=days_ago)).isoformat()


async def _store_alert(world: ConsoleWorld, detector: str, start: datetime, users: tuple[str, ...]) -> str:
    conn = await db.connect(world.dsn, world.schema)
    try:
        cls = await conn.fetchval("SELECT retention_class FROM rooms WHERE room_id = 'room-1'")
        alert = stored.Alert(
            retention_class=cls,
            room_id="room-1",
            detector=detector,
            subject=users[0],
            window_key=start,
            window_start=start,
            window_end=start + timedelta(seconds=10),
            users=users,
            counts={"messages": 13, "max_messages": 12},
            event_ids=(uuid.uuid4(),),
        )
        async with conn.transaction():
            rows = await stored.insert(conn, [alert])
        return str(rows[0]["alert_id"])
    finally:
        await conn.close()


async def test_one_click_from_an_events_user_to_their_record(world: ConsoleWorld, sign_in: SignIn) -> None:
    page = await sign_in("u-owner", next_page=f"/console/rooms/room-1/day/{day(3)}")
    spam = page.locator(f"li[data-event-id='{world.ids['spam1']}']")
    await spam.locator(".actor a.user").click()
    await ready(page)
    assert page.url.endswith("/console/rooms/room-1/users/u-target")
    await shot(page, "user-card")
    card = page.locator(".user-card")
    assert "Troublemaker" in await card.locator("h2").inner_text()
    # the counts are what the stored rows say
    did = await world.fetch(
        "SELECT count(*) FILTER (WHERE event_type = 'chat.message') AS chat, "
        "count(*) FILTER (WHERE event_type = 'user.entered') AS entered "
        "FROM events WHERE room_id = 'room-1' AND actor_id = 'u-target'"
    )
    got = await world.fetch(
        "SELECT event_type, count(*) AS n FROM events WHERE room_id = 'room-1' AND target_id = 'u-target' "
        "GROUP BY 1"
    )
    received = {r["event_type"]: r["n"] for r in got}
    assert await page.locator("#n-messages .n").inner_text() == str(did[0]["chat"])
    assert await page.locator("#n-entries .n").inner_text() == str(did[0]["entered"])
    assert await page.locator("#n-moderation-warn .n").inner_text() == str(received.get("moderation.warn", 0))
    assert await page.locator("#n-moderation-mute .n").inner_text() == str(received.get("moderation.mute", 0))
    assert await page.locator("#n-moderation-ban .n").inner_text() == "0"
    # their latest messages, newest first, each theirs
    messages = page.locator("ol.events li")
    assert await messages.count() == did[0]["chat"]
    assert set(await page.locator("ol.events .actor .uid").all_inner_texts()) == {"(u-target)"}
    # the read was audited as a read of the room's logs, with the user's id
    audit = await world.audit("u-owner", action="user_record")
    assert audit and (audit[-1]["room_id"], audit[-1]["user_id"], audit[-1]["basis"]) == (
        "room-1",
        "u-target",
        "owner",
    )
    # their events in the day view: the day view filtered to them
    await page.locator("#their-events").click()
    await ready(page)
    assert "actor=u-target" in page.url
    actors = await page.locator("ol.events .actor .uid").all_inner_texts()
    assert actors and set(actors) == {"(u-target)"}
    # a target is a link to their card too: the warning's moderated user
    await page.goto(f"{world.base_url}/console/rooms/room-1/day/{day(3)}")
    await ready(page)
    warn = page.locator(f"li[data-event-id='{world.ids['warn']}']")
    await warn.locator(".what a.user").click()
    await ready(page)
    assert page.url.endswith("/console/rooms/room-1/users/u-target")
    assert page.errors == []  # type: ignore[attr-defined]


async def test_alerts_badges_page_live_and_on_the_users_card(world: ConsoleWorld, sign_in: SignIn) -> None:
    alert_id = await _store_alert(world, "chat_flood", day_at(2, 12, 5), ("u-target",))
    page = await sign_in("u-owner")
    # the room's badge in "your rooms" opens its alerts page
    row = page.locator("table.grid tbody tr").filter(has_text="room-1")
    badge = row.locator("a.alert-badge")
    assert "1 alert" in await badge.inner_text()
    await badge.click()
    await ready(page)
    await shot(page, "alerts")
    item = page.locator(f"#a-{alert_id}")
    assert "Chat flood" in await item.inner_text()
    # its user links to their card, which lists the alert
    await item.locator("a.user").click()
    await ready(page)
    assert page.url.endswith("/console/rooms/room-1/users/u-target")
    assert await page.locator(f"#a-{alert_id}").count() == 1
    # the calendar day and the day view carry a badge
    await page.goto(f"{world.base_url}/console/rooms/room-1/?month={day(2)[:7]}")
    await ready(page)
    assert await page.locator(f"td.active a[data-day='{day(2)}'] .alert-badge").count() == 1
    assert await page.locator(f"td.active a[data-day='{day(1)}'] .alert-badge").count() == 0
    await page.goto(f"{world.base_url}/console/rooms/room-1/day/{day(2)}")
    await ready(page)
    day_badge = page.locator("#day-alerts a.alert-badge")
    assert "1 alert" in await day_badge.inner_text()
    await day_badge.click()
    await ready(page)
    assert f"day={day(2)}" in page.url and await page.locator(f"#a-{alert_id}").count() == 1
    # an alert raised while the live view is open appears in it
    await page.goto(f"{world.base_url}/console/rooms/room-1/live")
    await page.get_by_text("Connected").wait_for()
    live_id = await _store_alert(
        world, "spam_wave", datetime.now(UTC).replace(microsecond=0), ("u-guest", "u-target")
    )
    live = page.locator(f"#live-alerts #a-{live_id}")
    await live.wait_for(timeout=30_000)
    assert "Spam wave" in await live.inner_text()
    await shot(page, "live-alert")
    await page.wait_for_timeout(5_000)  # past the stream's time limit: the browser reconnected meanwhile
    assert await page.locator("#live-alerts li").count() == 1  # shown once
    reads = await world.audit("u-owner", action="alerts.list")
    assert reads and {r["room_id"] for r in reads} == {"room-1"}
    assert page.errors == []  # type: ignore[attr-defined]


async def test_the_card_and_the_alerts_fit_a_phone_and_pass_axe(world: ConsoleWorld, sign_in: SignIn) -> None:
    await _store_alert(world, "moderator_abuse", day_at(2, 12, 9), ("u-mod", "u-target", "u-long-name"))
    found = {}
    for width in (PHONE, {"width": 1280, "height": 800}):
        page = await sign_in("u-owner", bypass_csp=True, viewport=width)  # bypass: only to inject axe-core
        for name, path in {
            "user": "/console/rooms/room-1/users/u-target",
            "long-name-user": "/console/rooms/room-1/users/u-long-name",
            "alerts": "/console/rooms/room-1/alerts",
            "calendar": f"/console/rooms/room-1/?month={day(2)[:7]}",
            "day": f"/console/rooms/room-1/day/{day(2)}",
            "rooms": "/console/",
        }.items():
            await open_page(page, world.base_url + path)
            await shot(page, f"records-{name}-{width['width']}")
            problems = await page.evaluate(OUT_OF_BOX) + await axe_violations(page)
            if problems:
                found[f"{name} at {width['width']} px"] = problems
        assert page.errors == []  # type: ignore[attr-defined]
    assert not found, found


def test_the_consoles_detector_labels_are_the_detectors() -> None:
    source = (Path(__file__).resolve().parents[2] / "pipeline/console/static/js/alerts.js").read_text()
    block = source.split("export const DETECTORS = [", 1)[1].split("];", 1)[0]
    assert tuple(re.findall(r'\["([a-z_]+)", "[^"]+"\]', block)) == DETECTORS


async def test_a_flood_published_through_the_pipeline_is_flagged_live(
    world: ConsoleWorld, sign_in: SignIn
) -> None:
    """End to end: chat published by the real publisher, stored by the worker, flagged by its detectors in
    the batch's transaction, carried by the tail to the owner's live view, listed on the flooder's card."""
    page = await sign_in("u-owner2", next_page="/console/rooms/room-2/live")
    await page.get_by_text("Connected").wait_for()
    flooder = ev.user("u-flooder", "Flo")
    start = datetime.now(UTC)
    flood = DEFAULTS["chat_flood"]  # more messages than it allows, within half its window
    count = flood["max_messages"] + 2
    step = timedelta(seconds=flood["window_seconds"] / 2 / count)
    for i in range(count):
        message = ev.chat_message("room-2", flooder, f"flood line {i}")
        message["occurred_at"] = (start + step * i).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        await world.publish(message)
    flagged = page.locator("#live-alerts li[data-detector='chat_flood']")
    await flagged.wait_for(timeout=60_000)
    assert "u-flooder" in await flagged.inner_text()
    await shot(page, "live-flood")
    await flagged.locator("a.user").click()
    await ready(page)
    assert await page.locator("#user-alerts ~ ol li[data-detector='chat_flood']").count() == 1
    assert page.errors == []  # type: ignore[attr-defined]
