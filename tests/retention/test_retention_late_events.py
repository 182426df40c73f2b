"""Late, future and replayed events meet retention: the ingest path and maintenance agree on every day.

Events go through the real ingest stages without Kafka (normalize -> classify -> batch writer) with an
explicit clock, then maintenance runs on the same clock. What must hold:
- a late event within retention gets its day partition on demand (there is no catch-all partition);
- an event just ahead of the clock, within the allowed skew, lands in the next day's partition;
- an event too far ahead is dead-lettered with its reason, never stored;
- an event older than its class's retention is not stored, so a replay from the earliest offset never
  brings back rows retention deleted.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta

import asyncpg
import orjson
from retention_support import days_ago, event_days

from pipeline.events.normalize import Normalizer
from pipeline.ingest.prepare import build_batch, normalize_records
from pipeline.ingest.rooms import RoomDirectory
from pipeline.publisher.events import chat_message, user
from pipeline.retention import check_retention, load_classes, maintain
from pipeline.retention_rules import horizon
from pipeline.settings import Settings
from pipeline.storage import db
from pipeline.storage.partitions import PartitionManager
from pipeline.storage.writer import BatchWriter

TOPIC = "roomlogs.events"
#: a minute before midnight, so an event a minute ahead belongs to tomorrow
NOW = datetime.combine(days_ago(0), time(23, 59), tzinfo=UTC)


@dataclass(frozen=True)
class Record:
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: int = 0


def _event(text: str, at: datetime) -> bytes:
    ev = chat_message(
        "room-late",
        user("u-1"),
        text,
        event_id=str(uuid.uuid4()),
        occurred_at=at.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
    )
    return orjson.dumps(ev)


async def _ingest(
    pool: asyncpg.Pool, conn: asyncpg.Connection, group: str, values: list[bytes], now: datetime
) -> dict[str, int]:
    records = [Record(i, b"room-late", v) for i, v in enumerate(values)]
    pass1 = await normalize_records(TOPIC, {0: records}, Normalizer(max_future_skew_seconds=300), now)
    rooms = RoomDirectory(default_class="public", busy_min_occupancy=50)
    await rooms.load(conn, pass1.rooms)
    horizons = {c.name: horizon(now.date(), c.retention_days) for c in (await load_classes(conn)).values()}
    batch, stats = build_batch(pass1, consumer_group=group, rooms=rooms, horizons=horizons, now=now)
    outcome = await BatchWriter(pool, PartitionManager()).write(batch, now)
    return {
        "stored": outcome.stored,
        "dead_lettered": outcome.dead_lettered,
        "expired": sum(stats.expired_by_class.values()),
    }


async def test_late_future_and_replayed_events_agree_with_retention(
    conn: asyncpg.Connection, settings: Settings, postgres_dsn: str, pg_schema: str
) -> None:
    values = [
        _event("late, still kept", NOW - timedelta(days=13)),
        _event("older than retention", NOW - timedelta(days=15)),
        _event("a minute ahead", NOW + timedelta(minutes=1)),
        _event("a day ahead", NOW + timedelta(days=1)),
    ]
    pool = await db.create_pool(postgres_dsn, pg_schema, 2)
    try:
        first = await _ingest(pool, conn, "ingest", values, NOW)
        assert first == {"stored": 2, "dead_lettered": 1, "expired": 1}
        assert await conn.fetchval("SELECT reason FROM dead_letters") == "timestamp_in_future"
        assert sorted(await event_days(conn, "public")) == [days_ago(13), days_ago(-1)]  # made on demand

        report = await maintain(conn, settings, now=NOW)
        assert report.dropped == [] and report.unruled == []
        assert not (await check_retention(conn, today=NOW.date(), dead_letter_retention_days=7)).overdue

        # Two days on, day -13 is past public's 14 days: dropped. A replay of the whole topic by a new
        # consumer group (no offsets of record to fence it) must not bring it back.
        later = NOW + timedelta(days=2)
        dropped = await maintain(conn, settings, now=later)
        assert [d.day for d in dropped.dropped] == [days_ago(13)]
        replay = await _ingest(pool, conn, "replay-from-earliest", values, later)
    finally:
        await pool.close()
    assert replay["expired"] == 2  # day -13 and day -15: both older than retention now
    assert days_ago(13) not in await event_days(conn, "public")
    bodies = [r["body"] for r in await conn.fetch("SELECT body FROM events ORDER BY occurred_at")]
    # the replayed minute-ahead event is a duplicate; the day-ahead one is no longer in the future: stored
    assert bodies == ["a minute ahead", "a day ahead"]
    assert not (await check_retention(conn, today=later.date(), dead_letter_retention_days=7)).overdue
