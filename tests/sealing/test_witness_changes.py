"""The witness topic when the world under it changed: Tansu restarted empty under a kept database (`roomlogs
demo` then `roomlogs up`), the topic deleted and recreated under a running publisher, publications recorded
before topic ids were (migration 0020). Each time the new witness is named as such by `verify --witness` and
`roomlogs status` (not "history rewritten", not silently fine), and the next sealing run republishes the
signed heads to it, recorded per incarnation (pipeline/sealing/witness.py)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from test_seals import DAY, NOW, OTHER_DAY, store, superuser, world
from topic_support import create_topic, delete_topic

from pipeline.cli.status import collect
from pipeline.evidence.keys import SealKey
from pipeline.sealing import witness
from pipeline.sealing.run import seal_closed_days, seal_in_maintenance
from pipeline.sealing.state import sealing_state
from pipeline.sealing.verify import verify_db
from pipeline.settings import Secret, Settings
from pipeline.stack import EmbeddedKafka, free_port
from pipeline.storage import db, seals
from pipeline.storage.migrate import migrate


@pytest.fixture
async def own_tansu(tmp_path: Path) -> AsyncIterator[EmbeddedKafka]:
    """A Tansu broker of this test's own (it is restarted empty, which the session's must not be)."""
    kafka = EmbeddedKafka(tmp_path / "own-kafka")
    kafka.start()
    try:
        yield kafka
    finally:
        kafka.stop()


@pytest.fixture
async def conn(postgres_dsn: str, pg_schema: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await db.connect(postgres_dsn, pg_schema)
    await migrate(connection, pg_schema)
    try:
        yield connection
    finally:
        await connection.close()


def _settings(postgres_dsn: str, pg_schema: str, bootstrap: str, tmp_path: Path) -> Settings:
    key = tmp_path / "seal.pem"
    SealKey.generate(key)
    return Settings(
        postgres_dsn=Secret(postgres_dsn),
        postgres_schema=pg_schema,
        kafka_bootstrap=bootstrap,
        seal_heads_topic=f"heads-{uuid.uuid4().hex[:12]}",
        seal_key_file=str(key),
    )


async def _seal(conn: asyncpg.Connection, s: Settings, publish: witness.Publisher) -> int:
    assert s.seal_key_file
    report = await seal_closed_days(conn, s, SealKey.load(s.seal_key_file), now=NOW, publish=publish)
    return report.published


async def _verify(conn: asyncpg.Connection, s: Settings) -> dict[str, str]:
    seen = await witness.read_heads(s)
    result = await verify_db(
        conn,
        now=NOW,
        late_window_seconds=3600,
        witness=[(w.day, w.statement_hash) for w in seen.heads],
        witness_log=seen.log,
    )
    return {f.kind: f.detail for f in result.findings or []}


def _cli(s: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROOMLOGS_")}
    env.update(s.to_env())
    return subprocess.run(
        [sys.executable, "-m", "pipeline.cli", *args], env=env, capture_output=True, text=True, timeout=120
    )


async def test_a_witness_started_empty_under_a_kept_database_is_named_and_gets_the_heads_again(
    conn: asyncpg.Connection, postgres_dsn: str, pg_schema: str, own_tansu: EmbeddedKafka, tmp_path: Path
) -> None:
    """`roomlogs demo` then `roomlogs up`: Tansu keeps nothing, PostgreSQL says every head was published."""
    s = _settings(postgres_dsn, pg_schema, own_tansu.bootstrap, tmp_path)
    await world(conn)
    async with witness.publisher(s) as publish:
        assert await _seal(conn, s, publish) == 2
    assert set(await _verify(conn, s)) == set()

    own_tansu.stop()
    own_tansu.start()  # same address, nothing kept

    found = await _verify(conn, s)
    assert set(found) == {"witness_new"}, found  # not witness_mismatch, not fine
    assert (
        "does not exist" in found["witness_new"]
        and "republishes the 2 signed daily heads" in found["witness_new"]
    )
    verified = await asyncio.to_thread(_cli, s, "verify", "--db", "--witness")
    assert verified.returncode == 1 and "PROBLEM  witness_new" in verified.stdout, verified.stdout
    status = await collect(s, [], now=datetime.now(UTC))
    assert status.sealing is not None and "ERROR the witness topic" in status.sealing.say()
    # the database alone cannot tell until a sealing run has looked at the broker
    state = await sealing_state(conn, now=NOW, late_window_seconds=3600, heads_topic=s.seal_heads_topic)
    assert state.unpublished_heads == 0

    async with witness.publisher(s) as publish:  # the next maintenance run
        assert await _seal(conn, s, publish) == 2
        assert await _seal(conn, s, publish) == 0  # once
    found = await _verify(conn, s)
    assert set(found) == {"witness_republished"}, found
    assert "2 daily head(s)" in found["witness_republished"]
    listed = await asyncio.to_thread(_cli, s, "seals", "heads", "--from-kafka")
    assert {line.split()[0] for line in listed.stdout.splitlines()} == {str(OTHER_DAY), str(DAY)}
    status = await collect(s, [], now=datetime.now(UTC))
    assert status.sealing is not None and "ERROR" not in status.sealing.say()
    incarnations = await seals.incarnations(conn, s.seal_heads_topic)
    assert len(incarnations) == 2 and [i.heads for i in incarnations] == [2, 2]
    assert incarnations[0].topic_id != incarnations[1].topic_id


@pytest.mark.broker_semantics
async def test_a_witness_topic_recreated_under_a_running_publisher_gets_the_heads_again(
    conn: asyncpg.Connection, postgres_dsn: str, pg_schema: str, kafka_bootstrap: str, tmp_path: Path
) -> None:
    """The worker keeps its publisher open between maintenance runs; the topic is deleted and recreated."""
    s = _settings(postgres_dsn, pg_schema, kafka_bootstrap, tmp_path)
    await world(conn)
    async with witness.publisher(s) as publish:
        assert await _seal(conn, s, publish) == 2
        await delete_topic(s.kafka_bootstrap, s.seal_heads_topic)
        found = await _verify(conn, s)
        assert set(found) == {"witness_new"}, found
        await create_topic(s.kafka_bootstrap, s.seal_heads_topic, 1)  # empty, another topic id
        found = await _verify(conn, s)
        assert set(found) == {"witness_new"} and "is a new one" in found["witness_new"], found
        assert await _seal(conn, s, publish) == 2
    assert set(await _verify(conn, s)) == {"witness_republished"}
    await delete_topic(s.kafka_bootstrap, s.seal_heads_topic)


async def test_publications_recorded_before_topic_ids_are_named_not_republished(
    conn: asyncpg.Connection, postgres_dsn: str, pg_schema: str, kafka_bootstrap: str, tmp_path: Path
) -> None:
    s = _settings(postgres_dsn, pg_schema, kafka_bootstrap, tmp_path)
    await world(conn)
    async with witness.publisher(s) as publish:
        assert await _seal(conn, s, publish) == 2
        # as recorded before migration 0020: the topic by name only
        await conn.execute("UPDATE seal_head_publications SET topic_id = $1", seals.UNKNOWN_TOPIC_ID)
        # another closed day (DAY + 1, yesterday, is still open in the hour after midnight UTC)
        later = OTHER_DAY - timedelta(days=1)
        await store(conn, [(uuid.uuid4(), datetime.combine(later, datetime.min.time(), tzinfo=UTC)
                            + timedelta(hours=1), "public", "r9", "chat.message", 1, "u1", None, "x",
                            {"text": "x"}, 0, 0)])  # fmt: skip
        assert await _seal(conn, s, publish) == 1  # only the new day's head
    (one,) = await seals.incarnations(conn, s.seal_heads_topic)
    assert one.topic_id != seals.UNKNOWN_TOPIC_ID and one.heads == 3
    assert set(await _verify(conn, s)) == set()


def test_a_broker_without_topic_ids_is_judged_by_the_length_of_its_log() -> None:
    at = datetime.now(UTC)
    latest = seals.Incarnation(seals.UNKNOWN_TOPIC_ID, 5, at, at)
    assert witness.judge(latest, witness.WitnessLog("h", None, 5, True)) is None
    assert "holds 1 record(s), fewer than" in (
        witness.judge(latest, witness.WitnessLog("h", None, 1, True)) or ""
    )
    new_id, holding = witness.incarnation(latest, witness.WitnessLog("h", None, 1, True), "changed")
    assert new_id != seals.UNKNOWN_TOPIC_ID and holding == {new_id}


async def test_maintenance_seals_and_goes_on_when_the_witness_broker_is_away(
    conn: asyncpg.Connection, postgres_dsn: str, pg_schema: str, tmp_path: Path
) -> None:
    """No broker at the bootstrap address: the days are sealed, the heads stay pending, nothing raises (a
    worker's maintenance timer must not die of it)."""
    s = _settings(postgres_dsn, pg_schema, f"127.0.0.1:{free_port()}", tmp_path)
    await world(conn)
    assert s.seal_key_file
    pool = await db.create_pool(postgres_dsn, pg_schema, 1)
    try:
        async with witness.publisher(s) as publish:
            await seal_in_maintenance(pool, s, SealKey.load(s.seal_key_file), publish)
    finally:
        await pool.close()
    assert len(await seals.heads(conn)) == 2
    state = await sealing_state(conn, now=NOW, late_window_seconds=3600, heads_topic=s.seal_heads_topic)
    assert state.unpublished_heads == 2


async def test_a_day_sealed_again_after_a_restore_differs_from_the_witness_and_says_why(
    conn: asyncpg.Connection, postgres_dsn: str, pg_schema: str, kafka_bootstrap: str, tmp_path: Path
) -> None:
    """The database restored from a backup taken before a day was sealed: the day is sealed again (another
    time, so another head) and the witness keeps the first. That is a fork of the sealed history, so it stays
    a witness_mismatch, but one that names the restore as a cause instead of only a rewrite."""
    s = _settings(postgres_dsn, pg_schema, kafka_bootstrap, tmp_path)
    await world(conn)
    async with witness.publisher(s) as publish:
        assert await _seal(conn, s, publish) == 2
    head = await conn.fetchval("SELECT head_id FROM seal_heads WHERE day = $1", DAY)
    for sql_text in (  # what the backup lacks
        "DELETE FROM seal_head_publications WHERE head_id = $1",
        "DELETE FROM seal_heads WHERE head_id = $1",
    ):
        await superuser(conn, sql_text, head)
    for sql_text in (
        "DELETE FROM seal_leaves WHERE seal_id IN (SELECT seal_id FROM seals WHERE day = $1)",
        "DELETE FROM seals WHERE day = $1",
    ):
        await superuser(conn, sql_text, DAY)
    found = await _verify(conn, s)
    assert "restored from a backup taken before the day was sealed" in found["witness_mismatch"], found
    async with witness.publisher(s) as publish:
        assert await _seal(conn, s, publish) == 1
    found = await _verify(conn, s)
    assert set(found) == {"witness_mismatch"}, found
    assert "sealed again after the database was restored" in found["witness_mismatch"]
    # Both heads of the day stay on the witness for good: keyed by their statements, the log cleaner never
    # takes the first away (keyed by day, it would in time keep the second only, and agree with it).
    consumer = AIOKafkaConsumer(bootstrap_servers=kafka_bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    try:
        tp = TopicPartition(s.seal_heads_topic, 0)
        consumer.assign([tp])
        end = (await consumer.end_offsets([tp]))[tp]
        records = []
        while await consumer.position(tp) < end:
            records += [m for ms in (await consumer.getmany(timeout_ms=5000)).values() for m in ms]
    finally:
        await consumer.stop()
    of_day = [m for m in records if m.key is not None and m.key.startswith(DAY.isoformat().encode())]
    assert len(of_day) == 2 and of_day[0].key != of_day[1].key, [m.key for m in of_day]
    for m in of_day:
        assert m.key == f"{DAY.isoformat()}/{hashlib.sha256(m.value).hexdigest()}".encode()
