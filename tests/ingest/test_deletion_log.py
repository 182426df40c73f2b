"""Deleted stays deleted across a restore: every authorized deletion is also kept, sealed, on the deletions
topic (migration 0013, pipeline/ingest/deletion_log.py), and a starting worker re-applies those its
database lacks before it ingests anything. Forged records on that topic, and the worker's own database role,
delete nothing."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import hmac
import logging
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import jwt
import orjson
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from db_roles import login_as
from prometheus_client import CollectorRegistry
from topic_support import create_topic, delete_topic, events, publish, sql

from pipeline.api.settings import ApiSettings
from pipeline.api.trust import install, token_trust
from pipeline.errors import ConfigurationError
from pipeline.ingest.deletion_log import SEAL_HEADER, reapply
from pipeline.kafka_topics import DELETIONS_TOPIC_CONFIGS, ensure_topics
from pipeline.metrics import IngestMetrics
from pipeline.settings import Secret, Settings
from pipeline.stack.postgres import postgres_bin_dir
from pipeline.storage import db, migrate

JWT_KEY = "deletion-log-test-key-" + "k" * 48
TICKET = "SUP-4711"
#: the chat lines of u-3 live in every room (topic_support.events: user u-<n % 17>, room room-<n % 23>)
ERASED_USER = "u-3"
DELETED_ROOM = "room-5"


# --- helpers ---------------------------------------------------------------------------------------------
@pytest.fixture
async def deletion_settings(ingest_settings: Settings, topic_factory: Any) -> Settings:
    """`ingest_settings` with a deletions topic of this test's own (made as `ensure_topics` makes it), and
    the schema's owner trusting this test's staff tokens (`roomlogs api trust-key`)."""
    topic = await topic_factory(partitions=1, prefix="del-", config=DELETIONS_TOPIC_CONFIGS)
    settings = ingest_settings.replace(deletions_topic=topic)
    api = ApiSettings(jwt_key=Secret(JWT_KEY), jwt_algorithm="HS256", cursor_key=Secret("c" * 40))
    conn = await owner(settings)
    try:
        await install(conn, token_trust(api))
    finally:
        await conn.close()
    return settings


@pytest.fixture
async def as_worker(deletion_settings: Settings) -> Settings:
    """`deletion_settings` connecting as the worker's own role (`<schema>_worker`), as in production."""
    dsn = await login_as(deletion_settings.postgres_dsn.get(), f"{deletion_settings.postgres_schema}_worker")
    return deletion_settings.replace(postgres_dsn=Secret(dsn))


async def owner(settings: Settings) -> asyncpg.Connection:
    return await db.connect(settings.postgres_dsn.get(), settings.postgres_schema)


def staff_token() -> str:
    now = int(time.time())
    claims = {"sub": "s-staff", "iat": now, "exp": now + 300, "roles": ["support_staff"]}
    return jwt.encode(claims, JWT_KEY, algorithm="HS256")


async def delete_room(settings: Settings, room: str) -> uuid.UUID:
    """Staff delete a room's logs through the deletion function, with a real token (as the API does)."""
    request_id = uuid.uuid4()
    await sql(
        settings,
        "SELECT api_delete_room_logs($1, $2, 'bearer', $3, 'staff', $4)",
        request_id,
        room,
        staff_token(),
        TICKET,
    )
    return request_id


async def erase_user(settings: Settings, user: str) -> uuid.UUID:
    request_id = uuid.uuid4()
    await sql(
        settings,
        "SELECT api_erase_user_chat($1, $2, 'bearer', $3, $4)",
        request_id,
        user,
        staff_token(),
        TICKET,
    )
    return request_id


async def count(settings: Settings, where: str = "true", *args: Any) -> int:
    return int((await sql(settings, f"SELECT count(*) AS n FROM events WHERE {where}", *args))[0]["n"])


async def outbox_emptied(settings: Settings, within_seconds: float = 30.0) -> bool:
    deadline = time.monotonic() + within_seconds
    while time.monotonic() < deadline:
        if not await sql(settings, "SELECT 1 FROM deletion_outbox"):
            return True
        await asyncio.sleep(0.2)
    return False


def metric(w: Any, name: str, **labels: str) -> float:
    return w.metrics.registry.get_sample_value(name, labels) or 0.0


