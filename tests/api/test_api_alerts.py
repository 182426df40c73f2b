"""A room's alerts: listed and paged newest first, filtered by day and detector, counted per day in the
calendar's `days` and per room in "my rooms", listed in a user's record, carried by the live tail; read
as the room's logs (a regular user refused) and audited.

Alerts are stored here with `pipeline.storage.alerts.insert`, as the worker's detectors store them.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from api_world import World, bearer, staff

from pipeline.storage import alerts as stored

OWNER = bearer("u-owner")
NOW = datetime.now(UTC).replace(microsecond=0)


def _alert(detector: str, start: datetime, users: tuple[str, ...], room: str = "room-a") -> stored.Alert:
    return stored.Alert(
        retention_class="private",
        room_id=room,
        detector=detector,
        subject=users[0],
        window_key=start.replace(second=0),
        window_start=start,
        window_end=start + timedelta(seconds=30),
        users=users,
        counts={"n": 12, "limit": 10},
        event_ids=(uuid.uuid4(), uuid.uuid4()),
    )


async def _store(world: World, *alerts: stored.Alert) -> None:
    conn = await world.admin()
    try:
        async with conn.transaction():
            await stored.insert(conn, list(alerts))
    finally:
        await conn.close()


#: Five alerts of room-a over two days (one a minute apart), one of room-b.
async def _five(world: World) -> list[stored.Alert]:
    yesterday = NOW - timedelta(days=1)
    made = [
        _alert("chat_flood", yesterday - timedelta(minutes=3), ("u-chat",)),
        _alert("spam_wave", yesterday - timedelta(minutes=2), ("u-chat", "u-other")),
        _alert("chat_flood", NOW - timedelta(minutes=30), ("u-other",)),
        _alert("moderator_abuse", NOW - timedelta(minutes=20), ("u-mod", "u-chat")),
        _alert("chat_flood", NOW - timedelta(minutes=10), ("u-chat",)),
    ]
    await _store(world, *made, _alert("raid", NOW - timedelta(minutes=5), ("u-x",), room="room-b"))
    return made


@pytest.mark.parametrize(
    ("headers", "status", "basis"),
    [
        (OWNER, 200, "owner"),
        (bearer("u-mod"), 200, "moderator"),
        (staff(), 200, "staff"),
        (bearer("u-chat"), 403, "forbidden"),
        (bearer("u-owner-b"), 403, "forbidden"),
    ],
    ids=["owner", "moderator", "staff", "regular_user", "another_rooms_owner"],
)
async def test_read_as_the_rooms_logs_and_audited(
    app_factory: Any, small_world: World, headers: dict[str, str], status: int, basis: str
) -> None:
    await _five(small_world)
    client, _ = await app_factory(small_world)
    r = await client.get("/v1/rooms/room-a/alerts", headers=headers)
    assert r.status_code == status, r.text
    audit = await small_world.audit_rows(r.headers["x-request-id"])
    assert [(a["action"], a["room_id"]) for a in audit] == [("alerts.list", "room-a")]
    if status == 200:
        assert (audit[0]["outcome"], audit[0]["basis"], audit[0]["row_count"]) == ("ok", basis, 5)
        assert len(r.json()["alerts"]) == 5
    else:
        assert (audit[0]["outcome"], audit[0]["detail"]) == ("denied", basis)
        assert r.json()["error"]["code"] == basis


async def test_newest_first_paged_and_filtered(app_factory: Any, small_world: World) -> None:
    made = await _five(small_world)
    client, _ = await app_factory(small_world)
    newest_first = sorted(made, key=lambda a: a.window_start, reverse=True)
    got: list[dict[str, Any]] = []
    cursor = None
    for _ in range(10):
        params = {"limit": "2", **({"cursor": cursor} if cursor else {})}
        r = await client.get("/v1/rooms/room-a/alerts", params=params, headers=OWNER)
        assert r.status_code == 200, r.text
        assert len(r.json()["alerts"]) <= 2
        got += r.json()["alerts"]
        cursor = r.json()["next_cursor"]
        if cursor is None:
            break
    assert [(a["detector"], a["users"]) for a in got] == [(a.detector, list(a.users)) for a in newest_first]
    assert {a["room_id"] for a in got} == {"room-a"}
    assert got[0]["counts"] == {"n": 12, "limit": 10} and len(got[0]["event_ids"]) == 2
    r = await client.get("/v1/rooms/room-a/alerts", params={"detector": "chat_flood"}, headers=OWNER)
    assert [a["detector"] for a in r.json()["alerts"]] == ["chat_flood"] * 3
    yesterday = (NOW - timedelta(days=1)).date().isoformat()
    r = await client.get("/v1/rooms/room-a/alerts", params={"day": yesterday}, headers=OWNER)
    assert sorted(a["detector"] for a in r.json()["alerts"]) == sorted(
        a.detector for a in made if a.window_start.date().isoformat() == yesterday
    )
    first = await client.get("/v1/rooms/room-a/alerts", params={"limit": "2"}, headers=OWNER)
    moved = {"detector": "spam_wave", "cursor": first.json()["next_cursor"]}
    other = await client.get("/v1/rooms/room-a/alerts", params=moved, headers=OWNER)
    assert (other.status_code, other.json()["error"]["code"]) == (400, "invalid_cursor")


async def test_days_and_my_rooms_count_them(app_factory: Any, small_world: World) -> None:
    made = await _five(small_world)
    client, _ = await app_factory(small_world)
    first = (NOW - timedelta(days=2)).date().isoformat()
    r = await client.get("/v1/rooms/room-a/days", params={"from": first}, headers=OWNER)
    expected = await small_world.fetch(
        "SELECT (window_start AT TIME ZONE 'UTC')::date AS day, detector, count(*) AS n FROM alerts "
        "WHERE room_id = 'room-a' GROUP BY 1, 2"
    )
    counted: dict[str, dict[str, int]] = {}
    for e in expected:
        counted.setdefault(e["day"].isoformat(), {})[e["detector"]] = e["n"]
    days = {d["day"]: d["alerts"] for d in r.json()["days"]}
    # the calendar lists days with events; each of them says its alerts
    assert {d: a for d, a in days.items() if a} == {d: c for d, c in counted.items() if d in days}
    r = await client.get("/v1/me/rooms", headers=OWNER)
    assert {x["room_id"]: x["alerts"] for x in r.json()["rooms"]} == {"room-a": len(made)}


async def test_a_users_record_lists_the_alerts_naming_them(app_factory: Any, small_world: World) -> None:
    made = await _five(small_world)
    client, _ = await app_factory(small_world)
    r = await client.get("/v1/rooms/room-a/users/u-chat", headers=OWNER)
    assert r.status_code == 200, r.text
    naming = sorted((a for a in made if "u-chat" in a.users), key=lambda a: a.window_start, reverse=True)
    assert [a["detector"] for a in r.json()["alerts"]] == [a.detector for a in naming]
    assert r.json()["more_alerts"] is False
    r = await client.get("/v1/rooms/room-a/users/u-nobody", headers=OWNER)
    assert (r.json()["alerts"], r.json()["more_alerts"]) == ([], False)


async def test_the_live_tail_carries_new_alerts_of_the_room(app_factory: Any, small_world: World) -> None:
    client, _ = await app_factory(small_world, tail_max_seconds=1.5, tail_poll_seconds=0.05)
    # stored a minute before the stream starts: not sent (only the last seconds before it may come again)
    await _store(small_world, _alert("chat_flood", NOW - timedelta(hours=1), ("u-before",)))
    await small_world.fetch("UPDATE alerts SET raised_at = raised_at - interval '1 minute'")

    async def later() -> stored.Alert:
        await asyncio.sleep(0.4)
        mine = _alert("chat_flood", datetime.now(UTC), ("u-chat",))
        await _store(small_world, mine, _alert("raid", datetime.now(UTC), ("u-x",), room="room-b"))
        return mine

    response, _ = await asyncio.gather(client.get("/v1/rooms/room-a/tail", headers=OWNER), later())
    assert response.status_code == 200
    frames = []
    for block in response.text.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line and line[0] != ":")
        if "event" in fields:
            frames.append((fields["event"], fields.get("id"), fields["data"]))
    alerts = [(orjson.loads(d), i) for kind, i, d in frames if kind == "alert"]
    assert [(a["detector"], a["users"], i) for a, i in alerts] == [("chat_flood", ["u-chat"], None)]
    audit = await small_world.audit_rows(response.headers["x-request-id"])
    assert audit[-1]["row_count"] == 1
