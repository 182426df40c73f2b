"""The API endpoints the console added, as any client sees them: answers, refusals and audit rows."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import date, timedelta
from typing import Any

import httpx
import jwt
import pytest
from console_world import GUEST, JWT_KEY, MOD, TICKET, TODAY, ConsoleWorld, token

from pipeline.events.contract import EventType
from pipeline.publisher import events as ev
from pipeline.retention_rules import is_expired
from pipeline.retention_rules import purged_on as purge_day


def bearer(sub: str, **claims: Any) -> dict[str, str]:
    if claims:
        now = int(time.time())
        return {"Authorization": "Bearer " + jwt.encode({"sub": sub, "exp": now + 300, **claims}, JWT_KEY)}
    return {"Authorization": f"Bearer {token(sub)}"}


@pytest.fixture
async def api(world: ConsoleWorld) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=world.base_url, timeout=30) as client:
        yield client


async def test_my_rooms(api: httpx.AsyncClient) -> None:
    owner = (await api.get("/v1/me/rooms", headers=bearer("u-owner"))).json()["rooms"]
    assert {(r["room_id"], r["role"]) for r in owner} >= {("room-1", "owner")}
    mod = (await api.get("/v1/me/rooms", headers=bearer("u-mod"))).json()["rooms"]
    assert [(r["room_id"], r["role"], r["privacy"]) for r in mod] == [("room-1", "moderator", "private")]
    assert (await api.get("/v1/me/rooms", headers=bearer("u-guest"))).json()["rooms"] == []
    service = await api.get("/v1/me/rooms", headers=bearer("svc", kind="service", scope="rooms:read"))
    assert service.status_code == 403


async def test_event_context(api: httpx.AsyncClient, world: ConsoleWorld) -> None:
    url = f"/v1/rooms/room-1/events/{world.ids['needle']}/context"
    doc = (await api.get(url, params={"before": 3, "after": 2}, headers=bearer("u-mod"))).json()
    assert doc["event"]["event_id"] == world.ids["needle"]
    assert [e["event_id"] for e in doc["before"]] == [world.ids[n] for n in ("before3", "before4", "script")]
    assert [e["event_id"] for e in doc["after"]] == [world.ids["mute"], world.ids["after0"]]
    other = await api.get(
        f"/v1/rooms/room-2/events/{world.ids['needle']}/context", headers=bearer("u-owner2")
    )
    assert other.status_code == 404
    denied = await api.get(url, headers=bearer("u-owner2"))
    assert denied.status_code == 403
    assert (await api.get(url, params={"before": 51}, headers=bearer("u-mod"))).status_code == 400


async def test_insights(api: httpx.AsyncClient) -> None:
    doc = (await api.get("/v1/rooms/room-1/insights", params={"weeks": 1, "tz": "Europe/Berlin"},
                         headers=bearer("u-owner"))).json()  # fmt: skip
    assert doc["tz"] == "Europe/Berlin" and len(doc["days"]) == 7 and len(doc["hour_of_day"]) == 24
    assert sum(doc["hour_of_day"]) == sum(doc["day_of_week"]) == doc["total"] > 0
    assert doc["top_chatters"][0]["user_id"] == "u-guest"
    assert sum(w["moderation"].get("mute", 0) for w in doc["weekly"]) >= 1
    bad = await api.get("/v1/rooms/room-1/insights", params={"tz": "Mars/Olympus"}, headers=bearer("u-owner"))
    assert bad.status_code == 400 and bad.json()["error"]["details"] == {"parameter": "tz"}


async def test_access_log_is_for_the_owner_and_staff(api: httpx.AsyncClient, world: ConsoleWorld) -> None:
    await api.get("/v1/rooms/room-1/days", headers={**bearer("s-auditor", roles=["support_staff"]),
                                                      "X-Access-Reason": TICKET})  # fmt: skip
    page = await api.get("/v1/rooms/room-1/access-log", params={"limit": 1}, headers=bearer("u-owner"))
    assert page.status_code == 200
    doc = page.json()
    [newest] = doc["entries"]
    assert newest["subject"] == "s-auditor" and newest["staff_reason"] == TICKET
    older = await api.get("/v1/rooms/room-1/access-log", params={"limit": 1, "cursor": doc["next_cursor"]},
                          headers=bearer("u-owner"))  # fmt: skip
    assert older.json()["entries"][0]["at"] <= newest["at"]
    # the cursor is the owner's: another caller cannot use it
    staff = {**bearer("s-auditor", roles=["support_staff"]), "X-Access-Reason": TICKET}
    stolen = await api.get(
        "/v1/rooms/room-1/access-log", params={"cursor": doc["next_cursor"]}, headers=staff
    )
    assert stolen.status_code == 400
    refused = await api.get("/v1/rooms/room-1/access-log", headers=bearer("u-mod"))
    assert refused.status_code == 403
    audited = (await world.audit("u-mod", action="access_log.read", outcome="denied"))[-1]
    assert audited["http_status"] == 403


async def test_access_log_filters_by_who_what_and_outcome(api: httpx.AsyncClient) -> None:
    await api.get("/v1/rooms/room-1/days", headers=bearer("u-mod"))
    await api.get("/v1/rooms/room-1/access-log", headers=bearer("u-mod"))  # refused: a moderator
    await api.get("/v1/rooms/room-1/days", headers=bearer("u-owner"))
    owner = bearer("u-owner")

    async def entries(**params: Any) -> list[dict[str, Any]]:
        answer = await api.get("/v1/rooms/room-1/access-log", params={"limit": 200, **params}, headers=owner)
        assert answer.status_code == 200, answer.text
        return list(answer.json()["entries"])

    assert {e["subject"] for e in await entries(subject="u-mod")} == {"u-mod"}
    assert {e["action"] for e in await entries(action="days")} == {"days"}
    denied = await entries(subject="u-mod", outcome="denied")
    assert denied and {(e["action"], e["outcome"]) for e in denied} >= {("access_log.read", "denied")}
    others = await entries(exclude_own="true")
    assert others and "u-owner" not in {e["subject"] for e in others}
    assert "u-owner" in {e["subject"] for e in await entries()}
    # a cursor is bound to its filters
    page = (await api.get("/v1/rooms/room-1/access-log", params={"limit": 1, "subject": "u-mod"},
                          headers=owner)).json()  # fmt: skip
    assert page["next_cursor"]
    unfiltered = {"cursor": page["next_cursor"]}
    assert (await api.get("/v1/rooms/room-1/access-log", params=unfiltered, headers=owner)).status_code == 400
    for bad in ({"outcome": "maybe"}, {"action": "DROP TABLE"}, {"exclude_own": "yes"}):
        refused = await api.get("/v1/rooms/room-1/access-log", params=bad, headers=owner)
        assert refused.status_code == 400, bad


async def test_a_live_view_the_reader_closes_ends_normally(
    api: httpx.AsyncClient, world: ConsoleWorld
) -> None:
    before = len(await world.audit("u-mod", action="tail"))
    async with api.stream("GET", "/v1/rooms/room-1/tail", headers=bearer("u-mod")) as stream:
        assert stream.status_code == 200
        async for _ in stream.aiter_lines():
            break  # the reader leaves after the first line
    deadline = time.monotonic() + 10
    while len(ended := (await world.audit("u-mod", action="tail"))[before:]) < 2:
        assert time.monotonic() < deadline, ended
        await asyncio.sleep(0.1)
    assert [(e["outcome"], e["detail"]) for e in ended] == [("started", None), ("finished", "client_closed")]


async def test_retention_answers_when_the_next_purge_comes(api: httpx.AsyncClient) -> None:
    doc = (await api.get("/v1/rooms/room-1/retention", headers=bearer("u-mod"))).json()
    assert (doc["retention_class"], doc["retention_days"]) == ("private", 30)
    [stored] = doc["stored"]
    oldest = date.fromisoformat(stored["oldest_day"])
    assert stored["next_purge_on"] == purge_day(oldest, 30).isoformat()
    assert doc["deletion_requests"] is None and doc["legal_hold"] is None  # a moderator's view
    for days in (1, 3, 30):
        purge = purge_day(oldest, days)
        assert is_expired(oldest, purge, days) and not is_expired(oldest, purge - timedelta(days=1), days)


async def test_sessions_are_for_people(api: httpx.AsyncClient) -> None:
    service = await api.post("/v1/session", headers=bearer("svc", kind="service", scope="rooms:read"))
    assert service.status_code == 403
    foreign = await api.post("/v1/session", headers={**bearer("u-owner"), "Origin": "https://evil.example"})
    assert foreign.status_code == 403 and foreign.json()["error"]["code"] == "csrf_failed"
    made = await api.post("/v1/session", headers=bearer("u-guest"))
    assert made.status_code == 201
    cookie = made.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Secure" in cookie
    jar = {"Cookie": cookie.split(";", 1)[0]}
    me = (await api.get("/v1/session", headers=jar)).json()
    assert (me["subject"], me["kind"], me["session"]) == ("u-guest", "user", True)
    reason = await api.put("/v1/session/reason", json={"reason": TICKET},
                           headers={**jar, "X-CSRF-Token": me["csrf_token"]})  # fmt: skip
    assert reason.status_code == 403  # only support staff state a case


async def test_live_tail_resumes_after_last_event_id(api: httpx.AsyncClient, world: ConsoleWorld) -> None:
    missed = await world.publish(ev.chat_message("room-1", GUEST, "sent while you were away"), wait=True)
    headers = {**bearer("u-owner"), "Last-Event-ID": world.ids["today"]}
    delivered = False
    async with api.stream("GET", "/v1/rooms/room-1/tail", headers=headers) as stream:
        assert stream.status_code == 200
        async for line in stream.aiter_lines():
            if line == f"id: {missed}":
                delivered = True
                break
    assert delivered, "the event ingested after Last-Event-ID was not sent"
    started = (await world.audit("u-owner", action="tail", outcome="started"))[-1]
    assert started["filters"] == {"resume_after": world.ids["today"]}


async def test_calendar_counts_stay_true_when_a_late_event_arrives(
    api: httpx.AsyncClient, world: ConsoleWorld
) -> None:
    three_days_ago = (TODAY - timedelta(days=3)).isoformat()
    params = {"from": three_days_ago, "to": three_days_ago}

    async def counts() -> dict[str, int]:
        doc = (await api.get("/v1/rooms/room-1/days", params=params, headers=bearer("u-owner"))).json()
        return dict(doc["days"][0]["by_type"])

    before = await counts()
    assert await counts() == before  # answered again, from the counts kept for a past day
    late = ev.moderation(EventType.MOD_KICK, "room-1", MOD, GUEST, "late report")
    late["occurred_at"] = f"{three_days_ago}T23:00:00.000000Z"
    await world.publish(late, wait=True)
    after = await counts()
    assert after == {**before, "moderation.kick": before.get("moderation.kick", 0) + 1}
