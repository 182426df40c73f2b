"""What owners, moderators and staff can ask: events by range and filters, one event, days, histories."""

from __future__ import annotations

from datetime import timedelta

import httpx
from api_world import CHAT_LINES, NOW, RANGE, STAFF_TICKET, World, bearer, iso, staff

OWNER = bearer("u-owner")
MOD = bearer("u-mod")


async def test_owner_reads_the_rooms_events_newest_first(
    api: httpx.AsyncClient, pipeline_world: World
) -> None:
    r = await api.get("/v1/rooms/room-1/events", params=RANGE, headers=OWNER)
    assert r.status_code == 200, r.text
    events = r.json()["events"]
    assert len(events) == pipeline_world.counts["room-1"]
    stamps = [e["occurred_at"] for e in events]
    assert stamps == sorted(stamps, reverse=True)
    assert {e["room_id"] for e in events} == {"room-1"}
    assert r.json()["next_cursor"] is None


async def test_filters_combine(api: httpx.AsyncClient, pipeline_world: World) -> None:
    params = {
        **RANGE,
        "type": ["moderation.warn", "moderation.mute", "moderation.kick"],
        "target": "u-target",
    }
    r = await api.get("/v1/rooms/room-1/events", params=params, headers=MOD)
    assert r.status_code == 200, r.text
    got = {e["event_id"] for e in r.json()["events"]}
    assert got == {pipeline_world.ids[n] for n in ("warn1", "mute1", "kick1")}
    r = await api.get("/v1/rooms/room-1/events", params={**params, "actor": "u-mod"}, headers=MOD)
    assert {e["event_id"] for e in r.json()["events"]} == {pipeline_world.ids[n] for n in ("warn1", "mute1")}


async def test_text_search_is_case_insensitive_and_literal(
    api: httpx.AsyncClient, pipeline_world: World
) -> None:
    async def search(q: str) -> list[str]:
        r = await api.get("/v1/rooms/room-1/events", params={**RANGE, "q": q}, headers=OWNER)
        assert r.status_code == 200, r.text
        return [e["body"] for e in r.json()["events"]]

    assert sorted(await search("hello")) == sorted([CHAT_LINES[0], CHAT_LINES[5]])
    assert await search("100%") == [CHAT_LINES[1]]
    assert await search("t_o") == [CHAT_LINES[1]]  # _ is a character, not a wildcard
    assert await search("%%%") == []
    assert await search("'); DROP") == [CHAT_LINES[2]]
    assert await search("spamming") == ["still spamming", "spamming"]  # moderation reasons too


async def test_oldest_first_and_pagination_visit_every_event_once(
    api: httpx.AsyncClient, pipeline_world: World
) -> None:
    seen: list[str] = []
    params: dict[str, str | int] = {**RANGE, "order": "asc", "limit": 4}
    pages = 0
    while True:
        r = await api.get("/v1/rooms/room-1/events", params=params, headers=MOD)
        assert r.status_code == 200, r.text
        body = r.json()
        assert len(body["events"]) <= 4
        seen += [e["event_id"] for e in body["events"]]
        pages += 1
        if body["next_cursor"] is None:
            break
        params = {"order": "asc", "limit": 4, "cursor": body["next_cursor"]}
    assert len(seen) == len(set(seen)) == pipeline_world.counts["room-1"]
    assert pages == -(-pipeline_world.counts["room-1"] // 4)


async def test_one_event_by_id_only_through_its_own_room(
    api: httpx.AsyncClient, pipeline_world: World
) -> None:
    event_id = pipeline_world.ids["ban2"]
    r = await api.get(f"/v1/rooms/room-2/events/{event_id}", headers=bearer("u-owner2"))
    assert r.status_code == 200, r.text
    assert r.json()["type"] == "moderation.ban" and r.json()["body"] == "banned in two"
    # the owner of room-1 asks for room-2's event through room-1: it is not there
    r = await api.get(f"/v1/rooms/room-1/events/{event_id}", headers=OWNER)
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"


async def test_days_with_activity_and_counts_per_type(api: httpx.AsyncClient, pipeline_world: World) -> None:
    r = await api.get("/v1/rooms/room-1/days", headers=OWNER)
    assert r.status_code == 200, r.text
    days = r.json()["days"]
    assert sum(d["total"] for d in days) == pipeline_world.counts["room-1"]
    by_type: dict[str, int] = {}
    for d in days:
        for t, n in d["by_type"].items():
            by_type[t] = by_type.get(t, 0) + n
    assert by_type["chat.message"] == len(CHAT_LINES) + 1
    assert by_type["moderation.warn"] == 1


async def test_moderation_history_shows_only_rooms_the_caller_may_see(
    api: httpx.AsyncClient, pipeline_world: World
) -> None:
    ids = pipeline_world.ids

    async def history(headers: dict[str, str]) -> set[str]:
        r = await api.get("/v1/users/u-target/moderation", headers=headers)
        assert r.status_code == 200, r.text
        return {e["event_id"] for e in r.json()["events"]}

    assert await history(OWNER) == {ids["warn1"], ids["mute1"], ids["kick1"]}
    assert await history(MOD) == {ids["warn1"], ids["mute1"], ids["kick1"], ids["ban2"]}
    assert await history(bearer("u-guest")) == set()
    assert await history(staff()) == {ids["warn1"], ids["mute1"], ids["kick1"], ids["ban2"], ids["warn3"]}
    r = await api.get("/v1/users/u-mod/moderation", params={"role": "actor"}, headers=MOD)
    assert {e["event_id"] for e in r.json()["events"]} == {ids["warn1"], ids["mute1"]}


async def test_default_range_is_the_last_day(api: httpx.AsyncClient) -> None:
    r = await api.get("/v1/rooms/room-1/events", headers=OWNER)
    assert r.status_code == 200
    body = r.json()
    assert body["events"], "the world's events are from the last few hours"
    r = await api.get(
        "/v1/rooms/room-1/events", params={"until": iso(NOW - timedelta(days=2))}, headers=OWNER
    )
    assert r.json()["events"] == []


async def test_staff_reason_is_recorded(api: httpx.AsyncClient, pipeline_world: World) -> None:
    r = await api.get("/v1/rooms/room-3/events", params=RANGE, headers=staff())
    assert r.status_code == 200
    rows = await pipeline_world.audit_rows(r.headers["x-request-id"])
    assert [(a["basis"], a["staff_reason"], a["row_count"]) for a in rows] == [
        ("staff", STAFF_TICKET, pipeline_world.counts["room-3"])
    ]