def dump_schema(settings: Settings, path: Path) -> None:
    subprocess.run(
        [str(postgres_bin_dir() / "pg_dump"), "--format=custom", f"--schema={settings.postgres_schema}",
         "--file", str(path), "--dbname", settings.postgres_dsn.get()],
        check=True,
    )  # fmt: skip


def restore_schema(settings: Settings, path: Path) -> None:
    bin_dir = postgres_bin_dir()
    dsn = settings.postgres_dsn.get()
    subprocess.run(
        [str(bin_dir / "psql"), "--quiet", "--dbname", dsn,
         "-c", f'DROP SCHEMA "{settings.postgres_schema}" CASCADE'],
        check=True,
    )  # fmt: skip
    subprocess.run([str(bin_dir / "pg_restore"), "--dbname", dsn, "--no-owner", str(path)], check=True)


def restore_schema_under_running_clients(settings: Settings, path: Path) -> None:
    """Restore the schema from `path` in one transaction (DROP SCHEMA, then the dump), as an operator
    restores under running clients: they wait on its locks, then find the restored schema."""
    bin_dir = postgres_bin_dir()
    script = subprocess.run(
        [str(bin_dir / "pg_restore"), "--no-owner", "--file", "-", str(path)], check=True, capture_output=True
    ).stdout
    drop = f'DROP SCHEMA "{settings.postgres_schema}" CASCADE;\n'.encode()
    subprocess.run(
        [str(bin_dir / "psql"), "--quiet", "--no-psqlrc", "-v", "ON_ERROR_STOP=1", "--single-transaction",
         "--dbname", settings.postgres_dsn.get(), "--file", "-"],
        input=drop + script, check=True, capture_output=True,
    )  # fmt: skip


async def send_records(
    settings: Settings, records: list[tuple[bytes, bytes, list[tuple[str, bytes]]]]
) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        for key, value, headers in records:
            await producer.send_and_wait(settings.deletions_topic, value, key=key, headers=headers)
    finally:
        await producer.stop()


# --- (a) relayed, sealed ---------------------------------------------------------------------------------
@pytest.mark.broker_semantics
async def test_a_deletion_reaches_the_deletions_topic_with_a_valid_seal(
    deletion_settings: Settings, ingest_worker: Any, consume: Any
) -> None:
    s = deletion_settings
    await publish(s.kafka_bootstrap, s.events_topic, events(120))
    async with ingest_worker(s) as w:
        assert await w.caught_up(60)
        request_id = await delete_room(s, DELETED_ROOM)
        erasure_id = await erase_user(s, ERASED_USER)
        records = await consume(s.deletions_topic, 2)
        assert await outbox_emptied(s)
        assert metric(w, "roomlogs_deletions_relayed_total") == 2
    assert [r.key for r in records] == [str(request_id).encode(), str(erasure_id).encode()]

    (key,) = await sql(s, "SELECT seal_key, key_id FROM deletion_seal_key")
    rows = {r["request_id"]: r for r in await sql(s, "SELECT * FROM deletion_requests")}
    for record in records:
        seal = dict(record.headers)[SEAL_HEADER].decode()
        # an HMAC-SHA256 of exactly the bytes on the topic, with the database's key, named by its key id
        expected = hmac.new(key["seal_key"], record.value, hashlib.sha256).hexdigest()
        assert seal == f"{key['key_id']}:{expected}"
        message = orjson.loads(record.value)
        row = rows[uuid.UUID(message["request_id"])]
        assert row["reapplied_at"] is None
        for name in (
            "kind",
            "room_id",
            "user_id",
            "requested_by",
            "identity_type",
            "basis",
            "reason",
            "rows_deleted",
        ):
            assert message[name] == row[name], name
        assert message["requested_at"] == row["requested_at"].strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    assert orjson.loads(records[0].value)["rows_deleted"] > 0
    assert orjson.loads(records[1].value)["held_rooms"] == []


