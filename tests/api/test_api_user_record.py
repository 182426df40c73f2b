"""A user's record in a room (``/v1/rooms/{room}/users/{user}``) and their events, paged.

Read as the room's logs are: owner, moderators and staff with a ticket; a regular user (even about
themselves), a former moderator and another room's owner are refused, and every answer is audited with
the user's id. The counts are what a GROUP BY over the stored rows gives; paging visits each event once.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from api_world import NOW, STAFF_TICKET, World, bearer, iso, load_rows, staff
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

OWNER = bearer("u-owner")
RECORD = "/v1/rooms/room-1/users/u-target"
EVENTS = "/v1/rooms/room-1/users/u-target/events"

#: caller -> (headers, status, audit basis or refusal code)
CALLERS: dict[str, tuple[dict[str, str], int, str]] = {
    "owner": (OWNER, 200, "owner"),
    "moderator": (bearer("u-mod"), 200, "moderator"),
    "staff_with_reason": (staff(), 200, "staff"),
    "staff_without_reason": (staff(reason=None), 403, "reason_required"),
    "regular_user": (bearer("u-guest"), 403, "forbidden"),
    "the_user_themselves": (bearer("u-target"), 403, "forbidden"),
    "revoked_moderator": (bearer("u-revoked"), 403, "forbidden"),
    "owner_of_another_room": (bearer("u-owner2"), 403, "forbidden"),
}


@pytest.mark.parametrize("path", [RECORD, EVENTS])
@pytest.mark.parametrize("caller", sorted(CALLERS))
async def test_read_as_the_rooms_logs_and_audited(
    api: httpx.AsyncClient, pipeline_world: World, caller: str, path: str
) -> None:
    headers, status, expected = CALLERS[caller]
    r = await api.get(path, headers=headers)
    assert r.status_code == status, r.text
    audit = await pipeline_world.audit_rows(r.headers["x-request-id"])
    assert len(audit) == 1
    row = audit[0]
    assert (row["room_id"], row["user_id"]) == ("room-1", "u-target")
    assert row["action"] == ("user_record" if path == RECORD else "user_record.events")
    if status == 200:
        assert (row["outcome"], row["basis"]) == ("ok", expected)
        assert row["staff_reason"] == (STAFF_TICKET if expected == "staff" else None)
        assert row["row_count"] is not None and row["row_count"] > 0
    else:
        assert r.json()["error"]["code"] == expected
        assert (row["outcome"], row["detail"], row["basis"]) == ("denied", expected, None)


async def test_the_record_is_a_group_by_over_the_stored_rows(
    api: httpx.AsyncClient, pipeline_world: World
) -> None:
    for user in ("u-target", "u-guest", "u-mod", "u-owner"):
        r = await api.get(f"/v1/rooms/room-1/users/{user}", headers=OWNER)
        assert r.status_code == 200, r.text
        got = r.json()
        did = await pipeline_world.fetch(
            "SELECT event_type, count(*) AS n FROM events WHERE room_id = 'room-1' AND actor_id = $1 "
            "GROUP BY 1",
            user,
        )
        received = await pipeline_world.fetch(
            "SELECT event_type, count(*) AS n FROM events WHERE room_id = 'room-1' AND target_id = $1 "
            "GROUP BY 1",
            user,
        )
        span = await pipeline_world.fetch(
            "SELECT min(occurred_at) AS lo, max(occurred_at) AS hi, "
            "count(DISTINCT (occurred_at AT TIME ZONE 'UTC')::date) FILTER (WHERE actor_id = $1) AS days, "
            "(array_agg(payload->'actor'->>'display_name' ORDER BY occurred_at DESC)"
            "   FILTER (WHERE actor_id = $1))[1] AS name "
            "FROM events WHERE room_id = 'room-1' AND (actor_id = $1 OR target_id = $1)",
            user,
        )
        assert got["actions"] == {r["event_type"]: r["n"] for r in did}
        assert got["received"] == {r["event_type"]: r["n"] for r in received}
        assert got["first_seen"] == iso_z(span[0]["lo"]) and got["last_seen"] == iso_z(span[0]["hi"])
        assert got["days_active"] == span[0]["days"]
        assert got["display_name"] == span[0]["name"]
    # the troublemaker's card: one message; a warning, a mute and a kick received in this room (the ban
    # and the warning of rooms 2 and 3 are other rooms' business)
    r = await api.get(RECORD, headers=OWNER)
    assert r.json()["actions"] == {"chat.message": 1}
    assert r.json()["received"] == {"moderation.kick": 1, "moderation.mute": 1, "moderation.warn": 1}


async def test_a_user_with_no_rows_has_an_empty_record(api: httpx.AsyncClient, pipeline_world: World) -> None:
    r = await api.get("/v1/rooms/room-1/users/u-never-here", headers=OWNER)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["actions"] == {} and body["received"] == {}
    assert (body["first_seen"], body["last_seen"], body["display_name"], body["days_active"]) == (
        None,
        None,
        None,
        0,
    )
    r = await api.get("/v1/rooms/room-1/users/u-never-here/events", headers=OWNER)
    assert (r.status_code, r.json()["events"], r.json()["next_cursor"]) == (200, [], None)
    audit = await pipeline_world.audit_rows(r.headers["x-request-id"])
    assert [(a["outcome"], a["row_count"], a["user_id"]) for a in audit] == [("ok", 0, "u-never-here")]


async def test_a_days_range_outside_the_activity_counts_nothing(api: httpx.AsyncClient) -> None:
    old = (NOW - timedelta(days=200)).date()
    r = await api.get(RECORD, params={"from": old.isoformat(), "to": (old + timedelta(days=5)).isoformat()},
                      headers=OWNER)  # fmt: skip
    assert r.status_code == 200 and r.json()["actions"] == {} and r.json()["received"] == {}
    r = await api.get(RECORD, params={"from": "2020-01-01", "to": "2024-01-01"}, headers=OWNER)
    assert (r.status_code, r.json()["error"]["code"]) == (400, "range_too_large")


@pytest.mark.parametrize("role", ["actor", "target"])
async def test_the_users_events_paged_like_a_rooms(
    api: httpx.AsyncClient, pipeline_world: World, role: str
) -> None:
    user = "u-guest" if role == "actor" else "u-target"
    expected = [
        str(r["event_id"])
        for r in await pipeline_world.fetch(
            f"SELECT event_id FROM events WHERE room_id = 'room-1' AND {role}_id = $1 "
            "ORDER BY occurred_at DESC, event_id DESC",
            user,
        )
    ]
    assert len(expected) >= 3
    pages = [
        e async for e in _pages(api, f"/v1/rooms/room-1/users/{user}/events", {"role": role, "limit": 2})
    ]
    assert [e["event_id"] for page in pages for e in page] == expected
    assert all(len(p) <= 2 for p in pages)


async def test_messages_only_and_a_cursor_is_bound_to_its_user(
    api: httpx.AsyncClient, pipeline_world: World
) -> None:
    r = await api.get(
        "/v1/rooms/room-1/users/u-guest/events", params={"type": "chat.message", "limit": 4}, headers=OWNER
    )
    body = r.json()
    assert [e["type"] for e in body["events"]] == ["chat.message"] * 4 and body["next_cursor"]
    assert [e["actor_id"] for e in body["events"]] == ["u-guest"] * 4
    moved = await api.get(
        "/v1/rooms/room-1/users/u-target/events",
        params={"type": "chat.message", "limit": 4, "cursor": body["next_cursor"]},
        headers=OWNER,
    )
    assert (moved.status_code, moved.json()["error"]["code"]) == (400, "invalid_cursor")


# --- a user active on several days of a busy room: the windows the rollups give, and paging across them ---
async def test_paging_across_days_reads_each_event_once_in_both_orders(
    app_factory: Any, small_world: World
) -> None:
    client, _ = await app_factory(small_world)
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(days=4, hours=1)
    rows = list(_busy_days(start))
    conn = await small_world.admin()
    try:
        await load_rows(conn, rows)
    finally:
        await conn.close()
    params = {"since": iso(start - timedelta(hours=1)), "until": iso(datetime.now(UTC) + timedelta(hours=1))}
    for user in ("u-rare", "u-chat"):
        for order in ("desc", "asc"):
            expected = [
                str(r["event_id"])
                for r in await small_world.fetch(
                    "SELECT event_id FROM events WHERE room_id = 'room-a' AND actor_id = $1 "
                    f"AND occurred_at >= $2 ORDER BY occurred_at {order}, event_id {order}",
                    user,
                    start - timedelta(hours=1),
                )
            ]
            got = [
                e["event_id"]
                for page in [
                    p
                    async for p in _pages(
                        client,
                        f"/v1/rooms/room-a/users/{user}/events",
                        {**params, "order": order, "limit": 3},
                    )
                ]
                for e in page
            ]
            assert got == expected, (user, order)
    r = await client.get("/v1/rooms/room-a/users/u-rare", headers=OWNER)
    assert r.json()["actions"] == {"chat.message": 4} and r.json()["days_active"] == 4


def _busy_days(start: datetime) -> Iterator[tuple[Any, ...]]:
    """Four days of room-a: u-chat every minute of the first hours, u-rare once a day; same-instant ties."""
    for day in range(4):
        base = start + timedelta(days=day)
        for i in range(40):
            moment = base + timedelta(minutes=i)
            yield _row(moment, "u-chat", i)
            if i == 20:
                yield _row(moment, "u-rare", i)  # the same instant as u-chat's: ordered by event id
                yield _row(moment, "u-chat", i)


def _row(moment: datetime, actor: str, i: int) -> tuple[Any, ...]:
    payload = {"actor": {"user_id": actor, "display_name": actor.upper()}}
    return (uuid.uuid4(), moment, "private", "room-a", "chat.message", 1, actor, None, f"l{i}", payload, 0, i)


async def _pages(client: httpx.AsyncClient, path: str, params: dict[str, Any], max_pages: int = 200) -> Any:
    cursor = None
    for _ in range(max_pages):
        q = dict(params) if cursor is None else {**params, "cursor": cursor}
        r = await client.get(path, params=q, headers=OWNER)
        assert r.status_code == 200, r.text
        yield r.json()["events"]
        cursor = r.json()["next_cursor"]
        if cursor is None:
            return
    raise AssertionError("paging did not end")


def iso_z(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


# --- any range, page size, order and types: the pages are the SQL answer, each event once (hypothesis) -----
BUSY_START = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(days=5)


@pytest.fixture
async def busy_room(small_world: World) -> World:
    """Five days of room-a: three users at different rates, some at the same instants, a few hours each."""
    rng = random.Random(18)
    rows = []
    for i in range(600):
        moment = BUSY_START + timedelta(minutes=rng.randrange(5 * 24 * 60) // 7 * 7)
        actor = rng.choice(("u-chat", "u-chat", "u-chat", "u-other", "u-rare"))
        row = list(_row(moment, actor, i))
        row[4] = rng.choice(("chat.message", "chat.message", "user.entered"))
        rows.append(tuple(row))
    conn = await small_world.admin()
    try:
        await load_rows(conn, rows)
    finally:
        await conn.close()
    return small_world


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    user=st.sampled_from(("u-chat", "u-other", "u-rare", "u-none")),
    since_hours=st.integers(-3, 5 * 24),
    span_hours=st.integers(1, 6 * 24),
    limit=st.integers(1, 40),
    order=st.sampled_from(("desc", "asc")),
    types=st.sets(st.sampled_from(("chat.message", "user.entered", "gift.sent")), max_size=2),
)
async def test_any_page_walk_is_the_sql_answer(
    app_factory: Any,
    busy_room: World,
    user: str,
    since_hours: int,
    span_hours: int,
    limit: int,
    order: str,
    types: set[str],
) -> None:
    client, _ = await app_factory(busy_room)
    since = BUSY_START + timedelta(hours=since_hours, minutes=13)
    until = since + timedelta(hours=span_hours)
    wanted = sorted(types) or None
    expected = [
        str(r["event_id"])
        for r in await busy_room.fetch(
            "SELECT event_id FROM events WHERE room_id = 'room-a' AND actor_id = $1 AND occurred_at >= $2 "
            f"AND occurred_at < $3 AND ($4::text[] IS NULL OR event_type = ANY($4)) "
            f"ORDER BY occurred_at {order}, event_id {order}",
            user,
            since,
            until,
            wanted,
        )
    ]
    params: dict[str, Any] = {"since": iso(since), "until": iso(until), "order": order, "limit": limit}
    if wanted:
        params["type"] = wanted
    # each page full but the last (which may be empty): no more pages than that
    pages = _pages(client, f"/v1/rooms/room-a/users/{user}/events", params, len(expected) // limit + 1)
    got = [e["event_id"] async for page in pages for e in page]
    assert got == expected
