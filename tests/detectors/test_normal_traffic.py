"""How often each detector fires on the simulator's normal busy traffic (goal: never), through the batch
writer and real PostgreSQL: `roomlogs simulate`'s defaults (100,000 events, 200 rooms, 10 minutes) and
the ingest benchmark's (2,000 rooms), two seeds each, written in batches as the worker writes them. The
figures (alerts per detector, detector time as a share of the write) are printed at the end of the run."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson
import pytest

from pipeline.detectors import Detectors
from pipeline.publisher.simulator import SimulationConfig, iter_events
from pipeline.storage import db, migrate
from pipeline.storage.batch import WriteBatch
from pipeline.storage.partitions import PartitionManager
from pipeline.storage.writer import BatchWriter


@pytest.fixture
async def pool(postgres_dsn: str, pg_schema: str) -> AsyncIterator[asyncpg.Pool]:
    conn = await db.connect(postgres_dsn, pg_schema)
    await migrate.migrate(conn, pg_schema)
    await conn.close()
    p = await db.create_pool(postgres_dsn, pg_schema, 2)
    yield p
    await p.close()


def _rows(config: SimulationConfig) -> list[tuple[Any, ...]]:
    """The simulator's valid events as rows (the columns the detectors read, as the normalizer fills them;
    rooms with max_occupancy >= 50 in busy_public, as the worker classifies them)."""
    busy: set[str] = set()
    out = []
    for offset, (_, value, _) in enumerate(iter_events(config, datetime.now(UTC))):
        d = orjson.loads(value)
        data, actor = d.get("data") or {}, d.get("actor")
        room, etype = d["room_id"], d["type"]
        if (
            etype == "room.settings_changed"
            and (data["changes"].get("max_occupancy") or {}).get("new", 0) >= 50
        ):
            busy.add(room)
        target = data.get("target") or data.get("recipient") or {}
        payload = {k: v for k, v in data.items() if k not in ("text", "reason")}
        if actor:
            payload["actor"] = actor
        body = data.get("text") if etype == "chat.message" else data.get("reason")
        cls = "busy_public" if room in busy else "public"
        at = datetime.fromisoformat(d["occurred_at"])
        actor_id, target_id = (actor or {}).get("user_id"), target.get("user_id")
        payload_json = orjson.dumps(payload)
        out.append(
            (d["event_id"], at, cls, room, etype, 1, actor_id, target_id, body, payload_json, 0, offset)
        )
    return out


@pytest.mark.parametrize(
    ("rooms", "seed"), [(200, 7), (200, 8), (2_000, 1), (2_000, 2)], ids=lambda v: str(v)
)
async def test_normal_busy_traffic_raises_no_alert(
    pool: asyncpg.Pool, rooms: int, seed: int, figures: Callable[[str], None]
) -> None:
    config = SimulationConfig(rooms=rooms, events=100_000, bad_event_ratio=0.0, seed=seed)
    rows = _rows(config)
    partitions = PartitionManager()
    async with pool.acquire() as conn:
        await partitions.load(conn)
    writer = BatchWriter(pool, partitions, detectors=Detectors())
    raised: Counter[str] = Counter()
    write = detect = 0.0
    topic = f"t-{uuid.uuid4().hex[:8]}"
    for start in range(0, len(rows), 5_000):
        chunk = rows[start : start + 5_000]
        batch = WriteBatch(topic=topic, consumer_group="g", first_offsets={0: start},
                           next_offsets={0: start + len(chunk)})  # fmt: skip
        batch.rows = chunk
        batch.event_days = {(r[2], r[1].date()) for r in chunk}
        outcome = await writer.write(batch, datetime.now(UTC))
        raised.update(outcome.alerts)
        write += outcome.write_seconds
        detect += outcome.detect_seconds
    figures(
        f"normal traffic ({len(rows):,} events, {rooms} rooms, seed {seed}, 600 s of event time): "
        f"alerts {dict(raised) or 0}; detectors {detect:.2f} s of {write:.2f} s writing"
    )
    assert raised == Counter()