# --- (b) a restore from a backup taken before the deletions -------------------------------------------
@pytest.mark.broker_semantics
async def test_deletions_made_after_a_backup_stay_deleted_when_it_is_restored_and_the_topic_replayed(
    deletion_settings: Settings, as_worker: Settings, ingest_worker: Any, tmp_path: Path, consume: Any
) -> None:
    """The backup is taken, more events arrive, a room is deleted and a user erased, then PostgreSQL is
    restored from the backup and the events topic read again from its beginning (a new consumer group): the
    deleted logs stay deleted, both those the backup held and those read again, and the requests are back."""
    s, admin = as_worker, deletion_settings
    before, after = events(460), events(230, start=5000)
    await publish(s.kafka_bootstrap, s.events_topic, before)
    dump = tmp_path / "before-deletions.dump"
    async with ingest_worker(s) as w:
        assert await w.caught_up(60)
        dump_schema(admin, dump)
        await publish(s.kafka_bootstrap, s.events_topic, after)
        assert await w.caught_up(60)
        originals = {await delete_room(admin, DELETED_ROOM), await erase_user(admin, ERASED_USER)}
        assert await outbox_emptied(admin)
    covered = f"room_id = '{DELETED_ROOM}' OR (actor_id = '{ERASED_USER}' AND event_type = 'chat.message')"
    assert await count(admin, covered) == 0
    kept = await count(admin)
    requested = {r["request_id"]: r for r in await sql(admin, "SELECT * FROM deletion_requests")}

    restore_schema(admin, dump)
    assert await count(admin, covered) > 0, "the backup holds the deleted logs"
    assert await sql(admin, "SELECT * FROM deletion_requests") == []

    replay = s.replace(consumer_group=s.consumer_group + "-replay")  # reads the events topic from its start
    async with ingest_worker(replay) as w:
        assert await w.caught_up(90)
        reapplied = metric(w, "roomlogs_deletions_reapplied_total")
        suppressed = w.service.totals["suppressed"]
    assert await count(admin, covered) == 0, "deleted logs came back"
    assert await count(admin) == kept
    assert reapplied == 2
    assert suppressed > 0, "the replay met the deleted events and skipped them"
    back = {r["request_id"]: r for r in await sql(admin, "SELECT * FROM deletion_requests")}
    assert set(back) == originals
    for request_id, row in back.items():
        assert row["reapplied_at"] is not None
        original = requested[request_id]
        for name in (
            "requested_at",
            "kind",
            "room_id",
            "user_id",
            "requested_by",
            "identity_type",
            "basis",
            "reason",
        ):
            assert row[name] == original[name], name
    # a re-applied request is not queued again: the topic still holds each request once
    assert await sql(admin, "SELECT * FROM deletion_outbox") == []
    assert len(await consume(s.deletions_topic, 3, timeout_seconds=5)) == 2

    async with ingest_worker(replay) as w:  # and the next start finds nothing to do
        assert metric(w, "roomlogs_deletions_reapplied_total") == 0
    assert len(await sql(admin, "SELECT * FROM deletion_requests")) == 2


@pytest.mark.broker_semantics
@pytest.mark.parametrize("case", ["offsets kept", "offsets moved back", "idle worker"])
async def test_a_database_restored_under_a_running_worker_gets_its_deletions_back_before_it_writes_on(
    deletion_settings: Settings, as_worker: Settings, ingest_worker: Any, tmp_path: Path, case: str
) -> None:
    """PostgreSQL is restored under a running worker from a backup taken before a room's logs were deleted
    (the backup's offsets of record are the database's own, or behind them when more was written after
    it). The room's events come back with the backup, and the room server goes on resending the room's
    older events. Before the worker writes on, it finds the request it had loaded gone, re-applies it from
    the deletions topic and skips the resent events: the deleted logs stay deleted, and the request is
    back. With nothing to ingest (idle worker) no batch comes to find it: its deletions relay does, at its
    next round (every 2 s), and the deleted logs are gone again within seconds. (Found from outside: only
    the next worker to start re-applied it.)"""
    s, admin = as_worker, deletion_settings
    await publish(s.kafka_bootstrap, s.events_topic, events(460))
    dump = tmp_path / "before-deletion.dump"
    async with ingest_worker(s) as w:
        assert await w.caught_up(60)
        dump_schema(admin, dump)
        if case == "offsets moved back":
            await publish(s.kafka_bootstrap, s.events_topic, events(230, start=5000))
            assert await w.caught_up(60)
        request_id = await delete_room(admin, DELETED_ROOM)
        assert await outbox_emptied(admin)
        covered = f"room_id = '{DELETED_ROOM}'"  # every event of topic_support happened before the request
        assert await count(admin, covered) == 0

        restore_schema_under_running_clients(admin, dump)
        assert await count(admin, covered) > 0, "the backup holds the deleted logs"
        if case == "idle worker":
            for _ in range(60):  # 30 s
                if not await count(admin, covered):
                    break
                await asyncio.sleep(0.5)
        else:
            await publish(s.kafka_bootstrap, s.events_topic, events(230, start=9000))  # room-5's among them
            assert await w.caught_up(90)
        left = await count(admin, covered)
        reapplied = metric(w, "roomlogs_deletions_reapplied_total")
    assert left == 0, "deleted logs back under a running worker"
    rows = await sql(admin, "SELECT request_id, reapplied_at FROM deletion_requests")
    assert [(r["request_id"], r["reapplied_at"] is not None) for r in rows] == [(request_id, True)]
    assert reapplied == 1


