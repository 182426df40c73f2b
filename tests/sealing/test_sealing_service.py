"""Sealing as it runs: ingest refusing a sealed day's new events, the retention service sealing and
publishing its daily heads to the witness topic, and a sealing run killed -9 half-way."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
from topic_support import publish, sql

from pipeline.evidence.keys import SealKey
from pipeline.publisher import events as ev
from pipeline.sealing.run import seal_closed_days
from pipeline.sealing.verify import verify_db
from pipeline.settings import Settings
from pipeline.storage import db, seals
from pipeline.storage.batch import EVENT_COLUMNS
from pipeline.storage.partitions import PartitionManager

NOW = datetime.now(UTC)
DAY = NOW.date() - timedelta(days=2)


def _event(room: str, at: datetime, text: str) -> dict[str, Any]:
    return {
        "event_id": str(uuid.uuid4()),
        "type": "chat.message",
        "schema_version": 1,
        "room_id": room,
        "occurred_at": at.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "actor": {"user_id": "u-1"},
        "data": {"text": text},
    }


def _env(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROOMLOGS_")}
    env.update(settings.to_env())
    return env


async def test_ingest_refuses_new_events_of_a_sealed_day_and_counts_copies_as_duplicates(
    ingest_settings: Settings, ingest_worker: Any, tmp_path: Path
) -> None:
    s = ingest_settings
    early = datetime.combine(DAY, datetime.min.time(), tzinfo=UTC) + timedelta(hours=3)
    stored = [_event("room-a", early + timedelta(minutes=i), f"line {i}") for i in range(20)]
    await publish(s.kafka_bootstrap, s.events_topic, stored)
    async with ingest_worker(s) as w:
        assert await w.caught_up(60)
        conn = await db.connect(s.postgres_dsn.get(), s.postgres_schema)
        try:
            report = await seal_closed_days(conn, s, SealKey.generate(tmp_path / "k.pem"), now=NOW)
        finally:
            await conn.close()
        assert DAY in report.days and report.events == 20
        late = _event("room-a", early + timedelta(hours=1), "too late")
        today = _event("room-a", NOW - timedelta(minutes=5), "today")
        await publish(s.kafka_bootstrap, s.events_topic, [late, stored[3], today])
        assert await w.caught_up(60)
        totals = dict(w.service.totals)
    letters = await sql(s, "SELECT reason, content FROM dead_letters")
    assert [r["reason"] for r in letters] == ["day_sealed"]
    assert letters[0]["content"]["event_id"] == late["event_id"]
    assert totals["duplicates"] == 1 and totals["stored"] == 21  # 20 before the seal, today's after
    ids = {str(r["event_id"]) for r in await sql(s, "SELECT event_id FROM events")}
    assert late["event_id"] not in ids and today["event_id"] in ids
    conn = await db.connect(s.postgres_dsn.get(), s.postgres_schema)
    try:
        result = await verify_db(conn, now=datetime.now(UTC), late_window_seconds=s.seal_late_window_seconds)
    finally:
        await conn.close()
    assert result.problems == []


async def test_a_closed_day_takes_late_events_until_sealed_and_a_sealed_days_room_change_still_applies(
    ingest_settings: Settings, ingest_worker: Any, tmp_path: Path
) -> None:
    """A day closed by the clock but not sealed yet took no more events: a database restored from a backup
    lost, for good, what it lacked of its closed days (read again, refused as `day_sealed`, then sealed
    partial), and a permission change among them never reached the room's state, so a removed moderator
    kept reading the room. Now a day refuses events once it is sealed, and its seal covers the late ones;
    a sealed day's room change is applied all the same (its event kept as a dead letter)."""
    s = ingest_settings
    key = SealKey.generate(tmp_path / "k.pem")
    conn = await db.connect(s.postgres_dsn.get(), s.postgres_schema)
    try:
        await seals.add_key(conn, key.key_id, key.public_raw)  # sealing on; DAY closed, not yet sealed
        early = datetime.combine(DAY, datetime.min.time(), tzinfo=UTC) + timedelta(hours=3)

        def at(minutes: int) -> str:
            return (early + timedelta(minutes=minutes)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")

        owner, mod = ev.user("owner-b"), ev.user("mod-b")
        late = [_event("room-b", early + timedelta(minutes=i), f"late {i}") for i in range(5)]
        added = ev.permissions_changed("room-b", owner, "moderator_added", mod, event_id=str(uuid.uuid4()),
                                       occurred_at=at(10))  # fmt: skip
        await publish(s.kafka_bootstrap, s.events_topic, [*late, added])
        async with ingest_worker(s) as w:
            assert await w.caught_up(60)
            assert await sql(s, "SELECT reason FROM dead_letters") == []
            moderators = await sql(s, "SELECT user_id FROM room_moderators WHERE room_id = 'room-b'")
            assert [r["user_id"] for r in moderators] == ["mod-b"]
            report = await seal_closed_days(conn, s, key, now=NOW)
            assert DAY in report.days and report.events == 6  # the late events are sealed with their day
            removed = ev.permissions_changed(
                "room-b", owner, "moderator_removed", mod, event_id=str(uuid.uuid4()), occurred_at=at(20)
            )
            too_late = _event("room-b", early + timedelta(minutes=30), "after the seal")
            await publish(s.kafka_bootstrap, s.events_topic, [removed, too_late])
            assert await w.caught_up(60)
        letters = await sql(s, "SELECT reason, content FROM dead_letters")
        assert sorted(r["content"]["event_id"] for r in letters) == sorted(
            [removed["event_id"], too_late["event_id"]]
        )
        assert {r["reason"] for r in letters} == {"day_sealed"}
        assert await sql(s, "SELECT user_id FROM room_moderators WHERE room_id = 'room-b'") == []
        result = await verify_db(conn, now=datetime.now(UTC), late_window_seconds=s.seal_late_window_seconds)
        assert result.problems == []
    finally:
        await conn.close()


async def test_sealing_a_closed_day_while_its_late_events_stream_in_covers_or_refuses_each_one(
    ingest_settings: Settings, ingest_worker: Any, tmp_path: Path
) -> None:
    """The lock that makes a seal exact, under load: a closed, unsealed day's events stream in while the run
    seals it. Each event ends either stored and covered by the day's seal, or refused as `day_sealed`;
    none is stored outside the seal (verify --db would call that tampering) and none is lost."""
    s = ingest_settings
    key = SealKey.generate(tmp_path / "k.pem")
    early = datetime.combine(DAY, datetime.min.time(), tzinfo=UTC) + timedelta(hours=5)
    sent = [_event("room-c", early + timedelta(seconds=i), f"stream {i}") for i in range(600)]
    conn = await db.connect(s.postgres_dsn.get(), s.postgres_schema)
    try:
        await seals.add_key(conn, key.key_id, key.public_raw)
        async with ingest_worker(s) as w:

            async def stream() -> None:
                for start in range(0, len(sent), 10):
                    await publish(s.kafka_bootstrap, s.events_topic, sent[start : start + 10])
                    await asyncio.sleep(0.1)

            streaming = asyncio.ensure_future(stream())
            stored_some = "SELECT count(*) >= 100 AS n FROM events WHERE room_id = 'room-c'"
            deadline = asyncio.get_running_loop().time() + 60
            while not (await sql(s, stored_some))[0]["n"]:
                assert asyncio.get_running_loop().time() < deadline, "a closed, unsealed day took no events"
                await asyncio.sleep(0.05)
            report = await seal_closed_days(conn, s, key, now=NOW)  # mid-stream
            await streaming
            assert await w.caught_up(60)
        assert DAY in report.days
        stored = {
            str(r["event_id"]) for r in await sql(s, "SELECT event_id FROM events WHERE room_id = 'room-c'")
        }
        refused = [r["content"]["event_id"] for r in await sql(s, "SELECT content FROM dead_letters")]
        assert stored.isdisjoint(refused) and stored | set(refused) == {e["event_id"] for e in sent}
        assert len(stored) >= 100 and refused, (len(stored), len(refused))  # the seal fell mid-stream
        result = await verify_db(conn, now=datetime.now(UTC), late_window_seconds=s.seal_late_window_seconds)
        assert result.problems == []  # every stored row of the day is the seal's
    finally:
        await conn.close()


async def test_the_retention_service_seals_closed_days_and_the_witness_holds_the_heads(
    ingest_settings: Settings, tmp_path: Path, topic_factory: Any
) -> None:
    s = ingest_settings.replace(
        seal_key_file=str(tmp_path / "seal.pem"),
        seal_heads_topic=await topic_factory(partitions=1, prefix="heads-"),
        maintenance_interval_seconds=1.0,
    )
    SealKey.generate(s.seal_key_file)
    conn = await db.connect(s.postgres_dsn.get(), s.postgres_schema)
    try:
        records = [
            (uuid.uuid4(), datetime.combine(day, datetime.min.time(), tzinfo=UTC) + timedelta(seconds=i + 1),
             "public", f"room-{i % 3}", "chat.message", 1, "u-1", None, f"t{i}", {"text": f"t{i}"}, 0, i)
            for day in (DAY - timedelta(days=1), DAY)
            for i in range(30)
        ]  # fmt: skip
        manager = PartitionManager()
        await manager.load(conn)
        await manager.ensure(conn, {(r[2], r[1].date()) for r in records})
        await conn.copy_records_to_table("events", records=records, columns=EVENT_COLUMNS)
        child = await asyncio.to_thread(
            subprocess.Popen,
            [sys.executable, "-m", "pipeline.cli", "retention", "enforce", "--apply", "--loop"],
            env=_env(s),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = asyncio.get_running_loop().time() + 90
            while await conn.fetchval("SELECT count(*) FROM seal_head_publications") < 2:
                assert child.poll() is None, child.stdout.read().decode() if child.stdout else ""
                assert asyncio.get_running_loop().time() < deadline, "no heads published"
                await asyncio.sleep(0.3)
        finally:
            child.send_signal(signal.SIGTERM)
            out = (await asyncio.to_thread(child.communicate, timeout=60))[0].decode()
        assert child.returncode == 0, out
        heads = {h.day: h.statement_hash.hex() for h in await seals.heads(conn)}
    finally:
        await conn.close()
    assert set(heads) == {DAY - timedelta(days=1), DAY}
    listed = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "pipeline.cli", "seals", "heads", "--from-kafka"],
        env=_env(s), capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    assert {(line.split()[0], line.split()[1]) for line in listed.stdout.splitlines()} == {
        (str(d), h) for d, h in heads.items()
    }
    verified = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "pipeline.cli", "verify", "--db", "--witness"],
        env=_env(s), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "everything holds (witness: 2 heads)" in verified.stdout


