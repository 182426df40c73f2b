"""Whether sealing keeps up, as every worker reads it (pipeline/sealing/state.py) and `roomlogs status`
prints it: off until a key is registered, a closed day without a seal overdue, a head not yet on the
witness topic pending, and the gauges say the same."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest
from prometheus_client import CollectorRegistry
from test_seals import rows, store

from pipeline.evidence.keys import SealKey
from pipeline.sealing.run import seal_closed_days
from pipeline.sealing.state import SealingState, SealMetrics, sealing_state
from pipeline.settings import Secret, Settings
from pipeline.storage import db, seals
from pipeline.storage.migrate import migrate

NOW = datetime.now(UTC)
TODAY = NOW.date()
TOPIC = "roomlogs.seal-heads"


@pytest.fixture
async def conn(postgres_dsn: str, pg_schema: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await db.connect(postgres_dsn, pg_schema)
    await migrate(connection, pg_schema)
    try:
        yield connection
    finally:
        await connection.close()


async def state_at(conn: asyncpg.Connection, now: datetime = NOW) -> SealingState:
    return await sealing_state(conn, now=now, late_window_seconds=3600, heads_topic=TOPIC)


async def test_overdue_days_and_unwitnessed_heads_are_seen_and_cleared(
    conn: asyncpg.Connection, postgres_dsn: str, pg_schema: str, tmp_path: Path
) -> None:
    two_days_ago, yesterday = TODAY - timedelta(days=2), TODAY - timedelta(days=1)
    await store(conn, rows("public", two_days_ago, "r1", 5) + rows("public", yesterday, "r1", 3))
    await store(conn, rows("public", TODAY, "r1", 2))

    off = await state_at(conn)
    assert not off.enabled and off.overdue == [] and "sealing: off" in off.say()

    settings = Settings(postgres_dsn=Secret(postgres_dsn), postgres_schema=pg_schema)
    key = SealKey.generate(tmp_path / "seal.pem")
    await seals.add_key(conn, key.key_id, key.public_raw)
    due = await state_at(conn)
    # yesterday closed an hour after it ended (it is past 01:00 UTC unless this runs right after midnight)
    closed = [two_days_ago, yesterday] if NOW.hour >= 1 else [two_days_ago]
    assert due.enabled and due.overdue == closed and due.last_sealed_day is None
    assert f"ERROR {len(closed)} closed day(s) not sealed" in due.say()

    registry = CollectorRegistry()
    metrics = SealMetrics(registry)
    metrics.observe(due)
    assert registry.get_sample_value("roomlogs_seal_overdue_days") == len(closed)
    assert registry.get_sample_value("roomlogs_sealing_enabled") == 1

    await seal_closed_days(conn, settings, key, now=NOW)  # no witness reachable: heads stay pending
    sealed = await state_at(conn)
    assert sealed.overdue == [] and sealed.last_sealed_day == closed[-1]
    assert sealed.unpublished_heads == len(closed) and "not yet on the witness topic" in sealed.say()
    metrics.observe(sealed)
    assert registry.get_sample_value("roomlogs_seal_overdue_days") == 0
    assert registry.get_sample_value("roomlogs_seal_heads_unpublished") == len(closed)

    for head in await seals.heads(conn):
        await seals.record_publication(conn, head.head_id, TOPIC)
    witnessed = await state_at(conn)
    assert witnessed.unpublished_heads == 0 and "ERROR" not in witnessed.say()
    # today is never overdue, however many events it has: it closes tomorrow at 01:00 UTC
    assert TODAY not in (await state_at(conn, NOW + timedelta(minutes=1))).overdue