@pytest.mark.broker_semantics
async def test_a_deletions_topic_that_lost_its_records_gets_them_again_and_a_restore_still_reapplies_them(
    deletion_settings: Settings, as_worker: Settings, ingest_worker: Any, tmp_path: Path, consume: Any
) -> None:
    """The deletions topic is deleted and recreated empty (as a broker started empty under a kept database,
    `roomlogs demo` then `roomlogs up`): the next worker queues the database's requests again, sealed, and a
    database later restored from a backup taken before them still re-applies both (migration 0021)."""
    s, admin = as_worker, deletion_settings
    await publish(s.kafka_bootstrap, s.events_topic, events(300))
    dump = tmp_path / "before-deletions.dump"
    async with ingest_worker(s) as w:
        assert await w.caught_up(60)
        dump_schema(admin, dump)
        originals = {await delete_room(admin, DELETED_ROOM), await erase_user(admin, ERASED_USER)}
        assert await outbox_emptied(admin)
    await delete_topic(s.kafka_bootstrap, s.deletions_topic)
    await create_topic(s.kafka_bootstrap, s.deletions_topic, 1, s.kafka_replication_factor)
    async with ingest_worker(s) as w:
        assert await outbox_emptied(admin)
        assert metric(w, "roomlogs_deletions_relayed_total") == 2
    assert {uuid.UUID(r.key.decode()) for r in await consume(s.deletions_topic, 2)} == originals
    async with ingest_worker(s):  # the topic holds them: nothing queued again
        assert await sql(admin, "SELECT 1 FROM deletion_outbox") == []

    covered = f"room_id = '{DELETED_ROOM}' OR (actor_id = '{ERASED_USER}' AND event_type = 'chat.message')"
    restore_schema(admin, dump)
    assert await count(admin, covered) > 0, "the backup holds the deleted logs"
    async with ingest_worker(s) as w:
        assert metric(w, "roomlogs_deletions_reapplied_total") == 2
    assert await count(admin, covered) == 0, "deleted logs came back"
    back = await sql(admin, "SELECT request_id FROM deletion_requests")
    assert {r["request_id"] for r in back} == originals


# --- (c) forged records --------------------------------------------------------------------------------
@pytest.mark.broker_semantics
async def test_forged_records_on_the_deletions_topic_delete_nothing_and_are_counted(
    deletion_settings: Settings, ingest_worker: Any, consume: Any, caplog: pytest.LogCaptureFixture
) -> None:
    s = deletion_settings
    await publish(s.kafka_bootstrap, s.events_topic, events(230))
    async with ingest_worker(s) as w:
        assert await w.caught_up(60)
        genuine_id = await delete_room(s, "room-1")
        (genuine,) = await consume(s.deletions_topic, 1)
    rooms_before = await count(s)
    key_id, _, _ = dict(genuine.headers)[SEAL_HEADER].decode().partition(":")
    target = genuine.value.replace(b'"room-1"', f'"{DELETED_ROOM}"'.encode())
    forged = orjson.dumps({**orjson.loads(target), "request_id": str(uuid.uuid4())})
    guessed = hmac.new(b"a guessed key" * 3, forged, hashlib.sha256).hexdigest()
    await send_records(
        s,
        [
            # a genuine seal on an altered message
            (b"altered", target, [(SEAL_HEADER, dict(genuine.headers)[SEAL_HEADER])]),
            # the database's key id, a seal made with another key
            (b"guessed", forged, [(SEAL_HEADER, f"{key_id}:{guessed}".encode())]),
            # no seal at all, and bytes that are not even UTF-8
            (b"unsealed", forged, []),
            (b"garbage", b"\xff\xfe not json", [(SEAL_HEADER, b"x")]),
        ],
    )
    caplog.set_level(logging.WARNING, logger="roomlogs.ingest.deletions")
    async with ingest_worker(s) as w:
        assert await w.caught_up(60)
        bad = metric(w, "roomlogs_deletion_records_refused_total", reason="bad_seal")
        other = metric(w, "roomlogs_deletion_records_refused_total", reason="other_key")
        reapplied = metric(w, "roomlogs_deletions_reapplied_total")
    assert (bad, other, reapplied) == (3, 1, 0)
    assert await count(s, "room_id = $1", DELETED_ROOM) > 0
    assert await count(s) == rooms_before
    assert [r["request_id"] for r in await sql(s, "SELECT request_id FROM deletion_requests")] == [genuine_id]
    logged = [r.getMessage() for r in caplog.records if "not applied" in r.getMessage()]
    assert len(logged) == 2, logged
    assert any(": 3 record(s) not applied, their seal does not verify" in m for m in logged), logged
    assert any(": 1 record(s) not applied, sealed by another database's key" in m for m in logged), logged


