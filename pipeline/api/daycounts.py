"""A room's event counts per UTC day and type, for the calendar, without re-reading a busy room's month.

Called by ``GET /v1/rooms/{room_id}/days`` after authorization. Counting a month by type reads every row
of the room (a busy room: hundreds of thousands of heap rows, seconds). Per-day totals need only the
`events_room_time` index (an index-only scan where autovacuum has marked the day's pages all-visible, as
it does for past days), so each request counts totals afresh and reuses a day's counts per type only
while that day's total is unchanged: a late event, an erasure, a room deletion or a dropped day changes
the total and the day is counted again. Today is always counted afresh.

The cache is per process, bounded (least recently used days are forgotten), and keyed by room: it is
consulted only after the caller was authorized for that room, and holds counts, never rows.
"""

from __future__ import annotations

from collections import OrderedDict
from datetime import UTC, date, datetime, timedelta
from typing import Any

import asyncpg

from pipeline.api import queries
from pipeline.api.context import ApiState

__all__ = ["DayCounts", "day_counts", "day_start", "day_totals"]

_TOTALS_SQL = """
SELECT (occurred_at AT TIME ZONE 'UTC')::date AS day, count(*) AS n
  FROM events
 WHERE room_id = $1 AND occurred_at >= $2 AND occurred_at < $3
 GROUP BY 1
"""


def day_start(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


async def day_totals(conn: asyncpg.Connection, room_id: str, first: date, last: date) -> dict[date, int]:
    """Events per UTC day in first..last (inclusive) with activity: from the room/time index alone."""
    rows = await conn.fetch(_TOTALS_SQL, room_id, day_start(first), day_start(last) + timedelta(days=1))
    return {r["day"]: int(r["n"]) for r in rows}


async def day_counts(
    state: ApiState, conn: asyncpg.Connection, room_id: str, first: date, last: date, today: date
) -> list[dict[str, Any]]:
    """The process's `DayCounts` (made on first use) for this request."""
    cache = state.extra.get("day_counts")
    if not isinstance(cache, DayCounts):
        cache = state.extra["day_counts"] = DayCounts()
    return await cache.counts(conn, room_id, first, last, today)


class DayCounts:
    def __init__(self, max_days: int = 50_000) -> None:
        self.max_days = max_days
        #: (room, day) -> (total, {type: count})
        self._days: OrderedDict[tuple[str, date], tuple[int, dict[str, int]]] = OrderedDict()

    async def counts(
        self, conn: asyncpg.Connection, room_id: str, first: date, last: date, today: date
    ) -> list[dict[str, Any]]:
        """(day, type, count) for each day in first..last (inclusive) with activity, ordered."""
        totals = await day_totals(conn, room_id, first, last)
        known: dict[date, dict[str, int]] = {}
        stale: list[date] = []
        for day, total in totals.items():
            cached = self._days.get((room_id, day))
            if day < today and cached is not None and cached[0] == total:
                self._days.move_to_end((room_id, day))
                known[day] = cached[1]
            else:
                stale.append(day)
        if stale:
            fresh: dict[date, dict[str, int]] = {}
            rows = await queries.day_counts(conn, room_id, min(stale), max(stale))
            for r in rows:
                if r["day"] in totals:
                    fresh.setdefault(r["day"], {})[r["type"]] = int(r["n"])
            for day in stale:
                by_type = fresh.get(day, {})
                known[day] = by_type
                if day < today and sum(by_type.values()) == totals[day]:
                    self._remember((room_id, day), (totals[day], by_type))
        return [
            {"day": day, "type": t, "n": n} for day in sorted(known) for t, n in sorted(known[day].items())
        ]

    def _remember(self, key: tuple[str, date], value: tuple[int, dict[str, int]]) -> None:
        self._days[key] = value
        self._days.move_to_end(key)
        while len(self._days) > self.max_days:
            self._days.popitem(last=False)