async def test_a_sealing_run_killed_half_way_leaves_nothing_half_sealed(
    ingest_settings: Settings, postgres_dsn: str, tmp_path: Path
) -> None:
    s = ingest_settings.replace(seal_key_file=str(tmp_path / "seal.pem"))
    SealKey.generate(s.seal_key_file)
    conn = await db.connect(s.postgres_dsn.get(), s.postgres_schema)
    watcher = await asyncpg.connect(postgres_dsn)
    try:
        start = datetime.combine(DAY, datetime.min.time(), tzinfo=UTC)
        records = [
            (uuid.uuid4(), start + timedelta(microseconds=i * 400_000), "public", f"room-{i % 200}",
             "chat.message", 1, f"u-{i % 50}", None, f"line {i}", {"text": f"line {i}"}, 0, i)
            for i in range(120_000)
        ]  # fmt: skip
        manager = PartitionManager()
        await manager.load(conn)
        await manager.ensure(conn, {(r[2], r[1].date()) for r in records})
        await conn.copy_records_to_table("events", records=records, columns=EVENT_COLUMNS)
        env = _env(s)
        env["ROOMLOGS_KAFKA_BOOTSTRAP"] = "127.0.0.1:1"  # the heads are published after the day commits
        log_path = tmp_path / "seals-run.log"
        with log_path.open("wb") as log:  # the child keeps its own descriptor
            child = await asyncio.to_thread(
                subprocess.Popen, [sys.executable, "-m", "pipeline.cli", "seals", "run"], env=env,
                stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        try:
            # kill -9 once the run has sealed some rooms of the day inside its transaction
            deadline = asyncio.get_running_loop().time() + 120
            while True:
                # a transaction id is assigned at its first write: the day's transaction has sealed a room
                writing = await watcher.fetchval(
                    """SELECT count(*) FROM pg_stat_activity
                        WHERE pid <> pg_backend_pid() AND backend_xid IS NOT NULL
                          AND query NOT LIKE '%seal_keys%'"""
                )
                if writing:
                    break
                assert child.poll() is None, log_path.read_text()
                assert asyncio.get_running_loop().time() < deadline, "the run never began sealing"
                await asyncio.sleep(0.01)
            child.kill()
            await asyncio.to_thread(child.wait, 30)
        finally:
            if child.poll() is None:
                child.kill()
        assert await conn.fetchval("SELECT count(*) FROM seals") == 0
        assert await conn.fetchval("SELECT count(*) FROM seal_heads") == 0
        report = await seal_closed_days(conn, s, SealKey.load(s.seal_key_file), now=NOW)
        assert report.days == [DAY] and report.rooms == 200 and report.events == 120_000
        result = await verify_db(conn, now=NOW, late_window_seconds=s.seal_late_window_seconds)
        assert result.problems == [] and result.rows == 120_000
    finally:
        await watcher.close()
        await conn.close()
