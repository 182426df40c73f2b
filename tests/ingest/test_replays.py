"""What Kafka really delivers: the same events again, copies that differ, events out of order, replays.

Each test publishes through the real broker to the real ingest loop and checks what a moderator, a room
owner or an auditor would: how many rows an event has, who may read a room, what a dead letter kept.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import orjson
from test_ingest import event_id, fetch, produce_raw

from pipeline.api.settings import ApiSettings
from pipeline.api.trust import install, token_trust
from pipeline.publisher import events as ev
from pipeline.settings import Secret, Settings
from pipeline.storage import db
from pipeline.storage.batch import RoomChange
from pipeline.storage.rooms import apply_room_changes


def at(seconds_from_now: float) -> str:
    return (datetime.now(UTC) + timedelta(seconds=seconds_from_now)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def stamped(event: dict[str, Any], seconds_from_now: float, eid: str | None = None) -> dict[str, Any]:
    event["event_id"] = eid or event_id()
    event["occurred_at"] = at(seconds_from_now)
    return event


def record(event: dict[str, Any]) -> tuple[bytes, bytes]:
    return event["room_id"].encode(), orjson.dumps(event)


OWNER = ev.user("u-owner", "Olga")
GUEST = ev.user("u-guest", "Gus")
MOD = ev.user("u-mod", "Mo")


async def test_an_event_delivered_again_after_its_room_changed_class_is_stored_once(
    ingest_settings: Settings, ingest_worker: Any
) -> None:
    s = ingest_settings
    private = stamped(ev.settings_changed("room-c", OWNER, {"privacy": (None, "private")}), -100)
    chat = stamped(ev.chat_message("room-c", GUEST, "said while private"), -50)
    busy = stamped(
        ev.settings_changed(
            "room-c", OWNER, {"privacy": ("private", "public"), "max_occupancy": (None, 500)}
        ),
        -10,
    )
    await produce_raw(s, [record(private), record(chat)])
    async with ingest_worker(s) as w:
        assert await w.caught_up(60)
        # the room becomes busy and public; then a room server resends, once keyed by room, once not
        await produce_raw(s, [record(busy), record(chat), (b"another-key", orjson.dumps(chat))])
        assert await w.caught_up(60)
        assert w.service.totals["duplicates"] == 2
        assert w.service.totals["dead_lettered"] == 0
    rows = await fetch(
        s, "SELECT retention_class FROM events WHERE event_id = $1", uuid.UUID(chat["event_id"])
    )
    assert [r["retention_class"] for r in rows] == ["private"], "one row, in the class it was written with"
    (room,) = await fetch(s, "SELECT retention_class FROM rooms WHERE room_id = 'room-c'")
    assert room["retention_class"] == "busy_public"


async def test_a_copy_with_another_time_or_text_is_dead_lettered_and_the_stored_copy_stands(
    ingest_settings: Settings, ingest_worker: Any, consume: Any
) -> None:
    s = ingest_settings
    original = stamped(ev.chat_message("room-x", GUEST, "the original"), -60)
    later_time = {**original, "occurred_at": at(-30)}  # same id, another timestamp
    other_text = {**original, "data": {"text": "the original, edited"}}  # same id, other text
    other_room = {**original, "room_id": "room-y"}  # same id, another room
    await produce_raw(s, [record(original)])
    async with ingest_worker(s) as w:
        assert await w.caught_up(60)
        await produce_raw(s, [record(later_time), record(other_text), record(other_room), record(original)])
        assert await w.caught_up(60)
        assert w.metrics.dead_lettered.labels("conflicting_duplicate")._value.get() == 3
        assert w.service.totals["duplicates"] == 1  # the identical copy: counted, not dead-lettered
    rows = await fetch(s, "SELECT body, occurred_at FROM events")
    assert [(r["body"], r["occurred_at"].isoformat()) for r in rows] == [
        ("the original", datetime.fromisoformat(original["occurred_at"]).isoformat())
    ]
    dead = await fetch(s, "SELECT reason, detail, content FROM dead_letters ORDER BY src_offset")
    assert [d["reason"] for d in dead] == ["conflicting_duplicate"] * 3
    assert all(original["event_id"] in d["detail"] for d in dead)
    # the detail says what differs, for the room server's developer to find the copy's fault
    differs = {
        (d["content"]["room_id"], d["content"]["body"]): d["detail"]
        .split(" was stored before with ")[1]
        .split(" than this copy")[0]
        for d in dead
    }
    assert differs == {
        ("room-x", "the original"): "other occurred_at",
        ("room-x", "the original, edited"): "other text",
        ("room-y", "the original"): "other room_id (the rest not compared)",
    }
    mirrored = await consume(s.dead_letter_topic, 3)
    assert sorted(dict(m.headers)["roomlogs.reason"] for m in mirrored) == [b"conflicting_duplicate"] * 3


async def test_a_deletion_takes_effect_for_ingest_at_once(
    ingest_settings: Settings, ingest_worker: Any
) -> None:
    """No window: the worker that runs through the deletion never writes the deleted events again."""
    s = ingest_settings
    owner = stamped(ev.permissions_changed("room-d", None, "owner_transferred", OWNER), -900)
    chats = [stamped(ev.chat_message("room-d", GUEST, f"before {i}"), -800 + i) for i in range(20)]
    conn = await db.connect(s.postgres_dsn.get(), s.postgres_schema)
    try:
        # the deletion function checks the owner's token itself (migration 0010), with the key installed
        key = "replay-test-key-" + "k" * 48
        await install(conn, token_trust(ApiSettings(jwt_key=Secret(key), jwt_algorithm="HS256")))
        owner_token = jwt.encode({"sub": "u-owner", "exp": int(time.time()) + 300}, key, algorithm="HS256")
        async with ingest_worker(s) as w:
            await produce_raw(s, [record(owner), *map(record, chats)])
            assert await w.caught_up(60)
            deleted = await conn.fetchval(
                "SELECT api_delete_room_logs($1, 'room-d', 'bearer', $2, 'owner', 'clean slate')",
                uuid.uuid4(),
                owner_token,
            )
            assert deleted == 21
            # straight away: a room server resends everything, and late events from before the deletion
            # arrive, and one new event after it
            late = [stamped(ev.chat_message("room-d", GUEST, f"late {i}"), -300 + i) for i in range(5)]
            after = stamped(ev.chat_message("room-d", GUEST, "after the deletion"), 2)
            await produce_raw(s, [record(owner), *map(record, chats), *map(record, late), record(after)])
            assert await w.caught_up(60)
            assert w.metrics.suppressed.labels("room_deleted")._value.get() == 26
        bodies = [r["body"] for r in await conn.fetch("SELECT body FROM events WHERE room_id = 'room-d'")]
        assert bodies == ["after the deletion"]
    finally:
        await conn.close()


async def test_replays_and_late_grants_never_give_back_revoked_access(
    ingest_settings: Settings, ingest_worker: Any
) -> None:
    s = ingest_settings
    owner = stamped(ev.permissions_changed("room-p", None, "owner_transferred", OWNER), -100)
    granted = stamped(ev.permissions_changed("room-p", OWNER, "moderator_added", MOD), -90)
    revoked = stamped(ev.permissions_changed("room-p", OWNER, "moderator_removed", MOD), -50)
    history = [owner, granted, revoked]

    async def access() -> tuple[str, list[str]]:
        (room,) = await fetch(s, "SELECT owner_id FROM rooms WHERE room_id = 'room-p'")
        mods = await fetch(s, "SELECT user_id FROM room_moderators WHERE room_id = 'room-p'")
        return room["owner_id"], [m["user_id"] for m in mods]

    async with ingest_worker(s) as w:
        await produce_raw(s, list(map(record, history)))
        assert await w.caught_up(60)
        assert await access() == ("u-owner", [])

        await produce_raw(s, list(map(record, history)))  # a replay of the room's history
        assert await w.caught_up(60)
        assert await access() == ("u-owner", []), "a replay re-granted a revoked moderator"

        late_grant = stamped(ev.permissions_changed("room-p", OWNER, "moderator_added", MOD), -70)
        stale_owner = stamped(ev.permissions_changed("room-p", None, "owner_transferred", GUEST), -200)
        await produce_raw(s, [record(late_grant), record(stale_owner)])
        assert await w.caught_up(60)
        assert await access() == ("u-owner", []), "an event older than the revocation re-granted access"

        fresh_grant = stamped(ev.permissions_changed("room-p", OWNER, "moderator_added", MOD), -5)
        await produce_raw(s, [record(fresh_grant)])
        assert await w.caught_up(60)
        assert await access() == ("u-owner", ["u-mod"])


SECRETS = ("alice@example.com", "203.0.113.9", "4111111111111111", "Alice Doe", "hunter2", "+44 20 7946 0958")


async def test_dead_letters_keep_no_undeclared_personal_data(
    ingest_settings: Settings, ingest_worker: Any, consume: Any
) -> None:
    s = ingest_settings
    invalid = {  # invalid (no data.text), full of what must never be stored
        "event_id": event_id(),
        "type": "chat.message",
        "schema_version": 1,
        "room_id": "room-pii",
        "occurred_at": at(-5),
        "email": "alice@example.com",
        "ip": "203.0.113.9",
        "actor": {
            "user_id": "u-1",
            "display_name": "mail me: alice@example.com",
            "real_name": "Alice Doe",
            "password": "hunter2",
            "payment": {"card": "4111111111111111"},
        },
        "data": {"phone": "+44 20 7946 0958"},
    }
    unparsable = b'{"email": "alice@example.com", "password": "hunter2", oops'
    raw = orjson.dumps(invalid)
    await produce_raw(s, [(b"room-pii", raw), (b"room-pii", unparsable)])
    async with ingest_worker(s) as w:
        assert await w.caught_up(60)
    rows = await fetch(
        s,
        """SELECT reason, detail, content, content::text AS text, raw_sha256, raw_bytes
             FROM dead_letters ORDER BY src_offset""",
    )
    assert [r["reason"] for r in rows] == ["missing_field", "invalid_json"]
    kept, unparsed = rows
    for secret in SECRETS:
        assert secret not in kept["text"] + kept["detail"] + unparsed["detail"], secret
    # what an operator still sees to debug the producer
    assert kept["content"]["actor"] == {"user_id": "u-1", "display_name": "mail me: [email removed]"}
    assert kept["content"]["room_id"] == "room-pii" and kept["content"]["type"] == "chat.message"
    assert set(kept["content"]["_undeclared_fields"]) == {
        "email",
        "ip",
        "actor.real_name",
        "actor.password",
        "actor.payment",
        "data.phone",
    }
    assert (kept["raw_sha256"], kept["raw_bytes"]) == (hashlib.sha256(raw).digest(), len(raw))
    assert unparsed["content"] is None
    assert (unparsed["raw_sha256"], unparsed["raw_bytes"]) == (
        hashlib.sha256(unparsable).digest(),
        len(unparsable),
    )
    mirrored = await consume(s.dead_letter_topic, 2)
    assert len(mirrored) == 2
    for m in mirrored:
        shown = m.value + b"".join(v for _, v in m.headers)
        for secret in SECRETS:
            assert secret.encode() not in shown, secret


async def test_a_room_another_worker_moved_is_classified_by_its_new_state(
    ingest_settings: Settings, ingest_worker: Any
) -> None:
    """A producer that does not key by room spreads the room over partitions, so over workers: the room's
    settings event may be applied by another worker than the one storing its chat. That worker's view of
    the room (and so the retention class of what it stores) must follow, not stay with what it cached."""
    s = ingest_settings
    before = stamped(ev.chat_message("room-spread", GUEST, "while public"), -30)
    after = stamped(ev.chat_message("room-spread", GUEST, "after it became private"), -1)
    async with ingest_worker(s) as w:
        await produce_raw(s, [record(before)])
        assert await w.caught_up(60)  # this worker now knows room-spread as public (the default)
        # another worker stores the room's settings event: what its write transaction does to `rooms`
        became_private = RoomChange(
            0, 0, "room-spread", "settings", datetime.now(UTC) - timedelta(seconds=10),
            event_id(), "public", privacy="private",
        )  # fmt: skip
        conn = await db.connect(s.postgres_dsn.get(), s.postgres_schema)
        try:
            async with conn.transaction():
                await apply_room_changes(conn, [became_private], w.service.rooms.classify)
        finally:
            await conn.close()
        await produce_raw(s, [(b"not-the-room", orjson.dumps(after))])
        assert await w.caught_up(60)
    rows = await fetch(
        s,
        "SELECT body, retention_class FROM events WHERE room_id = 'room-spread' ORDER BY occurred_at",
    )
    assert [(r["body"], r["retention_class"]) for r in rows] == [
        ("while public", "public"),
        ("after it became private", "private"),
    ]
