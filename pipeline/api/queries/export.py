"""An export's SQL: how many events match (up to the cap), then all of them through a server-side cursor.

Called by ``GET /v1/rooms/{room_id}/export`` after authorization: `count_capped` before the first byte, the
rest inside the read-only transaction the stream holds open.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg

from pipeline.api.params import EventFilters, TimeRange
from pipeline.api.queries.events import ordered_select, room_query

__all__ = ["count_capped", "limit_stream_time", "stream_room_events"]


async def count_capped(
    conn: asyncpg.Connection, room_id: str, rng: TimeRange, filters: EventFilters, cap: int
) -> int:
    """How many events match, counting no further than `cap` + 1."""
    q = room_query(room_id, rng, filters, "asc", None)
    sql = f"SELECT count(*) FROM (SELECT 1 FROM events WHERE {q.clause()} LIMIT {q.param(cap + 1)}) AS capped"
    return int(await conn.fetchval(sql, *q.args))


async def limit_stream_time(conn: asyncpg.Connection, seconds: float) -> None:
    """The stream's transaction may run `seconds` per statement, and idle no longer than that: a reader
    that stops reading must not hold a snapshot (and a connection) for ever."""
    timeout_ms = int(seconds * 1000)
    await conn.execute(f"SET LOCAL statement_timeout = {timeout_ms}")
    await conn.execute(f"SET LOCAL idle_in_transaction_session_timeout = {timeout_ms}")


async def stream_room_events(
    conn: asyncpg.Connection,
    room_id: str,
    rng: TimeRange,
    filters: EventFilters,
    order: str,
    limit: int | None,
    *,
    prefetch: int = 2_000,
) -> AsyncIterator[asyncpg.Record]:
    """Every matching event through a server-side cursor; the caller holds a transaction open."""
    q = room_query(room_id, rng, filters, order, None)
    sql = ordered_select(q, order, limit)
    async for record in conn.cursor(sql, *q.args, prefetch=prefetch):
        yield record
