"""An event id is stored at most once, whatever Kafka does with its copies (hypothesis, real PostgreSQL).

Room servers resend, producers retry, consumers replay, and two producers may send one event id with other
content. Whatever the order, the duplication, the Kafka partitions the copies land on and the batch cuts,
through the real batch builder and writer:
- every event id that arrived is stored exactly once, as one of its copies;
- every other copy with the same content is counted as a duplicate, and every copy with other content is
  a `conflicting_duplicate` dead letter: nothing is lost silently and nothing is stored twice;
- rooms changing retention class meanwhile change none of that.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import asyncpg
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.events.normalize import Normalizer
from pipeline.ingest.prepare import build_batch, normalize_records
from pipeline.ingest.rooms import RoomDirectory
from pipeline.storage import db
from pipeline.storage.migrate import migrate
from pipeline.storage.partitions import PartitionManager
from pipeline.storage.writer import BatchWriter

NOW = datetime.now(UTC)
ROOMS = ("room-a", "room-b")
PROPERTY = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@dataclass(frozen=True)
class Copy:
    event_id: str
    room: str
    kind: str  # chat | private | busy (the last two change the room's retention class)
    minutes_ago: int
    text: str

    def value(self) -> bytes:
        envelope = {
            "event_id": self.event_id,
            "schema_version": 1,
            "room_id": self.room,
            "occurred_at": (NOW - timedelta(minutes=self.minutes_ago)).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        }
        if self.kind == "chat":
            return orjson.dumps(
                {**envelope, "type": "chat.message", "actor": {"user_id": "u-1"}, "data": {"text": self.text}}
            )
        changes: dict[str, tuple[object, object]] = (
            {"privacy": (None, "private")}
            if self.kind == "private"
            else {"privacy": (None, "public"), "max_occupancy": (None, 500)}
        )
        data = {"changes": {name: {"old": old, "new": new} for name, (old, new) in changes.items()}}
        return orjson.dumps({**envelope, "type": "room.settings_changed", "data": data})

    @property
    def key(self) -> tuple[str, int, str | None]:
        """What is stored of it: room, event time, chat text (settings events have none)."""
        return self.room, self.minutes_ago, self.text if self.kind == "chat" else None


@st.composite
def deliveries(draw: st.DrawFn) -> list[list[tuple[int, Copy]]]:
    """Batches of (Kafka partition, copy): originals, identical resends and differing copies, any order."""
    originals = [
        Copy(
            str(uuid.uuid4()),
            draw(st.sampled_from(ROOMS)),
            draw(st.sampled_from(["chat", "chat", "chat", "private", "busy"])),
            draw(st.integers(1, 120)),
            f"text {i}",
        )
        for i in range(draw(st.integers(1, 10)))
    ]
    copies = list(originals)
    for o in draw(st.lists(st.sampled_from(originals), max_size=12)):  # resends, replays
        copies.append(o)
    for o in draw(st.lists(st.sampled_from(originals), max_size=4)):  # same id, other content
        other = draw(st.sampled_from(["time", "text", "room"]))
        copies.append(
            Copy(
                o.event_id,
                "room-z" if other == "room" else o.room,
                o.kind,
                o.minutes_ago + 7 if other == "time" else o.minutes_ago,
                o.text + " (edited)" if other == "text" else o.text,
            )
        )
    order = draw(st.permutations(copies))
    placed = [(draw(st.integers(0, 1)), c) for c in order]
    cuts = sorted(draw(st.sets(st.integers(1, max(1, len(placed) - 1)), max_size=4)))
    return [placed[a:b] for a, b in zip([0, *cuts], [*cuts, len(placed)], strict=True) if a < b]


@pytest.fixture
async def pool(postgres_dsn: str, pg_schema: str) -> AsyncIterator[asyncpg.Pool]:
    conn = await db.connect(postgres_dsn, pg_schema)
    await migrate(conn, pg_schema)
    await conn.close()
    p = await db.create_pool(postgres_dsn, pg_schema, 2)
    yield p
    await p.close()


@PROPERTY
@given(batches=deliveries())
async def test_each_event_id_is_stored_once_and_every_other_copy_is_accounted_for(
    pool: asyncpg.Pool, batches: list[list[tuple[int, Copy]]]
) -> None:
    group, topic = f"g-{uuid.uuid4().hex[:8]}", f"t-{uuid.uuid4().hex[:8]}"
    rooms = RoomDirectory(default_class="public", busy_min_occupancy=50)
    partitions = PartitionManager()
    async with pool.acquire() as conn:
        await partitions.load(conn)
    writer = BatchWriter(pool, partitions, classify=rooms.classify)
    normalizer = Normalizer()
    next_offset = {0: 0, 1: 0}
    duplicates = conflicts = 0
    for batch in batches:
        records: dict[int, list[SimpleNamespace]] = {0: [], 1: []}
        for partition, copy in batch:
            records[partition].append(
                SimpleNamespace(offset=next_offset[partition], timestamp=0, key=None, value=copy.value())
            )
            next_offset[partition] += 1
        pass1 = await normalize_records(topic, {p: r for p, r in records.items() if r}, normalizer, NOW)
        assert not pass1.dead_letters
        async with pool.acquire() as conn:
            await rooms.load(conn, rooms.unknown(pass1.rooms))
        built, _ = build_batch(pass1, consumer_group=group, rooms=rooms, horizons={}, now=NOW)
        outcome = await writer.write(built, NOW)
        rooms.forget(outcome.conflicting_rooms)
        duplicates += outcome.duplicates
        conflicts += len(outcome.conflicts)

    delivered = [c for b in batches for _, c in b]
    ids = {c.event_id for c in delivered}
    async with pool.acquire() as conn:
        stored = await conn.fetch(
            """SELECT event_id::text AS id, room_id, occurred_at, body FROM events
                WHERE event_id = ANY($1::uuid[])""",
            list(ids),
        )
        dead = await conn.fetch(
            "SELECT content->>'event_id' AS id FROM dead_letters WHERE src_topic = $1 AND reason = $2",
            topic,
            "conflicting_duplicate",
        )
    per_id = Counter(r["id"] for r in stored)
    assert set(per_id) == ids, "every event id that arrived is stored"
    assert max(per_id.values()) == 1, "no event id is stored twice"
    # the stored copy is one of the copies; each other copy is a duplicate exactly when its content matches
    kept = {
        r["id"]: (r["room_id"], int((NOW - r["occurred_at"]).total_seconds()) // 60, r["body"])
        for r in stored
    }
    assert all(kept[c.event_id] in {k.key for k in delivered if k.event_id == c.event_id} for c in delivered)
    expected_conflicts = sum(1 for c in delivered if c.key != kept[c.event_id])
    assert conflicts == len(dead) == expected_conflicts
    assert sorted(r["id"] for r in dead) == sorted(c.event_id for c in delivered if c.key != kept[c.event_id])
    assert duplicates + conflicts + len(ids) == len(delivered), (
        "every copy is stored, counted or dead-lettered"
    )
