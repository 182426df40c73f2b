"""The worker's own database role (`<schema>_worker`, migration 0008): it ingests, makes partitions and
prunes its registry as that role, and cannot edit, delete or truncate logs, nor read the access audit."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import orjson
import pytest
from aiokafka import AIOKafkaProducer

from pipeline.events.contract import EventType
from pipeline.publisher import events as ev
from pipeline.publisher.client import RoomEventPublisher
from pipeline.retention import maintain
from pipeline.settings import Settings
from pipeline.storage import db
from pipeline.storage.partitions import PartitionManager, event_partition

NOW = datetime.now(UTC)


def stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def room_events(room: str, start: datetime) -> list[dict[str, Any]]:
    owner, guest = ev.user("u-owner", "Olga"), ev.user("u-guest", "Gus")
    out = [
        ev.settings_changed(room, owner, {"privacy": (None, "private"), "max_occupancy": (None, 10)}),
        ev.permissions_changed(room, None, "owner_transferred", owner),
        ev.permissions_changed(room, owner, "moderator_added", guest),
        ev.chat_message(room, guest, "hello room"),
        ev.moderation(EventType.MOD_WARN, room, owner, guest, "be nice"),
        ev.permissions_changed(room, owner, "moderator_removed", guest),
    ]
    for i, e in enumerate(out):
        e["occurred_at"] = stamp(start + timedelta(seconds=i))
    return out


async def publish(settings: Settings, events: list[dict[str, Any]], raw: list[bytes]) -> None:
    async with RoomEventPublisher.from_settings(settings) as publisher:
        for e in events:
            await publisher.send(e)
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        for value in raw:
            await producer.send_and_wait(settings.events_topic, value=value, key=b"room-bad")
    finally:
        await producer.stop()


async def test_the_worker_role_ingests_makes_partitions_and_prunes_but_drops_nothing(
    ingest_settings: Settings, worker_settings: Settings, ingest_worker: Any, consume: Any
) -> None:
    s = worker_settings
    admin = await db.connect(ingest_settings.postgres_dsn.get(), s.postgres_schema)
    try:
        owner = await admin.fetchval("SELECT current_user")
        # an expired day (busy_public keeps 3 days) and an event id older than the longest retention
        expired_day = NOW.date() - timedelta(days=10)
        manager = PartitionManager()
        await manager.load(admin)
        await manager.ensure(admin, [("busy_public", expired_day)])
        await admin.execute("INSERT INTO event_ids VALUES (gen_random_uuid(), $1)", NOW - timedelta(days=90))
        late = NOW - timedelta(days=5)  # a public room's late event: its day has no partition yet
        events = [*room_events("room-1", NOW - timedelta(minutes=5)), *room_events("room-late", late)]
        await publish(s, events, [b"{not json"])
        async with ingest_worker(s) as w:
            assert await w.caught_up(60)
            assert w.service.totals["stored"] == len(events)
            assert w.service.totals["dead_lettered"] == 1
            mirrored = await consume(s.dead_letter_topic, 1)
            assert mirrored[0].headers[0] == ("roomlogs.reason", b"invalid_json")
        stored = await admin.fetchval("SELECT count(*) FROM events")
        assert stored == len(events)
        rooms = await admin.fetch("SELECT room_id, owner_id FROM rooms ORDER BY room_id")
        assert [(r["room_id"], r["owner_id"]) for r in rooms] == [
            ("room-1", "u-owner"),
            ("room-late", "u-owner"),
        ]
        assert await admin.fetchval("SELECT count(*) FROM room_moderators") == 0
        assert await admin.fetchval("SELECT sum(next_offset) FROM ingest_offsets") == len(events) + 1
        # the late day's partition was made on demand, owned by the schema's owner, not by the worker
        late_partition = event_partition("private", late.date())
        assert (
            await admin.fetchval(
                "SELECT pg_get_userbyid(relowner) FROM pg_class WHERE oid = to_regclass($1)", late_partition
            )
            == owner
        )

        worker = await db.connect(s.postgres_dsn.get(), s.postgres_schema)
        try:
            report = await maintain(worker, s, now=NOW)
            assert report.error is None, report.error
            assert report.drops_left_to == owner
            assert report.ids_pruned == 1 and report.dropped == []
            assert f"run `roomlogs retention enforce --apply` as {owner}" in report.render()
        finally:
            await worker.close()
        ahead = {(NOW.date() + timedelta(days=d)) for d in range(1, s.partitions_ahead_days + 1)}
        for cls in ("busy_public", "private", "public"):
            for day in ahead:
                assert await admin.fetchval("SELECT to_regclass($1) IS NOT NULL", event_partition(cls, day))
        expired = event_partition("busy_public", expired_day)
        assert await admin.fetchval("SELECT to_regclass($1) IS NOT NULL", expired), "the worker dropped it"
        # the owner drops it, with its ledger row
        report = await maintain(admin, ingest_settings, now=NOW)
        assert [d.partition for d in report.dropped] == [expired]
        ledger = await admin.fetch("SELECT partition_name FROM deletion_ledger")
        assert [r["partition_name"] for r in ledger] == [expired]
    finally:
        await admin.close()


@pytest.mark.parametrize(
    "sql",
    [
        "UPDATE events SET body = 'edited'",
        "DELETE FROM events",
        "TRUNCATE events",
        "SELECT count(*) FROM access_audit",
        "UPDATE dead_letters SET detail = 'edited'",
        "DELETE FROM dead_letters",
        "DELETE FROM deletion_ledger",
        "INSERT INTO deletion_requests (request_id, kind, room_id, requested_by, identity_type, basis,"
        " reason, rows_deleted) VALUES (gen_random_uuid(), 'room_logs', 'r', 'u', 'user', 'owner', 'x', 0)",
        "DELETE FROM held_events",
        "UPDATE legal_holds SET released_at = now(), released_by = 'worker'",
        "ALTER TABLE events DISABLE TRIGGER events_guard_delete",
        "ALTER TABLE events_public DETACH PARTITION {partition}",
        "DROP TABLE {partition}",
        "CREATE TABLE sneaky (x int)",
        "SELECT api_delete_room_logs(gen_random_uuid(), 'room-1', 'u-owner', 'user', 'owner', 'x')",
    ],
)
async def test_the_worker_role_cannot_edit_delete_or_read_the_audit(
    ingest_settings: Settings, worker_settings: Settings, sql: str
) -> None:
    admin = await db.connect(ingest_settings.postgres_dsn.get(), ingest_settings.postgres_schema)
    try:
        manager = PartitionManager()
        await manager.load(admin)
        await manager.ensure(admin, [("public", NOW.date())])
        await admin.execute(
            """INSERT INTO events (event_id, occurred_at, retention_class, room_id, event_type,
                                   schema_version, payload, src_partition, src_offset)
               VALUES (gen_random_uuid(), now(), 'public', 'room-1', 'user.entered', 1, $1, 0, 0)""",
            orjson.dumps({}),
        )
        worker = await db.connect(worker_settings.postgres_dsn.get(), worker_settings.postgres_schema)
        try:
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await worker.execute(sql.format(partition=event_partition("public", NOW.date())))
        finally:
            await worker.close()
        assert await admin.fetchval("SELECT count(*) FROM events WHERE body IS NULL") == 1
    finally:
        await admin.close()


async def test_the_worker_role_makes_only_well_formed_partitions(worker_settings: Settings) -> None:
    worker = await db.connect(worker_settings.postgres_dsn.get(), worker_settings.postgres_schema)
    try:
        for args in [
            ("events", "nope", NOW.date()),  # no such retention class
            ("events", "public; DROP TABLE events", NOW.date()),
            ("dead_letters", "public", NOW.date()),
            ("events", "public", NOW.date() + timedelta(days=400)),
            ("rooms", None, NOW.date()),
        ]:
            with pytest.raises(asyncpg.InvalidParameterValueError):
                await worker.execute("SELECT create_log_partition($1, $2, $3)", *args)
        assert await worker.fetchval("SELECT create_log_partition('events', 'public', NULL)")  # the class
        assert await worker.fetchval("SELECT create_log_partition('events', 'public', $1)", NOW.date())
        with pytest.raises(asyncpg.DuplicateTableError):
            await worker.execute("SELECT create_log_partition('events', 'public', $1)", NOW.date())
    finally:
        await worker.close()
