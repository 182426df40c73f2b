"""`roomlogs dead-letters list|show|replay` against the real broker and PostgreSQL: dead letters made by the
real ingest loop (on the worker's own role), replayed once the contract's limit is fixed, exactly once."""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from pipeline.cli.dead_letters import COMMANDS, add_commands
from pipeline.errors import RoomlogsError
from pipeline.ingest.replay import replay
from pipeline.publisher import events as ev
from pipeline.settings import Settings
from pipeline.storage import db
from pipeline.storage.dead_letters import find
from pipeline.storage.replays import Outcome

#: what the worker in these tests accepts; the "fixed" contract is the default (64 KiB)
TIGHT_LIMIT_BYTES = 700


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="roomlogs")
    add_commands(parser.add_subparsers(dest="command"))
    return parser.parse_args(argv)


async def roomlogs(settings: Settings, capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    args = _parse(["dead-letters", *argv])
    code = await asyncio.to_thread(COMMANDS["dead-letters"], settings, args)
    return code, capsys.readouterr().out


def stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def scripted() -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Events of one room; two are larger than TIGHT_LIMIT_BYTES (an owner with a long avatar URL, a long
    chat line) and are dead-lettered `oversize` by the tight worker."""
    start = datetime.now(UTC) - timedelta(minutes=10)
    owner = ev.user("u-owner", "Olga", avatar_id="av-1", avatar_url="https://cdn.example/" + "a" * 480)
    guest = ev.user("u-guest", "Gus")
    events = [
        ev.settings_changed("room-1", guest, {"privacy": (None, "private"), "max_occupancy": (None, 10)}),
        ev.permissions_changed("room-1", None, "owner_transferred", owner),
        ev.user_entered("room-1", guest),
        ev.chat_message("room-1", guest, "a long line " * 60),
    ]
    for i, e in enumerate(events):
        e["event_id"], e["occurred_at"] = str(uuid.uuid4()), stamp(start + timedelta(seconds=i))
    names = {"owner": events[1]["event_id"], "chat": events[3]["event_id"]}
    return events, names


async def produce(settings: Settings, values: list[bytes]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        for value in values:
            await producer.send_and_wait(settings.events_topic, value, key=b"room-1", partition=0)
    finally:
        await producer.stop()


async def fetch(settings: Settings, sql: str, *args: Any) -> list[Any]:
    conn = await db.connect(settings.postgres_dsn.get(), settings.postgres_schema)
    try:
        return list(await conn.fetch(sql, *args))
    finally:
        await conn.close()


async def test_list_show_and_replay_exactly_once_once_the_contract_is_fixed(
    ingest_settings: Settings,
    worker_settings: Settings,
    ingest_worker: Any,
    capsys: pytest.CaptureFixture[str],
) -> None:
    admin, s = ingest_settings, worker_settings
    events, names = scripted()
    assert all(len(orjson.dumps(e)) < TIGHT_LIMIT_BYTES for e in (events[0], events[2]))
    assert all(len(orjson.dumps(e)) > TIGHT_LIMIT_BYTES for e in (events[1], events[3]))
    await produce(s, [orjson.dumps(e) for e in events] + [b'{"type": "chat.message", broken'])
    async with ingest_worker(s.replace(max_event_bytes=TIGHT_LIMIT_BYTES)) as w:
        assert await w.caught_up(60)
        assert (w.service.totals["stored"], w.service.totals["dead_lettered"]) == (2, 3)
    assert [r["owner_id"] for r in await fetch(admin, "SELECT owner_id FROM rooms")] == [None]

    # list, filtered by reason and time (the CLI runs on the worker's role here, as an operator may)
    code, out = await roomlogs(s, capsys, "list")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["id", "received", "(UTC)", "reason", "source", "replayed", "detail"]
    assert sorted(line.split()[3] for line in lines[1:]) == ["invalid_json", "oversize", "oversize"]
    code, out = await roomlogs(s, capsys, "list", "--reason", "oversize", "--json")
    oversize = [orjson.loads(line) for line in out.splitlines()]
    assert [d["source"] for d in oversize] == [f"{s.events_topic}/0/3", f"{s.events_topic}/0/1"]
    assert all(d["replayed"] is None and d["raw_bytes"] > TIGHT_LIMIT_BYTES for d in oversize)
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    assert (await roomlogs(s, capsys, "list", "--since", later))[1] == "no dead letters match\n"

    # show, by id and by source
    owner_letter = oversize[1]
    code, out = await roomlogs(s, capsys, "show", str(owner_letter["dead_letter_id"]))
    assert code == 0 and f"source      {s.events_topic}/0/1" in out and "replayed    never" in out
    assert '"type": "room.permissions_changed"' in out
    code, out = await roomlogs(s, capsys, "show", f"{s.events_topic}/0/1", "--json")
    assert orjson.loads(out)["dead_letter_id"] == owner_letter["dead_letter_id"]
    with pytest.raises(RoomlogsError, match="no dead letter 999999"):
        await roomlogs(s, capsys, "show", "999999")

    # the limit is raised (s has the default): replay the oversize ones through the real writer
    code, out = await roomlogs(s, capsys, "replay", "--reason", "oversize", "--by", "alice")
    assert code == 0, out
    assert out.splitlines()[-1] == "2 of 2 in the logs; recorded as replayed by alice"
    stored = await fetch(
        admin, "SELECT event_id::text AS id, retention_class FROM events ORDER BY occurred_at"
    )
    assert [r["id"] for r in stored] == [e["event_id"] for e in events]
    assert {r["retention_class"] for r in stored} == {"private"}
    # the replayed permissions event moved room state, by its event version
    assert [r["owner_id"] for r in await fetch(admin, "SELECT owner_id FROM rooms")] == ["u-owner"]

    # again, by id and by source: nothing more is written, and the attempt is recorded
    code, out = await roomlogs(
        s, capsys, "replay", str(owner_letter["dead_letter_id"]), f"{s.events_topic}/0/3", "--by", "bob"
    )
    assert code == 0 and out.count(": already_replayed") == 2 and "by alice" in out
    assert len(await fetch(admin, "SELECT 1 FROM events")) == 4

    # a worker of another group re-consumes the whole topic: the replayed events are not stored twice
    async with ingest_worker(s.replace(consumer_group=f"{s.consumer_group}-again")) as again:
        assert await again.caught_up(60)
        assert again.service.totals["duplicates"] == 4
    assert len(await fetch(admin, "SELECT 1 FROM events")) == 4

    # what the contract still refuses stays a dead letter; the outcome says why. Both workers refused that
    # record, so two dead letters name it: replaying the record replays both
    code, out = await roomlogs(s, capsys, "replay", f"{s.events_topic}/0/4", "--by", "alice")
    assert code == 1 and out.count(": still_invalid: invalid_json: ") == 2

    audit = await fetch(
        admin,
        "SELECT replayed_by, src_offset, outcome, event_id::text AS event_id FROM dead_letter_replays"
        " ORDER BY replay_id",
    )
    assert [(a["replayed_by"], a["src_offset"], a["outcome"]) for a in audit] == [
        ("alice", 1, "stored"),
        ("alice", 3, "stored"),
        ("bob", 1, "already_replayed"),
        ("bob", 3, "already_replayed"),
        ("alice", 4, "still_invalid"),
        ("alice", 4, "still_invalid"),
    ]
    assert [a["event_id"] for a in audit[:2]] == [names["owner"], names["chat"]]
    code, out = await roomlogs(s, capsys, "list", "--reason", "oversize")
    assert out.count(" stored ") == 2
    code, out = await roomlogs(s, capsys, "show", str(owner_letter["dead_letter_id"]))
    assert "by alice: stored" in out and "by bob: already_replayed" in out
    # the record of replays is append-only
    conn = await db.connect(admin.postgres_dsn.get(), admin.postgres_schema)
    try:
        for sql in ("UPDATE dead_letter_replays SET outcome = 'stored'", "DELETE FROM dead_letter_replays"):
            with pytest.raises(Exception, match=r"permanent record|cannot be edited"):
                await conn.execute(sql)
    finally:
        await conn.close()


async def test_two_replays_at_once_store_the_event_once(
    worker_settings: Settings, ingest_worker: Any
) -> None:
    s = worker_settings
    events, _ = scripted()
    await produce(s, [orjson.dumps(events[3])])
    async with ingest_worker(s.replace(max_event_bytes=TIGHT_LIMIT_BYTES)) as w:
        assert await w.caught_up(60)
    conns = [await db.connect(s.postgres_dsn.get(), s.postgres_schema) for _ in range(2)]
    try:
        (letter,) = await find(conns[0])
        now = datetime.now(UTC)
        results = await asyncio.gather(
            *(replay(s, c, [letter], replayed_by=f"op-{i}", now=now) for i, c in enumerate(conns))
        )
        outcomes = sorted(r[0].outcome for r in results)
        assert outcomes == [Outcome.ALREADY_REPLAYED, Outcome.STORED]
        assert await conns[0].fetchval("SELECT count(*) FROM events") == 1
    finally:
        for c in conns:
            await c.close()


async def test_a_record_kafka_no_longer_holds_is_not_replayed(
    ingest_settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    s = ingest_settings
    conn = await db.connect(s.postgres_dsn.get(), s.postgres_schema)
    try:
        await conn.execute("SELECT create_log_partition('dead_letters', NULL, current_date)")
        await conn.execute(
            """INSERT INTO dead_letters (received_at, reason, detail, src_topic, src_partition, src_offset,
                                         raw_sha256, raw_bytes)
               VALUES (now(), 'oversize', 'too large', $1, 0, 1000000, $2, 70000),
                      (now(), 'oversize', 'too large', $1, 7, 0, $2, 70000),
                      (now(), 'oversize', 'too large', 'roomlogs-no-such-topic', 0, 0, $2, 70000),
                      (now(), 'private_message', 'a whisper', $1, 0, 0, NULL, 120)""",
            s.events_topic,
            hashlib.sha256(b"x" * 70000).digest(),
        )
    finally:
        await conn.close()
    code, out = await roomlogs(s, capsys, "replay", "--since", "2000-01-01", "--by", "alice")
    assert code == 1
    assert f"{s.events_topic}/0/1000000: not_in_kafka: Kafka does not hold offset 1000000" in out
    assert f"{s.events_topic}/7/0: not_in_kafka: Kafka has no partition 7 of topic {s.events_topic}" in out
    assert "roomlogs-no-such-topic/0/0: not_in_kafka: Kafka has no topic roomlogs-no-such-topic" in out
    # a letter that kept no SHA-256 cannot be matched to the record at its coordinates: not replayed
    assert (
        f"{s.events_topic}/0/0: no_fingerprint: not replayed: this dead letter kept only its size (120 bytes)"
        in out
    )


@pytest.mark.broker_semantics
async def test_replay_reads_the_record_back_and_stores_it_once_on_either_broker(
    ingest_settings: Settings,
    worker_settings: Settings,
    ingest_worker: Any,
    capsys: pytest.CaptureFixture[str],
) -> None:
    admin, s = ingest_settings, worker_settings
    events, names = scripted()
    await produce(s, [orjson.dumps(events[2]), orjson.dumps(events[3])])
    async with ingest_worker(s.replace(max_event_bytes=TIGHT_LIMIT_BYTES)) as w:
        assert await w.caught_up(60)
        assert (w.service.totals["stored"], w.service.totals["dead_lettered"]) == (1, 1)

    # the limit is raised (s has the default): the record is read back from the broker and stored
    code, out = await roomlogs(s, capsys, "replay", f"{s.events_topic}/0/1", "--by", "alice")
    assert code == 0, out
    assert f"{s.events_topic}/0/1: stored (event {names['chat']})" in out
    code, out = await roomlogs(s, capsys, "replay", f"{s.events_topic}/0/1", "--by", "bob")
    assert code == 0 and ": already_replayed" in out, out
    stored = await fetch(admin, "SELECT event_id::text AS id FROM events")
    assert sorted(r["id"] for r in stored) == sorted([events[2]["event_id"], names["chat"]])


async def recreate_topic(settings: Settings) -> None:
    """Delete the events topic and create it again, empty, under the same name (as an operator might)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        await admin.delete_topics([settings.events_topic])
        topic = NewTopic(
            settings.events_topic,
            num_partitions=settings.events_topic_partitions,
            replication_factor=settings.kafka_replication_factor,
        )
        deadline = time.monotonic() + 60
        while True:  # a deletion completes in the background: "already exists" until it has
            response = await admin.create_topics([topic])
            if not any(code for _, code, *_ in response.topic_errors):
                return
            assert time.monotonic() < deadline, f"could not recreate {settings.events_topic}: {response}"
            await asyncio.sleep(0.5)
    finally:
        await admin.close()


@pytest.mark.broker_semantics
async def test_replay_after_the_topic_was_recreated_stores_nothing_and_says_why(
    ingest_settings: Settings,
    worker_settings: Settings,
    ingest_worker: Any,
    capsys: pytest.CaptureFixture[str],
) -> None:
    admin, s = ingest_settings, worker_settings
    events, _ = scripted()
    await produce(s, [orjson.dumps(e) for e in events])  # the oversize ones are at 0/1 and 0/3
    async with ingest_worker(s.replace(max_event_bytes=TIGHT_LIMIT_BYTES)) as w:
        assert await w.caught_up(60)
        assert (w.service.totals["stored"], w.service.totals["dead_lettered"]) == (2, 2)

    # the topic is recreated and fills again: the dead letters' coordinates now hold another room's events,
    # each valid under the current contract (replayed as it was, the first would be stored in their place)
    await recreate_topic(s)
    others = [ev.user_entered("room-2", ev.user(f"u-{i}", f"User {i}")) for i in range(4)]
    for e in others:
        e["event_id"], e["occurred_at"] = str(uuid.uuid4()), stamp(datetime.now(UTC))
    await produce(s, [orjson.dumps(e) for e in others])

    code, out = await roomlogs(s, capsys, "replay", "--reason", "oversize", "--by", "alice")
    assert code == 1, out
    for offset in (1, 3):
        assert (
            f"{s.events_topic}/0/{offset}: source_changed: the record now at {s.events_topic}/0/{offset} "
            "is not the one set aside (SHA-256 and size differ"
        ) in out
        assert "the topic was recreated or moved; nothing stored" in out
    stored = await fetch(admin, "SELECT room_id FROM events")
    assert [r["room_id"] for r in stored] == ["room-1", "room-1"]
    audit = await fetch(admin, "SELECT src_offset, outcome FROM dead_letter_replays ORDER BY src_offset")
    assert [(a["src_offset"], a["outcome"]) for a in audit] == [(1, "source_changed"), (3, "source_changed")]


#: A pipeline bug, staged: PostgreSQL refuses a row the worker accepts (a data exception, as from a bad value)
REFUSE_ROW = """
CREATE FUNCTION refuse_row() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.body = 'refuse me' THEN
        RAISE EXCEPTION 'refused by the test' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER refuse_row BEFORE INSERT ON events FOR EACH ROW EXECUTE FUNCTION refuse_row();
"""


async def test_dead_letters_the_writer_makes_keep_the_fingerprint_of_what_was_received(
    ingest_settings: Settings,
    worker_settings: Settings,
    ingest_worker: Any,
    capsys: pytest.CaptureFixture[str],
) -> None:
    admin, s = ingest_settings, worker_settings
    guest = ev.user("u-guest", "Gus")
    moment = stamp(datetime.now(UTC) - timedelta(minutes=1))
    first = ev.chat_message("room-1", guest, "hello", event_id=str(uuid.uuid4()), occurred_at=moment)
    edited = {**first, "data": {"text": "hello, edited"}}  # the same event id with other content
    refused = ev.chat_message("room-1", guest, "refuse me", event_id=str(uuid.uuid4()), occurred_at=moment)
    values = [orjson.dumps(first), orjson.dumps(edited), orjson.dumps(refused)]
    conn = await db.connect(admin.postgres_dsn.get(), admin.postgres_schema)
    try:
        await conn.execute(REFUSE_ROW)
    finally:
        await conn.close()
    async with ingest_worker(s) as w:
        await produce(s, values[:1])
        assert await w.caught_up(60)
        await produce(s, values[1:])  # the conflicting copy comes after the first is stored
        assert await w.caught_up(60)
        assert (w.service.totals["stored"], w.service.totals["dead_lettered"]) == (1, 2)

    code, out = await roomlogs(s, capsys, "list", "--json")
    letters = {d["reason"]: d for d in map(orjson.loads, out.splitlines())}
    assert sorted(letters) == ["conflicting_duplicate", "storage_rejected"]
    for reason, offset in (("conflicting_duplicate", 1), ("storage_rejected", 2)):
        letter, value = letters[reason], values[offset]
        assert letter["source"] == f"{s.events_topic}/0/{offset}"
        assert (letter["raw_sha256"], letter["raw_bytes"]) == (hashlib.sha256(value).hexdigest(), len(value))

    # so a replay can check the record it reads back is theirs, and go on: the bug is fixed (the trigger
    # dropped), the refused event is stored; the conflicting copy still conflicts, and stores nothing
    conn = await db.connect(admin.postgres_dsn.get(), admin.postgres_schema)
    try:
        await conn.execute("DROP TRIGGER refuse_row ON events")
    finally:
        await conn.close()
    code, out = await roomlogs(s, capsys, "replay", "--since", "2000-01-01", "--by", "alice")
    assert code == 1, out
    assert f"{s.events_topic}/0/2: stored (event {refused['event_id']})" in out
    assert f"{s.events_topic}/0/1: conflicting_duplicate (event {first['event_id']}): " in out
    stored = await fetch(admin, "SELECT body FROM events ORDER BY body")
    assert [r["body"] for r in stored] == ["hello", "refuse me"]
