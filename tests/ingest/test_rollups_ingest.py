"""Rollups through the real worker (its own database role) and a real broker: simulated traffic, bad events
included, rolls up to exactly the GROUP BY of the rows stored; the same records delivered again (a room
server resending everything, a topic read again) change no rollup."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from rollup_support import ROOM_DAY_ACTORS, ROOM_HOURS, assert_rollups_match_rows
from test_ingest import produce_raw

from pipeline.publisher.simulator import SimulationConfig, iter_events
from pipeline.settings import Settings
from pipeline.storage import db


async def _rollups(settings: Settings) -> tuple[list[Any], list[Any]]:
    conn = await db.connect(settings.postgres_dsn.get(), settings.postgres_schema)
    try:
        await assert_rollups_match_rows(conn)
        return (
            sorted(tuple(r) for r in await conn.fetch(ROOM_HOURS)),
            sorted(map(repr, await conn.fetch(ROOM_DAY_ACTORS))),
        )
    finally:
        await conn.close()


async def test_replays_through_the_worker_change_no_rollup(
    ingest_settings: Settings, worker_settings: Settings, ingest_worker: Any
) -> None:
    # three hours of 30 rooms' traffic: rollups over several hours, and a few bad events
    config = SimulationConfig(rooms=30, events=3_000, bad_event_ratio=0.02, seed=7, history_seconds=3 * 3600)
    records = [(key, value) for key, value, _ in iter_events(config, datetime.now(UTC))]
    await produce_raw(worker_settings, records)
    async with ingest_worker(worker_settings) as w:
        assert await w.caught_up(120)
        stored = w.service.totals["stored"]
        first = await _rollups(ingest_settings)
        await produce_raw(worker_settings, records)  # everything again
        assert await w.caught_up(120)
        assert w.service.totals["stored"] == stored
        assert w.service.totals["duplicates"] >= stored
    assert sum(r[4] for r in first[0]) == stored
    assert await _rollups(ingest_settings) == first
