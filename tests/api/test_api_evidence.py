"""Evidence of sealed room-days through the API: the public keys, bundles that verify offline with nothing
but those keys, the export's access rules and audit, and honest answers for days that are not sealed yet
or whose rows are no longer all there. Each test has a schema of its own, sealed by the real sealing run.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from api_world import (
    NOW,
    SMALL_ROOMS,
    World,
    bearer,
    drop_schema,
    iso,
    load_rows,
    new_schema,
    service,
    small_rows,
    staff,
)
from cryptography.hazmat.primitives import serialization

from pipeline.api import ApiSettings
from pipeline.errors import ConfigurationError
from pipeline.evidence.bundle import BundleError, check
from pipeline.evidence.keys import SealKey
from pipeline.sealing.run import seal_closed_days
from pipeline.settings import Secret, Settings
from pipeline.storage.partitions import day_start

TODAY = NOW.date()
#: Days before yesterday are closed whatever the hour: the sealing run seals them.
DAY = TODAY - timedelta(days=3)
OWNER = bearer("u-owner")


@pytest.fixture
async def sealed(postgres_dsn: str, tmp_path: Path) -> AsyncIterator[World]:
    """room-a: 30 events on DAY and 5 today; room-b: 12 on DAY; room-c (u-owner's too): none; DAY sealed
    (today is open)."""
    schema, api_dsn, pool = await new_schema(postgres_dsn)
    world = World(schema, postgres_dsn, api_dsn, pool)
    try:
        conn = await world.admin()
        try:
            for room, (owner, mods) in SMALL_ROOMS.items():
                await conn.execute(
                    "INSERT INTO rooms (room_id, privacy, retention_class, owner_id) "
                    "VALUES ($1, 'private', 'private', $2)",
                    room,
                    owner,
                )
                for m in mods:
                    await conn.execute("INSERT INTO room_moderators VALUES ($1, $2, now())", room, m)
            await conn.execute(
                "INSERT INTO rooms (room_id, privacy, retention_class, owner_id) "
                "VALUES ('room-c', 'private', 'private', 'u-owner')"
            )
            await load_rows(conn, small_rows("room-a", 30, day_start(DAY) + timedelta(hours=10)))
            await load_rows(conn, small_rows("room-b", 12, day_start(DAY) + timedelta(hours=11)))
            await load_rows(conn, small_rows("room-a", 5, day_start(TODAY)))
            settings = Settings(postgres_dsn=Secret(postgres_dsn), postgres_schema=schema)
            key = SealKey.generate(tmp_path / "seal.pem")
            report = await seal_closed_days(conn, settings, key, now=datetime.now(UTC))
            assert DAY in report.days and TODAY not in report.days
        finally:
            await conn.close()
        yield world
    finally:
        await drop_schema(postgres_dsn, schema, pool)


@pytest.fixture
async def client(app_factory: Any, sealed: World) -> httpx.AsyncClient:
    c, _ = await app_factory(sealed)
    return c


async def public_keys(client: httpx.AsyncClient) -> dict[str, bytes]:
    r = await client.get("/v1/seal-keys")
    assert r.status_code == 200, r.text
    keys = {}
    for k in r.json()["keys"]:
        public = serialization.load_pem_public_key(k["public_key_pem"].encode())
        keys[k["key_id"]] = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return keys


async def evidence(
    client: httpx.AsyncClient, room: str = "room-a", headers: dict[str, str] = OWNER, **params: Any
) -> httpx.Response:
    return await client.get(
        f"/v1/rooms/{room}/evidence", params={"day": DAY.isoformat(), **params}, headers=headers
    )


async def superuser(world: World, sql: str, *args: Any) -> None:
    """What someone holding the database can do: the guard triggers off for this session."""
    conn = await world.admin()
    try:
        async with conn.transaction():
            await conn.execute("SET LOCAL session_replication_role = replica")
            await conn.execute(sql, *args)
    finally:
        await conn.close()


async def test_the_seal_keys_are_public_and_cacheable(client: httpx.AsyncClient, sealed: World) -> None:
    r = await client.get("/v1/seal-keys")  # no token
    assert r.status_code == 200, r.text
    (key,) = r.json()["keys"]
    assert key["algorithm"] == "ed25519" and key["public_key_pem"].startswith("-----BEGIN PUBLIC KEY-----")
    stored = await sealed.fetch("SELECT key_id, added_at FROM seal_keys")
    assert [(s["key_id"], iso(s["added_at"])) for s in stored] == [(key["key_id"], key["added_at"])]
    assert r.headers["cache-control"].startswith("public, max-age=")
    again = await client.get("/v1/seal-keys", headers={"If-None-Match": r.headers["etag"]})
    assert again.status_code == 304 and again.content == b""
    assert await sealed.audit_rows(r.headers["x-request-id"]) == []  # public keys: no log read
    refused = await client.get("/v1/seal-keys", params={"room": "room-a"})
    assert (refused.status_code, refused.json()["error"]["code"]) == (400, "invalid_parameter")
    audit = await sealed.audit_rows(refused.headers["x-request-id"])
    assert [(a["action"], a["subject"], a["outcome"]) for a in audit] == [
        ("seal_keys", "anonymous", "rejected")
    ]


async def test_a_whole_sealed_day_verifies_with_the_public_key(
    client: httpx.AsyncClient, sealed: World
) -> None:
    r = await evidence(client)
    assert r.status_code == 200, r.text
    assert r.headers["cache-control"] == "no-store"
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["content-disposition"] == (
        f'attachment; filename="roomlogs-evidence-room-a-{DAY.isoformat()}.json"'
    )
    (proven,) = check(r.content, await public_keys(client))
    assert (proven.room_id, proven.day, proven.events, proven.whole_day) == (
        "room-a",
        DAY.isoformat(),
        30,
        True,
    )
    assert proven.say().startswith(f"these 30 events are exactly room room-a's events of {DAY}")
    # the events are the export's, field for field, in leaf order
    export = await client.get(
        "/v1/rooms/room-a/export",
        params={"since": iso(day_start(DAY)), "until": iso(day_start(DAY + timedelta(days=1)))},
        headers=OWNER,
    )
    assert r.json()["days"][0]["events"] == [orjson.loads(line) for line in export.content.splitlines()]
    audit = await sealed.audit_rows(r.headers["x-request-id"])
    assert [(a["action"], a["outcome"], a["row_count"], a["basis"]) for a in audit] == [
        ("evidence", "ok", 30, "owner")
    ]
    assert audit[0]["filters"] == {"day": DAY.isoformat()}


async def test_selected_events_come_with_inclusion_proofs(client: httpx.AsyncClient, sealed: World) -> None:
    rows = await sealed.fetch(
        """SELECT event_id FROM events WHERE room_id = 'room-a' AND occurred_at < $1
            ORDER BY occurred_at, event_id""",
        day_start(DAY + timedelta(days=1)),
    )
    picked = [str(rows[i]["event_id"]) for i in (27, 3, 11)]
    r = await client.get(
        "/v1/rooms/room-a/evidence", params=[("day", DAY.isoformat())] + [("event_id", e) for e in picked],
        headers=staff(),
    )  # fmt: skip
    assert r.status_code == 200, r.text
    day = r.json()["days"][0]
    assert day["whole_day"] is False
    assert [(e["event_id"], e["leaf_index"]) for e in day["events"]] == [
        (picked[i], n) for i, n in ((1, 3), (2, 11), (0, 27))
    ]
    (proven,) = check(r.content, await public_keys(client))
    assert proven.say().startswith(f"these 3 events are among room room-a's 30 events of {DAY}")
    audit = await sealed.audit_rows(r.headers["x-request-id"])
    assert [(a["outcome"], a["row_count"], a["basis"], a["staff_reason"]) for a in audit] == [
        ("ok", 3, "staff", "SUP-1234")
    ]
    assert sorted(audit[0]["filters"]["event_ids"]) == sorted(picked)
    # a changed event no longer verifies
    day["events"][1]["body"] = "edited"
    with pytest.raises(BundleError, match="not in the sealed tree"):
        check(r.json() | {"days": [day]}, await public_keys(client))
    # an event of another day, or of no day, is not there
    unknown = await evidence(client, event_id=str(uuid.uuid4()))
    assert (unknown.status_code, unknown.json()["error"]["code"]) == (404, "not_found")


@pytest.mark.parametrize(
    ("headers", "status", "code"),
    [
        (lambda: bearer("u-guest"), 403, "forbidden"),
        (lambda: staff(reason=None), 403, "reason_required"),
        (lambda: service("svc", "rooms:read"), 403, "insufficient_scope"),
        (lambda: service("svc", "rooms:export"), 200, None),
        (lambda: bearer("u-mod"), 200, None),
    ],
    ids=["regular-user", "staff-without-reason", "service-read-only", "service-export", "moderator"],
)
async def test_who_may_take_evidence_is_who_may_export(
    client: httpx.AsyncClient, sealed: World, headers: Any, status: int, code: str | None
) -> None:
    r = await client.get("/v1/rooms/room-a/evidence", params={"day": DAY.isoformat()}, headers=headers())
    assert r.status_code == status, r.text
    audit = await sealed.audit_rows(r.headers["x-request-id"])
    if code is None:
        assert [a["outcome"] for a in audit] == ["ok"]
        return
    assert r.json()["error"]["code"] == code
    assert [(a["action"], a["outcome"], a["detail"], a["room_id"]) for a in audit] == [
        ("evidence", "denied", code, "room-a")
    ]


async def test_a_day_not_sealed_yet_says_when_it_closes(client: httpx.AsyncClient, sealed: World) -> None:
    r = await client.get("/v1/rooms/room-a/evidence", params={"day": TODAY.isoformat()}, headers=OWNER)
    assert (r.status_code, r.json()["error"]["code"]) == (404, "not_sealed")
    closes = day_start(TODAY + timedelta(days=1)) + timedelta(hours=1)
    assert r.json()["error"]["details"] == {"day": TODAY.isoformat(), "closes_at": closes.isoformat()}
    assert "not sealed yet: it closes at" in r.json()["error"]["message"]
    audit = await sealed.audit_rows(r.headers["x-request-id"])
    assert [(a["outcome"], a["detail"]) for a in audit] == [("rejected", "not_sealed")]
    # a sealed day the room had no events on
    r = await evidence(client, "room-c")
    assert (r.status_code, r.json()["error"]["code"]) == (404, "not_found")
    assert "the day is sealed" in r.json()["error"]["message"]
    # the calendar's days say the same
    days = await client.get(
        "/v1/rooms/room-a/days", params={"from": DAY.isoformat(), "to": TODAY.isoformat()}, headers=OWNER
    )
    by_day = {d["day"]: d for d in days.json()["days"]}
    assert by_day[DAY.isoformat()]["seal"]["events"] == 30
    assert by_day[DAY.isoformat()]["seal"]["key_id"] in await public_keys(client)
    assert by_day[TODAY.isoformat()]["seal"] is None
    assert by_day[TODAY.isoformat()]["closes_at"] == iso(closes)


async def test_rows_deleted_after_sealing_are_told_apart_from_what_still_proves(
    app_factory: Any, sealed: World
) -> None:
    client, _ = await app_factory(sealed)
    keys = await public_keys(client)
    # staff erase u-chat's chat lines everywhere (an audited deletion), and someone removes a row
    erased = await client.post("/v1/users/u-chat/erasures", headers=staff())
    assert erased.status_code == 201, erased.text
    request_id = erased.json()["request_id"]
    rows = await sealed.fetch(
        "SELECT event_id FROM events WHERE room_id = 'room-a' AND occurred_at < $1 ORDER BY occurred_at",
        day_start(DAY + timedelta(days=1)),
    )
    vanished, kept = rows[0]["event_id"], rows[1]["event_id"]
    await superuser(sealed, "DELETE FROM events WHERE event_id = $1", vanished)
    r = await evidence(client)
    assert r.status_code == 200, r.text
    day = r.json()["days"][0]
    assert day["whole_day"] is False and len(day["events"]) == len(rows) - 1
    reasons = {o["event_id"]: (o["reason"], o["detail"]) for o in day["omitted"]}
    assert reasons.pop(str(vanished)) == ("not_stored", "no longer stored")
    assert set(reasons.values()) == {("deleted_by_request", f"deleted by request {request_id}")}
    assert len(reasons) + len(day["events"]) + 1 == 30
    assert "deleted by an audited request" in day["note"]
    (proven,) = check(r.content, keys)
    assert proven.say().startswith(f"these {len(rows) - 1} events are among room room-a's 30 events")
    # asked for: what is there is proven, what is not is said
    r = await evidence(client, event_id=[str(vanished), str(kept)])
    assert r.status_code == 200, r.text
    assert [e["event_id"] for e in r.json()["days"][0]["events"]] == [str(kept)]
    assert [o["event_id"] for o in r.json()["days"][0]["omitted"]] == [str(vanished)]
    check(r.content, keys)
    r = await evidence(client, event_id=str(vanished))
    assert (r.status_code, r.json()["error"]["code"]) == (409, "not_provable")
    # a changed row is left out too
    await superuser(sealed, "UPDATE events SET body = 'edited' WHERE event_id = $1", kept)
    r = await evidence(client, event_id=str(kept))
    assert (r.status_code, r.json()["error"]["code"]) == (409, "not_provable")
    assert "not as sealed" in r.json()["error"]["message"]
    # once the seal's leaves are no longer kept, nothing of the day can be proven
    await superuser(
        sealed,
        """DELETE FROM seal_leaves
            WHERE seal_id = (SELECT seal_id FROM seals WHERE room_id = 'room-a' AND day = $1)""",
        DAY,
    )
    r = await evidence(client)
    assert (r.status_code, r.json()["error"]["code"]) == (409, "not_provable")
    assert r.json()["error"]["details"] == {"day": DAY.isoformat(), "stored": len(rows) - 1, "sealed": 30}
    audit = await sealed.audit_rows(r.headers["x-request-id"])
    assert [(a["outcome"], a["detail"], a["http_status"]) for a in audit] == [
        ("rejected", "not_provable", 409)
    ]


async def test_an_intact_day_still_proves_events_without_its_kept_leaves(
    client: httpx.AsyncClient, sealed: World
) -> None:
    await superuser(sealed, "DELETE FROM seal_leaves")  # as maintenance does, past the longest retention
    rows = await sealed.fetch("SELECT event_id FROM events WHERE room_id = 'room-b' ORDER BY occurred_at")
    room_b = bearer("u-owner-b")
    r = await evidence(client, "room-b", room_b, event_id=str(rows[5]["event_id"]))
    assert r.status_code == 200, r.text
    assert r.json()["days"][0]["events"][0]["leaf_index"] == 5
    (proven,) = check(r.content, await public_keys(client))
    assert (proven.events, proven.tree_size) == (1, 12)
    whole = await evidence(client, "room-b", room_b)
    assert whole.status_code == 200 and check(whole.content, await public_keys(client))[0].whole_day


async def test_a_whole_day_over_the_cap_asks_for_selected_events(app_factory: Any, sealed: World) -> None:
    client, _ = await app_factory(sealed, evidence_max_events=10)
    r = await evidence(client)
    assert (r.status_code, r.json()["error"]["code"]) == (413, "export_too_large")
    rows = await sealed.fetch("SELECT event_id FROM events WHERE room_id = 'room-a' LIMIT 1")
    assert (await evidence(client, event_id=str(rows[0]["event_id"]))).status_code == 200
    too_many = [str(uuid.uuid4()) for _ in range(201)]
    r = await evidence(client, event_id=too_many)
    assert (r.status_code, r.json()["error"]["code"]) == (400, "invalid_parameter")


def test_days_close_when_the_sealing_side_says_unless_the_api_is_told() -> None:
    assert ApiSettings.from_env({}).seal_late_window_seconds == 3600
    shared = {"ROOMLOGS_SEAL_LATE_WINDOW_SECONDS": "7200"}
    assert ApiSettings.from_env(shared).seal_late_window_seconds == 7200
    own = {**shared, "ROOMLOGS_API_SEAL_LATE_WINDOW_SECONDS": "60"}
    assert ApiSettings.from_env(own).seal_late_window_seconds == 60
    with pytest.raises(ConfigurationError, match="ROOMLOGS_SEAL_LATE_WINDOW_SECONDS='soon'"):
        ApiSettings.from_env({"ROOMLOGS_SEAL_LATE_WINDOW_SECONDS": "soon"})
