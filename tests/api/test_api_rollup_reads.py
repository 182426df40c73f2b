"""The calendar (`days`) and insights read the rollups and answer what they answered when they read the rows.

The queries the API ran over `events` before the rollups (as they were, below) and the rollup reads that
replaced them, on the same stored rows (hypothesis): rooms under two retention classes on a day, gifts,
chatters tied on counts, display names changing through a day, more chatters than a day keeps; then again
after an authorized erasure took part of them.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import asyncpg
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.api.queries import insights
from pipeline.api.queries.days import day_counts
from pipeline.api.queries.insights import DaySummary, day_summaries
from pipeline.storage import db
from pipeline.storage.batch import EVENT_COLUMNS
from pipeline.storage.migrate import migrate
from pipeline.storage.partitions import PartitionManager, day_start

# --- what the API read from the rows before the rollups (pipeline/api/queries/{days,insights}.py) --------
OLD_TYPE_COUNTS_SQL = """
SELECT (occurred_at AT TIME ZONE 'UTC')::date AS day, event_type AS type, count(*) AS n
  FROM events
 WHERE room_id = $1 AND occurred_at >= $2 AND occurred_at < $3
 GROUP BY 1, 2 ORDER BY 1, 2
"""
OLD_HOURS_SQL = """
SELECT (occurred_at AT TIME ZONE 'UTC')::date AS day,
       extract(hour FROM occurred_at AT TIME ZONE 'UTC')::int AS hour, event_type AS type, count(*) AS n,
       sum(CASE WHEN event_type = 'gift.sent' THEN (payload->>'credits')::bigint END) AS credits
  FROM events
 WHERE room_id = $1 AND occurred_at >= $2 AND occurred_at < $3
 GROUP BY 1, 2, 3
"""
OLD_CHATTERS_SQL = """
SELECT day, actor_id, n, display_name FROM (
    SELECT (occurred_at AT TIME ZONE 'UTC')::date AS day, actor_id, count(*) AS n,
           (array_agg(payload->'actor'->>'display_name' ORDER BY occurred_at DESC))[1] AS display_name,
           row_number() OVER (PARTITION BY (occurred_at AT TIME ZONE 'UTC')::date
                              ORDER BY count(*) DESC, actor_id) AS rank
      FROM events
     WHERE room_id = $1 AND occurred_at >= $2 AND occurred_at < $3
       AND event_type = 'chat.message' AND actor_id IS NOT NULL
     GROUP BY 1, 2
) AS ranked WHERE rank <= $4
"""


async def old_day_counts(conn: asyncpg.Connection, room: str, first: date, last: date) -> dict[date, Any]:
    out: dict[date, dict[str, int]] = {}
    for r in await conn.fetch(
        OLD_TYPE_COUNTS_SQL, room, day_start(first), day_start(last) + timedelta(days=1)
    ):
        out.setdefault(r["day"], {})[r["type"]] = int(r["n"])
    return out


async def old_day_summaries(
    conn: asyncpg.Connection, room: str, first: date, last: date, kept: int
) -> dict[date, DaySummary]:
    since, until = day_start(first), day_start(last) + timedelta(days=1)
    out: dict[date, DaySummary] = {}
    for r in await conn.fetch(OLD_HOURS_SQL, room, since, until):
        summary = out.setdefault(r["day"], DaySummary())
        n = int(r["n"])
        summary.total += n
        summary.hourly[(r["hour"], r["type"])] = n
        if r["credits"]:
            summary.credits[r["hour"]] = summary.credits.get(r["hour"], 0) + int(r["credits"])
    for r in await conn.fetch(OLD_CHATTERS_SQL, room, since, until, kept):
        out.setdefault(r["day"], DaySummary()).chatters[r["actor_id"]] = (int(r["n"]), r["display_name"])
    return out


# --- the same rows, read both ways ------------------------------------------------------------------------
DAY = datetime.now(UTC).date() - timedelta(days=2)
KEPT = 3  # chatters a day keeps, instead of 100: more chatters than that are easy to draw
PROPERTY = settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@st.composite
def stored_rows(draw: st.DrawFn) -> list[tuple[Any, ...]]:
    n = draw(st.integers(1, 40))
    # distinct event times (the old query had no tie-break for the last display name)
    seconds = draw(st.lists(st.integers(0, 3 * 86_400 - 1), min_size=n, max_size=n, unique=True))
    rows = []
    for i, second in enumerate(seconds):
        etype = draw(st.sampled_from(["chat.message"] * 4 + ["user.entered", "gift.sent", "moderation.warn"]))
        actor = draw(st.sampled_from([f"u-{k}" for k in range(6)]))
        payload: dict[str, Any] = {"actor": {"user_id": actor, "display_name": draw(st.sampled_from("ABC"))}}
        if etype == "gift.sent":
            payload["credits"] = draw(st.integers(0, 20))
        rows.append(
            (
                str(uuid.uuid4()),
                datetime.combine(DAY, time.min, tzinfo=UTC) + timedelta(seconds=second),
                draw(st.sampled_from(["public", "public", "private"])),
                draw(st.sampled_from(["room-a", "room-b"])),
                etype,
                1,
                actor,
                None,
                None,
                orjson.dumps(payload),
                0,
                i,
            )
        )
    return rows


@pytest.fixture
async def conn(postgres_dsn: str, pg_schema: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await db.connect(postgres_dsn, pg_schema)
    await migrate(connection, pg_schema)
    partitions = PartitionManager()
    await partitions.load(connection)
    await partitions.ensure(
        connection, [(c, DAY + timedelta(days=d)) for c in ("public", "private") for d in range(3)]
    )
    try:
        yield connection
    finally:
        await connection.close()


@PROPERTY
@given(rows=stored_rows())
async def test_days_and_insights_answer_what_the_rows_answered(
    conn: asyncpg.Connection, rows: list[tuple[Any, ...]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(insights, "CHATTERS_KEPT", KEPT)
    await conn.execute("SET roomlogs.authorized_deletion = 'on'")
    await conn.execute("DELETE FROM events")
    await conn.copy_records_to_table("events", records=rows, columns=EVENT_COLUMNS)
    for erased in (False, True):
        if erased:  # one user's chat gone from the first day on: an erasure covering part of the rows
            await conn.execute(
                """DELETE FROM events
                    WHERE actor_id = 'u-1' AND event_type = 'chat.message' AND occurred_at < $1""",
                day_start(DAY + timedelta(days=1)) + timedelta(hours=12),
            )
        for room in ("room-a", "room-b"):
            for first, last in (
                (DAY, DAY + timedelta(days=2)),
                (DAY + timedelta(days=1), DAY + timedelta(days=1)),
            ):
                assert await day_counts(conn, room, first, last) == await old_day_counts(
                    conn, room, first, last
                )
                assert await day_summaries(conn, room, first, last) == await old_day_summaries(
                    conn, room, first, last, KEPT
                )