@pytest.mark.broker_semantics
async def test_only_a_record_that_verifies_counts_as_its_request_on_the_topic(
    deletion_settings: Settings,
) -> None:
    """What the worker finds on the deletions topic decides what it queues again (a request the topic lacks
    is relayed anew, for a restore to re-apply). A record failing its seal, under a real request's id as
    key, hid that request's loss (an outside tester forged one, then had compaction remove the genuine
    record); so did a genuine record under another key. The id now comes from a message that verified."""
    s = deletion_settings
    await publish(s.kafka_bootstrap, s.events_topic, events(50))
    genuine_id = await delete_room(s, "room-1")
    (queued,) = await sql(s, "SELECT message, seal FROM deletion_outbox WHERE request_id = $1", genuine_id)
    key, value, seal = str(genuine_id).encode(), queued["message"].encode(), queued["seal"]
    forged_seal = f"{seal.partition(':')[0]}:{'0' * 64}".encode()
    pool = await db.create_pool(s.postgres_dsn.get(), s.postgres_schema, 1)
    try:
        for case, record, expected in (
            ("a seal that does not verify", (key, value, [(SEAL_HEADER, forged_seal)]), set()),
            ("no seal", (key, value, []), set()),
            ("the genuine record under another key", (b"not-its-id", value, [(SEAL_HEADER, seal.encode())]),
             {genuine_id}),
            ("the genuine record", (key, value, [(SEAL_HEADER, seal.encode())]), {genuine_id}),
        ):  # fmt: skip
            topic = s.replace(deletions_topic=f"{s.deletions_topic}-{uuid.uuid4().hex[:8]}")
            await create_topic(s.kafka_bootstrap, topic.deletions_topic, 1, s.kafka_replication_factor)
            await send_records(topic, [record])
            found = await reapply(topic, pool, IngestMetrics(CollectorRegistry()))
            assert found.read == 1, case
            assert found.on_topic == expected, case
    finally:
        await pool.close()


