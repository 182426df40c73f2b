"""Export (NDJSON, CSV, capped, audited) and the live tail (SSE) with access re-checked while it runs."""

from __future__ import annotations

import asyncio
import csv
import io
import uuid
from datetime import UTC, datetime
from typing import Any

import orjson
from api_world import CHAT_LINES, RANGE, World, bearer, service

from pipeline.storage.partitions import PartitionManager

OWNER = bearer("u-owner")
MOD = bearer("u-mod")


async def test_export_ndjson_is_every_matching_event(app_factory: Any, pipeline_world: World) -> None:
    client, _ = await app_factory(pipeline_world)
    r = await client.get("/v1/rooms/room-1/export", params=RANGE, headers=OWNER)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/x-ndjson")
    lines = [orjson.loads(line) for line in r.content.splitlines()]
    assert len(lines) == pipeline_world.counts["room-1"]
    stamps = [e["occurred_at"] for e in lines]
    assert stamps == sorted(stamps)  # oldest first by default
    assert {e["room_id"] for e in lines} == {"room-1"}
    chats = [e for e in lines if e["type"] == "chat.message"]
    assert chats[0]["payload"]["actor"]["display_name"] == "Gus"
    audit = await pipeline_world.audit_rows(r.headers["x-request-id"])
    assert [(a["outcome"], a["row_count"]) for a in audit] == [("started", None), ("finished", len(lines))]
    assert audit[0]["filters"]["since"] == RANGE["since"].replace("Z", "+00:00")


async def test_export_csv_defuses_formulas(app_factory: Any, pipeline_world: World) -> None:
    client, _ = await app_factory(pipeline_world)
    params = {**RANGE, "format": "csv", "type": "chat.message", "actor": "u-guest"}
    r = await client.get("/v1/rooms/room-1/export", params=params, headers=MOD)
    assert r.status_code == 200, r.text
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert [row["body"] for row in rows] == [
        "'" + line if line.startswith("=") else line for line in CHAT_LINES
    ]
    assert rows[0]["occurred_at"].endswith("Z")


async def test_export_over_the_cap_is_refused_before_any_byte(
    app_factory: Any, pipeline_world: World
) -> None:
    client, _ = await app_factory(pipeline_world, export_max_rows=5)
    r = await client.get("/v1/rooms/room-1/export", params=RANGE, headers=OWNER)
    assert (r.status_code, r.json()["error"]["code"]) == (413, "export_too_large")
    r = await client.get("/v1/rooms/room-1/export", params={**RANGE, "limit": 5}, headers=OWNER)
    assert r.status_code == 200 and len(r.content.splitlines()) == 5


async def test_export_quota_of_concurrent_streams(app_factory: Any, pipeline_world: World) -> None:
    client, state = await app_factory(pipeline_world, max_streams_per_caller=1)
    state.streams.acquire("user:u-owner")  # an export already running
    r = await client.get("/v1/rooms/room-1/export", params=RANGE, headers=OWNER)
    assert (r.status_code, r.json()["error"]["code"]) == (429, "too_many_streams")
    state.streams.release("user:u-owner")
    assert (await client.get("/v1/rooms/room-1/export", params=RANGE, headers=OWNER)).status_code == 200
    assert state.streams.held("user:u-owner") == 0


def _frames(body: str) -> list[tuple[str, str]]:
    out = []
    for block in body.split("\n\n"):
        fields = dict(
            line.split(": ", 1) for line in block.splitlines() if ": " in line and not line.startswith(":")
        )
        if "event" in fields:
            out.append((fields["event"], fields["data"]))
    return out


async def _insert_event(world: World, room: str, body: str) -> str:
    event_id = str(uuid.uuid4())
    conn = await world.admin()
    try:
        # the session's world may have been built before midnight UTC: today's day may be new
        partitions = PartitionManager()
        await partitions.load(conn)
        await partitions.ensure(conn, [("private", datetime.now(UTC).date())])
        await conn.execute(
            """INSERT INTO events (event_id, occurred_at, retention_class, room_id, event_type,
                                   schema_version,
                                   actor_id, body, payload, src_partition, src_offset)
               VALUES ($1, now(), 'private', $2, 'chat.message', 1, 'u-guest', $3, '{}'::jsonb, 0, 0)""",
            uuid.UUID(event_id),
            room,
            body,
        )
    finally:
        await conn.close()
    world.counts[room] += 1  # the shared world grew: later tests count from here
    return event_id


async def test_tail_streams_new_events_of_the_room_only(app_factory: Any, pipeline_world: World) -> None:
    client, _ = await app_factory(pipeline_world, tail_max_seconds=1.5, tail_poll_seconds=0.05)

    async def later() -> tuple[str, str]:
        await asyncio.sleep(0.4)
        mine = await _insert_event(pipeline_world, "room-1", "live line")
        other = await _insert_event(pipeline_world, "room-3", "not yours")
        return mine, other

    response, (mine, _) = await asyncio.gather(client.get("/v1/rooms/room-1/tail", headers=MOD), later())
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    frames = _frames(response.text)
    events = [orjson.loads(d) for kind, d in frames if kind == "event"]
    assert [e["event_id"] for e in events] == [mine]  # not the history, not room-3
    assert frames[-1][0] == "end" and orjson.loads(frames[-1][1]) == {"reason": "max_duration"}
    audit = await pipeline_world.audit_rows(response.headers["x-request-id"])
    assert [(a["outcome"], a["row_count"], a["detail"]) for a in audit] == [
        ("started", None, None),
        ("finished", 1, "max_duration"),
    ]


async def test_tail_ends_when_the_moderator_is_removed(app_factory: Any, pipeline_world: World) -> None:
    client, _ = await app_factory(pipeline_world, tail_max_seconds=5.0, tail_poll_seconds=0.05)
    conn = await pipeline_world.admin()
    await conn.execute("INSERT INTO room_moderators VALUES ('room-1', 'u-temp-mod', now())")

    async def revoke() -> None:
        await asyncio.sleep(0.3)
        await conn.execute("DELETE FROM room_moderators WHERE user_id = 'u-temp-mod'")

    try:
        started = datetime.now(UTC)
        response, _ = await asyncio.gather(
            client.get("/v1/rooms/room-1/tail", headers=bearer("u-temp-mod")), revoke()
        )
    finally:
        await conn.close()
    assert (datetime.now(UTC) - started).total_seconds() < 3
    frames = _frames(response.text)
    assert frames[-1][0] == "revoked"
    audit = await pipeline_world.audit_rows(response.headers["x-request-id"])
    assert audit[-1]["detail"] == "access_revoked"


async def test_tail_for_services_needs_the_tail_scope(app_factory: Any, pipeline_world: World) -> None:
    client, _ = await app_factory(pipeline_world, tail_max_seconds=0.2)
    r = await client.get("/v1/rooms/room-1/tail", headers=service("svc", "rooms:read", "rooms:export"))
    assert (r.status_code, r.json()["error"]["code"]) == (403, "insufficient_scope")
