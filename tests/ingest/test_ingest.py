"""The ingest path end to end: real broker, real PostgreSQL, the real ingest loop."""

from __future__ import annotations

import asyncio
import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import orjson
import pytest
import uuid_utils
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from prometheus_client import CollectorRegistry

from pipeline.cli.progress import wait_caught_up
from pipeline.events.contract import EventType
from pipeline.ingest.service import IngestService
from pipeline.metrics import IngestMetrics
from pipeline.publisher import events as ev
from pipeline.publisher.client import RoomEventPublisher
from pipeline.settings import Settings
from pipeline.storage import db

# rebalances, offsets of record, dead letters: on Tansu and on the 3-node Apache Kafka cluster
pytestmark = pytest.mark.broker_semantics

NOW = datetime.now(UTC)


def stamp(delta_seconds: float = 0) -> str:
    return (NOW + timedelta(seconds=delta_seconds)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def event_id() -> str:
    return str(uuid_utils.uuid7())


async def produce_raw(settings: Settings, records: list[tuple[bytes, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        for key, value in records:
            await producer.send(settings.events_topic, value=value, key=key)
        await producer.flush()
    finally:
        await producer.stop()


async def fetch(settings: Settings, sql: str, *args: Any) -> list[Any]:
    conn = await db.connect(settings.postgres_dsn.get(), settings.postgres_schema)
    try:
        return list(await conn.fetch(sql, *args))
    finally:
        await conn.close()


def one_of_each(room: str, owner: dict[str, Any], guest: dict[str, Any]) -> list[dict[str, Any]]:
    out = [
        ev.settings_changed(room, owner, {"privacy": (None, "private"), "max_occupancy": (None, 10)}),
        ev.permissions_changed(room, None, "owner_transferred", owner),
        ev.permissions_changed(room, owner, "moderator_added", guest),
        ev.user_entered(room, guest),
        ev.chat_message(room, guest, "hello room"),
        ev.moderation(EventType.MOD_WARN, room, owner, guest, "be nice"),
        ev.moderation(EventType.MOD_MUTE, room, owner, guest, "spam", duration_seconds=600, timed=True),
        ev.moderation(EventType.MOD_UNMUTE, room, owner, guest, "ok now"),
        ev.moderation(EventType.MOD_KICK, room, owner, guest, "again"),
        ev.moderation(EventType.MOD_BAN, room, owner, guest, "third time", duration_seconds=None, timed=True),
        ev.moderation(EventType.MOD_UNBAN, room, owner, guest, "appeal accepted"),
        ev.gift_sent(room, owner, guest, "rose-1", 25, item_name="Rose"),
        ev.user_left(room, guest, "kicked"),
        ev.permissions_changed(room, owner, "moderator_removed", guest),
    ]
    for i, e in enumerate(out):
        e["event_id"] = event_id()
        e["occurred_at"] = stamp(-60 + i)
    return out


async def test_every_event_type_lands_exactly_once_even_when_sent_twice(
    ingest_settings: Settings, ingest_worker: Any
) -> None:
    s = ingest_settings
    owner = ev.user("owner-1", "Olga", avatar_id="av-9", avatar_url="https://cdn.example/av9.png")
    guest = ev.user("guest-7", "Gus")
    events = one_of_each("room-private", owner, guest)
    busy = [
        ev.settings_changed("room-busy", owner, {"privacy": (None, "public"), "max_occupancy": (None, 500)}),
        ev.chat_message("room-busy", guest, "busy hello"),
    ]
    for i, e in enumerate(busy):
        e["event_id"], e["occurred_at"] = event_id(), stamp(-30 + i)
    unknown_room = ev.chat_message("room-unknown", guest, "who owns this?")
    unknown_room["event_id"], unknown_room["occurred_at"] = event_id(), stamp(-5)
    everything = [*events, *busy, unknown_room]
    assert {e["type"] for e in everything} == {t.value for t in EventType}

    async with RoomEventPublisher.from_settings(s) as publisher:
        for e in everything:
            await publisher.send(e)
        for e in everything:  # a producer retry after a lost acknowledgement sends the same events again
            await publisher.send(e)

    async with ingest_worker(s) as w:
        assert await w.caught_up(60)
        assert w.service.totals["dead_lettered"] == 0

    rows = await fetch(s, "SELECT * FROM events ORDER BY occurred_at")
    assert sorted(str(r["event_id"]) for r in rows) == sorted(e["event_id"] for e in everything)
    by_id = {str(r["event_id"]): r for r in rows}

    chat = by_id[events[4]["event_id"]]
    assert (chat["event_type"], chat["body"], chat["actor_id"]) == ("chat.message", "hello room", "guest-7")
    mute = by_id[events[6]["event_id"]]
    assert (mute["target_id"], mute["body"], mute["payload"]["duration_seconds"]) == ("guest-7", "spam", 600)
    gift = by_id[events[11]["event_id"]]
    assert gift["payload"]["credits"] == 25 and gift["payload"]["item"] == {
        "item_id": "rose-1",
        "name": "Rose",
    }
    assert gift["payload"]["actor"]["avatar"] == {"avatar_id": "av-9", "url": "https://cdn.example/av9.png"}
    left = by_id[events[12]["event_id"]]
    assert left["payload"]["how"] == "kicked"

    classes = {r["room_id"]: r["retention_class"] for r in rows}
    assert classes == {"room-private": "private", "room-busy": "busy_public", "room-unknown": "public"}

    rooms = {r["room_id"]: r for r in await fetch(s, "SELECT * FROM rooms")}
    assert rooms["room-private"]["owner_id"] == "owner-1"
    assert rooms["room-private"]["privacy"] == "private"
    assert rooms["room-busy"]["retention_class"] == "busy_public"
    # moderator added then removed
    assert await fetch(s, "SELECT * FROM room_moderators") == []


def _good(room: str, text: str) -> bytes:
    return orjson.dumps(
        {
            "event_id": event_id(),
            "type": "chat.message",
            "schema_version": 1,
            "room_id": room,
            "occurred_at": stamp(-1),
            "actor": {"user_id": "u-1"},
            "data": {"text": text},
        }
    )


BAD_INPUTS: list[tuple[str, bytes | None, str]] = [
    ("invalid json", b'{"type": "chat.message", ', "invalid_json"),
    ("not an object", b"[1, 2, 3]", "not_an_object"),
    ("unknown type", orjson.dumps({"type": "room.exploded", "schema_version": 1}), "unknown_type"),
    ("version 2", orjson.dumps({"type": "chat.message", "schema_version": 2}), "unsupported_version"),
    (
        "missing data.text",
        orjson.dumps(
            {
                "event_id": event_id(),
                "type": "chat.message",
                "schema_version": 1,
                "room_id": "r",
                "occurred_at": stamp(),
                "actor": {"user_id": "u"},
                "data": {},
            }
        ),
        "missing_field",
    ),
    (
        "credits as string",
        orjson.dumps(
            {
                "event_id": event_id(),
                "type": "gift.sent",
                "schema_version": 1,
                "room_id": "r",
                "occurred_at": stamp(),
                "actor": {"user_id": "u"},
                "data": {"recipient": {"user_id": "v"}, "item": {"item_id": "i"}, "credits": "12"},
            }
        ),
        "invalid_value",
    ),
    (
        "NaN credits",
        (
            b'{"event_id": "%s", "type": "gift.sent", "schema_version": 1, "room_id": "r",'
            b' "occurred_at": "%s",'
            b' "actor": {"user_id": "u"}, "data": {"recipient": {"user_id": "v"}, "item": {"item_id": "i"},'
            b' "credits": NaN}}' % (event_id().encode(), stamp().encode())
        ),
        "invalid_value",
    ),
    ("oversize", _good("r", "x" * 70_000), "oversize"),
    (
        "from the future",
        orjson.dumps(
            {
                "event_id": event_id(),
                "type": "user.entered",
                "schema_version": 1,
                "room_id": "r",
                "occurred_at": stamp(86_400),
                "actor": {"user_id": "u"},
            }
        ),
        "timestamp_in_future",
    ),
    (
        "naive timestamp",
        orjson.dumps(
            {
                "event_id": event_id(),
                "type": "user.entered",
                "schema_version": 1,
                "room_id": "r",
                "occurred_at": "2026-01-01T10:00:00",
                "actor": {"user_id": "u"},
            }
        ),
        "invalid_timestamp",
    ),
    (
        "whisper",
        orjson.dumps(
            {
                "event_id": event_id(),
                "type": "chat.whisper",
                "schema_version": 1,
                "room_id": "r",
                "occurred_at": stamp(),
                "actor": {"user_id": "u"},
                "data": {"text": "secret"},
            }
        ),
        "private_message",
    ),
    (
        "bad event id",
        orjson.dumps(
            {
                "event_id": "1234",
                "type": "user.entered",
                "schema_version": 1,
                "room_id": "r",
                "occurred_at": stamp(),
                "actor": {"user_id": "u"},
            }
        ),
        "invalid_value",
    ),
    ("not UTF-8", b'{"text": "\xff\xfe"}', "invalid_json"),
    ("tombstone", None, "not_an_object"),
    # Each of these three once crashed the worker, on every restart: its partition stopped for good.
    (
        "a number of 5,000 digits (more than Python converts)",
        _good("room-a", "big").replace(b'"data"', b'"n": ' + b"7" * 5000 + b', "data"'),
        "invalid_json",
    ),
    (
        "schema_version nested 1,010 deep",
        b'{"type": "chat.message", "schema_version": ' + b"[" * 1010 + b"]" * 1010 + b"}",
        "unsupported_version",
    ),
    (
        "a lone surrogate in room_id (two rooms would become one)",
        _good("room-a", "x").replace(b'"room-a"', b'"room-\\ud800"'),
        "invalid_value",
    ),
]


async def test_bad_input_is_dead_lettered_with_its_reason_and_neighbours_are_stored(
    ingest_settings: Settings, ingest_worker: Any
) -> None:
    s = ingest_settings
    records: list[tuple[bytes, bytes]] = []
    expected_good: list[str] = []
    for i, (_, raw, _reason) in enumerate(BAD_INPUTS):
        before, after = f"good before {i}", f"good after {i}"
        records += [
            (b"room-a", _good("room-a", before)),
            (b"room-a", raw),
            (b"room-a", _good("room-a", after)),
        ]  # type: ignore[list-item]
        expected_good += [before, after]
    # Characters PostgreSQL refuses, inside otherwise good events: stored, cleaned.
    nul = orjson.dumps(
        {
            "event_id": event_id(),
            "type": "chat.message",
            "schema_version": 1,
            "room_id": "room-a",
            "occurred_at": stamp(-1),
            "actor": {"user_id": "u-1"},
            "data": {"text": "a\x00b"},
        }
    )
    surrogate = (
        b'{"event_id": "%s", "type": "chat.message", "schema_version": 1, "room_id": "room-a",'
        b' "occurred_at": "%s", "actor": {"user_id": "u-1"}, "data": {"text": "x\\ud800y"}}'
        % (event_id().encode(), stamp(-1).encode())
    )
    # A lone surrogate (read by the lenient parse) with an undeclared field nested 600 deep: stored, cleaned.
    deep = _good("room-a", "deep").replace(b'"deep"', b'"deep\\ud800"')
    deep = deep.replace(b'"data"', b'"extra": ' + b"[" * 600 + b"]" * 600 + b', "data"')
    records += [(b"room-a", nul), (b"room-a", surrogate), (b"room-a", deep)]
    await produce_raw(s, records)

    async with ingest_worker(s) as w:
        assert await w.caught_up(60)
        stored_metric = w.metrics.stored.labels("chat.message")._value.get()

    bodies = sorted(r["body"] for r in await fetch(s, "SELECT body FROM events"))
    assert bodies == sorted([*expected_good, "a\ufffdb", "x\ufffdy", "deep\ufffd"])
    assert stored_metric == len(bodies)

    dead = await fetch(
        s,
        """SELECT reason, detail, content, raw_sha256, raw_bytes, src_offset
             FROM dead_letters ORDER BY src_offset""",
    )
    assert [d["reason"] for d in dead] == [reason for _, _, reason in BAD_INPUTS]
    for d, (name, raw, reason) in zip(dead, BAD_INPUTS, strict=True):
        assert d["detail"], name
        if reason == "private_message":
            assert (d["content"], d["raw_sha256"]) == (None, None), "a whisper's content is kept nowhere"
            assert b"secret" not in orjson.dumps(d["detail"])
        elif raw is not None:
            # the producer can find its message by fingerprint; parsable input keeps its allowlisted view
            assert d["raw_sha256"] == hashlib.sha256(raw).digest(), name
            assert d["raw_bytes"] == len(raw), name

    consumer = AIOKafkaConsumer(
        s.dead_letter_topic, bootstrap_servers=s.kafka_bootstrap, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        got: list[Any] = []
        deadline = asyncio.get_running_loop().time() + 20
        while len(got) < len(BAD_INPUTS) and asyncio.get_running_loop().time() < deadline:
            for msgs in (await consumer.getmany(timeout_ms=500)).values():
                got += msgs
    finally:
        await consumer.stop()
    reasons = [dict(m.headers)["roomlogs.reason"].decode() for m in got]
    assert reasons == [reason for _, _, reason in BAD_INPUTS]


async def test_undeclared_personal_fields_are_never_stored(
    ingest_settings: Settings, ingest_worker: Any
) -> None:
    s = ingest_settings
    raw = orjson.dumps(
        {
            "event_id": event_id(),
            "type": "chat.message",
            "schema_version": 1,
            "room_id": "room-p",
            "occurred_at": stamp(-1),
            "ip": "203.0.113.9",
            "email": "alice@example.com",
            "actor": {
                "user_id": "u-1",
                "display_name": "Al",
                "email": "alice@example.com",
                "real_name": "Alice Doe",
                "payment": {"card": "4111111111111111"},
            },
            "data": {
                "text": "mail alice@example.com, card 4111 1111 1111 1111, ip 203.0.113.9",
                "ip": "1.2.3.4",
            },
        }
    )
    await produce_raw(s, [(b"room-p", raw)])
    async with ingest_worker(s) as w:
        assert await w.caught_up(60)
        dropped = w.metrics.fields_dropped.labels("chat.message")._value.get()
    (row,) = await fetch(s, "SELECT body, payload, payload::text AS payload_text FROM events")
    stored = row["body"] + row["payload_text"]
    for secret in (
        "alice@example.com",
        "4111",
        "203.0.113.9",
        "1.2.3.4",
        "Alice Doe",
        "real_name",
        "payment",
    ):
        assert secret not in stored
    assert row["payload"] == {"actor": {"user_id": "u-1", "display_name": "Al"}}
    assert row["body"] == "mail [email removed], card [card number removed], ip [ip removed]"
    assert dropped == 6  # ip, email (top), email, real_name, payment (actor), ip (data)


async def test_replayed_events_older_than_retention_are_not_reinserted(
    ingest_settings: Settings, ingest_worker: Any
) -> None:
    s = ingest_settings
    old = orjson.dumps(
        {
            "event_id": event_id(),
            "type": "user.entered",
            "schema_version": 1,
            "room_id": "room-r",
            "occurred_at": stamp(-40 * 86_400),
            "actor": {"user_id": "u"},
        }
    )
    fresh = _good("room-r", "still here")
    await produce_raw(s, [(b"room-r", old), (b"room-r", fresh)])
    async with ingest_worker(s) as w:
        assert await w.caught_up(60)
        assert w.service.totals["expired"] == 1, w.service.totals
        assert w.metrics.expired.labels("public")._value.get() == 1
    assert [r["body"] for r in await fetch(s, "SELECT body FROM events")] == ["still here"]
    assert await fetch(s, "SELECT * FROM dead_letters") == []


async def test_a_restarted_worker_resumes_after_the_last_written_batch(
    ingest_settings: Settings, ingest_worker: Any
) -> None:
    s = ingest_settings
    first = [(f"room-{i % 7}".encode(), _good(f"room-{i % 7}", f"first {i}")) for i in range(3_000)]
    second = [(f"room-{i % 7}".encode(), _good(f"room-{i % 7}", f"second {i}")) for i in range(2_000)]
    await produce_raw(s, first)
    async with ingest_worker(s):
        assert await wait_caught_up(s, 60, progress=False)
    await produce_raw(s, second)
    async with ingest_worker(s) as w:
        assert await w.caught_up(60)
        # Re-reading the first run's records would show up as records fenced off by the stored offsets.
        assert w.metrics.fenced._value.get() == 0, "must resume from the stored offsets, not re-read"
        assert w.service.totals["consumed"] >= len(second)
    (row,) = await fetch(s, "SELECT count(*) AS n, count(DISTINCT event_id) AS d FROM events")
    assert row["n"] == row["d"] == len(first) + len(second)


async def test_late_events_get_their_day_created_on_demand(
    ingest_settings: Settings, ingest_worker: Any
) -> None:
    """A day nobody made a partition for (late delivery) is created by the writer: no crash, no loss."""
    s = ingest_settings
    private = ev.settings_changed("room-late", None, {"privacy": (None, "private")})
    private["event_id"], private["occurred_at"] = event_id(), stamp(-25 * 86_400)
    late = [(b"room-late", orjson.dumps(private))]
    for days in (25, 20, 9):  # inside private retention (30 days), on days with no partition yet
        late.append(
            (
                b"room-late",
                orjson.dumps(
                    {
                        "event_id": event_id(),
                        "type": "chat.message",
                        "schema_version": 1,
                        "room_id": "room-late",
                        "occurred_at": stamp(-days * 86_400),
                        "actor": {"user_id": "u"},
                        "data": {"text": f"{days}d"},
                    }
                ),
            )
        )
    await produce_raw(s, late)
    async with ingest_worker(s) as w:
        assert await w.caught_up(60)
        assert w.metrics.partitions_created._value.get() >= 4
    rows = await fetch(s, "SELECT body, retention_class FROM events WHERE event_type = 'chat.message'")
    assert sorted(r["body"] for r in rows) == ["20d", "25d", "9d"]
    assert {r["retention_class"] for r in rows} == {"private"}


async def test_a_replay_does_not_bring_back_logs_an_authorized_request_deleted(
    ingest_settings: Settings, ingest_worker: Any
) -> None:
    s = ingest_settings
    conn = await db.connect(s.postgres_dsn.get(), s.postgres_schema)
    try:  # what the API records when an owner deletes a room and staff erase a user (see migration 0003)
        await conn.execute(
            """INSERT INTO deletion_requests (request_id, requested_at, kind, room_id, user_id, requested_by,
                                              identity_type, basis, reason, rows_deleted)
               VALUES ($1, $2, 'room_logs', 'room-gone', NULL, 'owner-1', 'user', 'owner', 'by owner', 3),
                      ($3, $2, 'user_chat_erasure', NULL, 'u-erased', 'st-1', 'staff', 'staff', 'T-4', 2)""",
            uuid_utils.uuid4(),
            NOW - timedelta(minutes=10),
            uuid_utils.uuid4(),
        )
    finally:
        await conn.close()

    def chat(room: str, user: str, text: str, ago_seconds: float) -> tuple[bytes, bytes]:
        return room.encode(), orjson.dumps(
            {
                "event_id": event_id(),
                "type": "chat.message",
                "schema_version": 1,
                "room_id": room,
                "occurred_at": stamp(-ago_seconds),
                "actor": {"user_id": user},
                "data": {"text": text},
            }
        )

    await produce_raw(
        s,
        [
            chat("room-gone", "u-1", "deleted by the owner", 3600),  # replayed: before the deletion
            chat("room-gone", "u-1", "said after the deletion", 60),
            chat("room-other", "u-erased", "erased", 3600),
            chat("room-other", "u-erased", "said after the erasure", 60),
            chat("room-other", "u-1", "someone else", 3600),
        ],
    )
    async with ingest_worker(s) as w:
        assert await w.caught_up(60)
        assert w.metrics.suppressed.labels("room_deleted")._value.get() == 1
        assert w.metrics.suppressed.labels("user_erased")._value.get() == 1
    bodies = sorted(r["body"] for r in await fetch(s, "SELECT body FROM events"))
    assert bodies == ["said after the deletion", "said after the erasure", "someone else"]


async def test_an_error_in_a_rebalance_ends_the_ingest_loop_instead_of_idling(
    ingest_settings: Settings,
) -> None:
    """aiokafka logs and swallows errors raised in rebalance callbacks: a worker whose assignment failed for
    a reason other than an outage (here the offsets table is gone) must stop, not sit idle in its group."""
    s = ingest_settings
    conn = await db.connect(s.postgres_dsn.get(), s.postgres_schema)
    await conn.execute("ALTER TABLE ingest_offsets RENAME TO ingest_offsets_gone")
    await conn.close()
    pool = await db.create_pool(s.postgres_dsn.get(), s.postgres_schema, 2)
    service = IngestService(s, pool, IngestMetrics(CollectorRegistry()))
    try:
        await service.start()
        with pytest.raises(asyncpg.UndefinedTableError):
            await asyncio.wait_for(service.run(), 60)
    finally:
        await service.close()
        await pool.close()