# --- (d) the worker's role ------------------------------------------------------------------------------
async def test_the_workers_role_re_applies_genuine_requests_only(
    deletion_settings: Settings, as_worker: Any, ingest_worker: Any
) -> None:
    """The worker's role may call reapply_deletion_request(): with a seal it cannot make, nothing happens;
    it cannot read the key, seal a message, queue one or record a request itself."""
    admin = deletion_settings
    await publish(admin.kafka_bootstrap, admin.events_topic, events(230))
    async with ingest_worker(as_worker) as w:
        assert await w.caught_up(60)
    in_room = await count(admin, "room_id = $1", DELETED_ROOM)
    assert in_room > 0
    now = time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime(time.time() + 60))
    message = orjson.dumps(
        {"v": 1, "request_id": str(uuid.uuid4()), "requested_at": now, "kind": "room_logs",
         "room_id": DELETED_ROOM, "user_id": None, "requested_by": "s-staff", "identity_type": "staff",
         "basis": "staff", "reason": TICKET, "rows_deleted": 0, "held_rooms": None}
    ).decode()  # fmt: skip
    (key_id,) = [r["key_id"] for r in await sql(admin, "SELECT key_id FROM deletion_seal_key")]
    guessed = f"{key_id}:{hmac.new(b'guess', message.encode(), hashlib.sha256).hexdigest()}"
    worker = await db.connect(as_worker.postgres_dsn.get(), as_worker.postgres_schema)
    try:
        reapply = "SELECT outcome FROM reapply_deletion_request($1, $2)"
        assert await worker.fetchval(reapply, message, guessed) == "bad_seal"
        assert await worker.fetchval(reapply, message, "") == "other_key"
        for forbidden in (
            "SELECT seal_key FROM deletion_seal_key",
            "SELECT deletion_seal('{}')",
            "INSERT INTO deletion_outbox (request_id, message, seal) VALUES (gen_random_uuid(), '{}', 'x')",
            "UPDATE deletion_outbox SET seal = 'x'",
            "INSERT INTO deletion_requests (request_id, kind, room_id, requested_by, identity_type, basis, "
            f"reason, rows_deleted) VALUES (gen_random_uuid(), 'room_logs', '{DELETED_ROOM}', 'x', 'staff', "
            "'staff', 'x', 0)",
            f"DELETE FROM events WHERE room_id = '{DELETED_ROOM}'",
        ):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await worker.execute(forbidden)
        assert await count(admin, "room_id = $1", DELETED_ROOM) == in_room
        assert await sql(admin, "SELECT * FROM deletion_requests") == []

        # the same message sealed by the database (as the trigger does) is re-applied, once
        (sealed,) = [r["seal"] for r in await sql(admin, "SELECT deletion_seal($1) AS seal", message)]
        assert await worker.fetchval(reapply, message, sealed) == "reapplied"
        assert await worker.fetchval(reapply, message, sealed) == "present"
    finally:
        await worker.close()
    assert await count(admin, "room_id = $1", DELETED_ROOM) == 0
    (row,) = await sql(admin, "SELECT * FROM deletion_requests")
    assert (row["room_id"], row["rows_deleted"], row["reapplied_at"] is not None) == (
        DELETED_ROOM,
        in_room,
        True,
    )
    assert await sql(admin, "SELECT * FROM deletion_outbox") == []


# --- the topic and the upgrade ------------------------------------------------------------------------------
@pytest.mark.broker_semantics
async def test_ensure_topics_makes_the_deletions_topic_kept_forever_and_compacted(
    ingest_settings: Settings,
) -> None:
    s = ingest_settings.replace(deletions_topic=f"del-{uuid.uuid4().hex[:12]}")
    admin = AIOKafkaAdminClient(bootstrap_servers=s.kafka_bootstrap)
    await admin.start()
    try:
        assert await ensure_topics(s) == [s.deletions_topic]
        (described,) = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, s.deletions_topic)]
        )
        configs = {c[0]: c[1] for resource in described.resources for c in resource[4]}
        assert (configs["retention.ms"], configs["cleanup.policy"]) == ("-1", "compact")
        (topic,) = await admin.describe_topics([s.deletions_topic])
        assert len(topic["partitions"]) == 1
    finally:
        await admin.delete_topics([s.deletions_topic])
        await admin.close()


async def test_requests_made_before_the_upgrade_are_queued_by_it(
    postgres_dsn: str, pg_schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    conn = await db.connect(postgres_dsn, pg_schema)
    try:
        everything = migrate.available()
        monkeypatch.setattr(migrate, "available", lambda: [m for m in everything if m.version < 13])
        await migrate.migrate(conn, pg_schema)
        earlier = [uuid.uuid4(), uuid.uuid4()]
        for n, request_id in enumerate(earlier):
            await conn.execute(
                "INSERT INTO deletion_requests (request_id, kind, room_id, requested_by, identity_type, "
                "basis, reason, rows_deleted) "
                "VALUES ($1, 'room_logs', $2, 'u-owner', 'user', 'owner', 'bye', 3)",
                request_id,
                f"room-{n}",
            )
        monkeypatch.setattr(migrate, "available", lambda: everything)
        assert 13 in [m.version for m in await migrate.migrate(conn, pg_schema)]
        queued = await conn.fetch("SELECT request_id, message FROM deletion_outbox ORDER BY outbox_id")
    finally:
        await conn.close()
    assert [r["request_id"] for r in queued] == earlier
    assert orjson.loads(queued[0]["message"])["room_id"] == "room-0"


def test_the_deletions_topic_is_a_topic_of_its_own() -> None:
    with pytest.raises(ConfigurationError, match="ROOMLOGS_DELETIONS_TOPIC"):
        dataclasses.replace(Settings(), deletions_topic=Settings().events_topic)
