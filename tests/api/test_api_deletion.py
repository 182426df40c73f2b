"""Deletion only through authorized, recorded requests: a room's logs (owner or staff), one user's chat
text (staff, erasure request). Each test has a schema of its own."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import asyncpg
import pytest
from api_world import STAFF_TICKET, World, bearer, service, staff


async def _count(world: World, sql: str = "SELECT count(*) AS n FROM events", *args: Any) -> int:
    return int((await world.fetch(sql, *args))[0]["n"])


async def test_the_owner_deletes_the_rooms_logs(app_factory: Any, small_world: World) -> None:
    client, _ = await app_factory(small_world)
    r = await client.post(
        "/v1/rooms/room-a/deletions", json={"note": "closing my room"}, headers=bearer("u-owner")
    )
    assert r.status_code == 201, r.text
    body = r.json()
    assert (body["rows_deleted"], body["basis"], body["reason"]) == (30, "owner", "closing my room")
    assert await _count(small_world, "SELECT count(*) AS n FROM events WHERE room_id = 'room-a'") == 0
    assert await _count(small_world, "SELECT count(*) AS n FROM events WHERE room_id = 'room-b'") == 30
    ledger = await small_world.fetch("SELECT * FROM deletion_requests")
    assert [(d["kind"], d["room_id"], d["requested_by"], d["rows_deleted"]) for d in ledger] == [
        ("room_logs", "room-a", "u-owner", 30)
    ]
    audit = await small_world.audit_rows(r.headers["x-request-id"])
    assert [(a["action"], a["outcome"], a["row_count"]) for a in audit] == [("room_logs.delete", "ok", 30)]
    # and the trigger is armed again afterwards: nothing else can delete
    conn = await small_world.admin()
    try:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("DELETE FROM events WHERE room_id = 'room-b'")
    finally:
        await conn.close()


# tokens are minted when a test runs (lambdas), not when the module is collected: they last 5 minutes
@pytest.mark.parametrize(
    ("who", "headers", "code"),
    [
        ("moderator", lambda: bearer("u-mod"), "forbidden"),
        ("stranger", lambda: bearer("u-guest"), "forbidden"),
        ("owner_of_another_room", lambda: bearer("u-owner-b"), "forbidden"),
        ("staff_without_reason", lambda: staff(reason=None), "reason_required"),
        ("service", lambda: service("svc", "rooms:read", "rooms:export", "rooms:tail"), "forbidden"),
    ],
)
async def test_others_cannot_delete(
    app_factory: Any, small_world: World, who: str, headers: Callable[[], dict[str, str]], code: str
) -> None:
    client, _ = await app_factory(small_world)
    r = await client.post("/v1/rooms/room-a/deletions", headers=headers())
    assert (r.status_code, r.json()["error"]["code"]) == (403, code), who
    assert await _count(small_world) == 60
    assert await small_world.fetch("SELECT * FROM deletion_requests") == []
    audit = await small_world.audit_rows(r.headers["x-request-id"])
    assert [(a["outcome"], a["detail"]) for a in audit] == [("denied", code)]


async def test_staff_delete_a_room_with_a_ticket(app_factory: Any, small_world: World) -> None:
    client, _ = await app_factory(small_world)
    r = await client.post("/v1/rooms/room-b/deletions", headers=staff())
    assert r.status_code == 201, r.text
    assert (r.json()["basis"], r.json()["reason"], r.json()["rows_deleted"]) == ("staff", STAFF_TICKET, 30)
    ledger = await small_world.fetch("SELECT identity_type, basis, reason FROM deletion_requests")
    assert [tuple(d.values()) for d in ledger] == [("staff", "staff", STAFF_TICKET)]


async def test_staff_erase_one_users_chat_text_everywhere(app_factory: Any, small_world: World) -> None:
    client, _ = await app_factory(small_world)
    before_other = await _count(small_world, "SELECT count(*) AS n FROM events WHERE actor_id = 'u-other'")
    before_chat_entries = await _count(
        small_world,
        "SELECT count(*) AS n FROM events WHERE actor_id = 'u-chat' AND event_type <> 'chat.message'",
    )
    chats = await _count(
        small_world,
        "SELECT count(*) AS n FROM events WHERE actor_id = 'u-chat' AND event_type = 'chat.message'",
    )
    r = await client.post("/v1/users/u-chat/erasures", json={"note": "GDPR art. 17"}, headers=staff())
    assert r.status_code == 201, r.text
    assert r.json()["rows_deleted"] == chats > 0
    assert await _count(small_world, "SELECT count(*) AS n FROM events WHERE body LIKE '%u-chat%'") == 0
    assert (
        await _count(small_world, "SELECT count(*) AS n FROM events WHERE actor_id = 'u-other'")
        == before_other
    )
    assert (
        await _count(
            small_world,
            "SELECT count(*) AS n FROM events WHERE actor_id = 'u-chat' AND event_type <> 'chat.message'",
        )
        == before_chat_entries
    )
    ledger = await small_world.fetch("SELECT kind, user_id, reason, rows_deleted FROM deletion_requests")
    assert [tuple(d.values()) for d in ledger] == [("user_chat_erasure", "u-chat", STAFF_TICKET, chats)]
    audit = await small_world.audit_rows(r.headers["x-request-id"])
    assert [(a["action"], a["user_id"], a["row_count"]) for a in audit] == [
        ("user_chat.erase", "u-chat", chats)
    ]


@pytest.mark.parametrize(
    "headers",
    [
        lambda: bearer("u-owner"),
        lambda: staff(reason=None),
        lambda: staff(reason="no ticket"),
        lambda: service("svc", "moderation:read"),
    ],
)
async def test_only_staff_with_a_ticket_erase(
    app_factory: Any, small_world: World, headers: Callable[[], dict[str, str]]
) -> None:
    client, _ = await app_factory(small_world)
    r = await client.post("/v1/users/u-chat/erasures", headers=headers())
    assert r.status_code == 403
    assert await _count(small_world) == 60
    audit = await small_world.audit_rows(r.headers["x-request-id"])
    assert [a["outcome"] for a in audit] == ["denied"]


@pytest.mark.parametrize("body", [b"not json", b"[]", b'{"note": 5}', b'{"other": "x"}', b'{"note": ""}'])
async def test_a_malformed_body_is_a_400_and_deletes_nothing(
    app_factory: Any, small_world: World, body: bytes
) -> None:
    client, _ = await app_factory(small_world)
    r = await client.post("/v1/rooms/room-a/deletions", content=body, headers=bearer("u-owner"))
    assert (r.status_code, r.json()["error"]["code"]) == (400, "invalid_body")
    assert await _count(small_world) == 60


async def _hold(world: World, room_id: str) -> None:
    conn = await world.admin()
    try:
        await conn.execute(
            """INSERT INTO legal_holds (room_id, reason, requested_by, placed_at)
               VALUES ($1, 'case 7: harassment complaint', 'legal-team', now())""",
            room_id,
        )
    finally:
        await conn.close()


async def test_a_room_under_legal_hold_cannot_be_deleted_and_the_refusal_is_recorded(
    app_factory: Any, small_world: World
) -> None:
    await _hold(small_world, "room-a")
    client, _ = await app_factory(small_world)
    r = await client.post("/v1/rooms/room-a/deletions", headers=bearer("u-owner"))
    assert (r.status_code, r.json()["error"]["code"]) == (409, "legal_hold")
    r2 = await client.post("/v1/rooms/room-a/deletions", headers=staff())
    assert (r2.status_code, r2.json()["error"]["code"]) == (409, "legal_hold")
    assert await _count(small_world) == 60
    assert await small_world.fetch("SELECT * FROM deletion_requests") == []
    audit = await small_world.audit_rows(r.headers["x-request-id"])
    assert [(a["action"], a["outcome"], a["detail"]) for a in audit] == [
        ("room_logs.delete", "denied", "legal_hold")
    ]


async def test_an_erasure_spares_rooms_under_legal_hold(app_factory: Any, small_world: World) -> None:
    held = await small_world.fetch(
        "SELECT room_id FROM events WHERE actor_id = 'u-chat' AND event_type = 'chat.message' LIMIT 1"
    )
    held_room = held[0]["room_id"]
    await _hold(small_world, held_room)
    in_held = await _count(
        small_world,
        "SELECT count(*) AS n FROM events WHERE actor_id = 'u-chat' AND event_type = 'chat.message'"
        " AND room_id = $1",
        held_room,
    )
    client, _ = await app_factory(small_world)
    r = await client.post("/v1/users/u-chat/erasures", headers=staff())
    assert r.status_code == 201, r.text
    left = await small_world.fetch(
        "SELECT room_id, count(*) AS n FROM events WHERE actor_id = 'u-chat' AND event_type = 'chat.message'"
        " GROUP BY 1"
    )
    assert [(x["room_id"], x["n"]) for x in left] == [(held_room, in_held)]


async def test_a_reused_request_id_neither_collides_nor_names_another_request(
    app_factory: Any, small_world: World
) -> None:
    """A client's X-Request-Id is a label: reused by another caller, or on a deletion and an erasure, each
    request is still done and recorded under an id of the API's own."""
    client, _ = await app_factory(small_world)
    reused = str(uuid.uuid4())
    answers = [
        await client.post(
            "/v1/rooms/room-a/deletions", headers={**bearer("u-owner"), "X-Request-Id": reused}
        ),
        await client.post("/v1/rooms/room-b/deletions", headers={**staff(), "X-Request-Id": reused}),
        await client.post("/v1/users/u-chat/erasures", headers={**staff("s-other"), "X-Request-Id": reused}),
        await client.post("/v1/users/u-other/erasures", headers={**staff(), "X-Request-Id": reused}),
    ]
    assert [r.status_code for r in answers] == [201, 201, 201, 201], [r.text for r in answers]
    ids = [r.headers["x-request-id"] for r in answers]
    assert len(set(ids)) == 4 and reused not in ids
    assert [r.json()["request_id"] for r in answers] == ids
    assert {r.headers["x-client-request-id"] for r in answers} == {reused}
    ledger = await small_world.fetch("SELECT request_id, requested_by FROM deletion_requests ORDER BY 1")
    assert sorted((str(d["request_id"]), d["requested_by"]) for d in ledger) == sorted(
        zip(ids, ["u-owner", "s-staff", "s-other", "s-staff"], strict=True)
    )
    audit = await small_world.fetch(
        "SELECT request_id, subject, client_request_id FROM access_audit WHERE client_request_id = $1", reused
    )
    assert sorted((str(a["request_id"]), a["subject"]) for a in audit) == sorted(
        zip(ids, ["u-owner", "s-staff", "s-other", "s-staff"], strict=True)
    )


async def test_a_body_larger_than_allowed_is_refused_without_reading_it_all(
    app_factory: Any, small_world: World
) -> None:
    client, _ = await app_factory(small_world)

    async def endless() -> Any:
        for _ in range(10_000):
            yield b'{"note": "' + b"x" * 1024

    r = await client.post("/v1/rooms/room-a/deletions", content=endless(), headers=bearer("u-owner"))
    assert (r.status_code, r.json()["error"]["code"]) == (400, "invalid_body")
    assert await _count(small_world) == 60
