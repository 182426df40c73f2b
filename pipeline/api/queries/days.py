"""A room's UTC days: events per day (from the index alone), per day and type, and the per-process cache
that keeps a busy room's past days from being read again.

Called by ``GET /v1/rooms/{room_id}/days`` (`DayCounts`) and ``GET /v1/rooms/{room_id}/insights``
(`queries.insights.DaySummaries`) after authorization. Counting a month by type reads every row of the
room (a busy room: hundreds of thousands of heap rows, seconds). Per-day totals need only the
`events_room_time` index (an index-only scan where autovacuum has marked the day's pages all-visible, as
it does for past days), so each request counts totals afresh and reuses what it knows of a day only while
that day's total is unchanged: a late event, an erasure, a room deletion or a dropped day changes the
total and the day is read again. Today is always read afresh.

A cache is per process, bounded (least recently used days are forgotten), and keyed by room: it is
consulted only after the caller was authorized for that room, and holds counts, never rows.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import OrderedDict
from datetime import date, timedelta
from typing import Generic, TypeVar

import asyncpg

from pipeline.storage.partitions import day_start

__all__ = ["DayCache", "DayCounts", "day_totals", "type_counts"]

T = TypeVar("T")

_TOTALS_SQL = """
SELECT (occurred_at AT TIME ZONE 'UTC')::date AS day, count(*) AS n
  FROM events
 WHERE room_id = $1 AND occurred_at >= $2 AND occurred_at < $3
 GROUP BY 1
"""
_TYPE_COUNTS_SQL = """
SELECT (occurred_at AT TIME ZONE 'UTC')::date AS day, event_type AS type, count(*) AS n
  FROM events
 WHERE room_id = $1 AND occurred_at >= $2 AND occurred_at < $3
 GROUP BY 1, 2 ORDER BY 1, 2
"""


async def day_totals(conn: asyncpg.Connection, room_id: str, first: date, last: date) -> dict[date, int]:
    """Events per UTC day in first..last (inclusive) with activity: from the room/time index alone."""
    rows = await conn.fetch(_TOTALS_SQL, room_id, day_start(first), day_start(last) + timedelta(days=1))
    return {r["day"]: int(r["n"]) for r in rows}


async def type_counts(
    conn: asyncpg.Connection, room_id: str, first: date, last: date
) -> list[asyncpg.Record]:
    """(day, type, n) for each UTC day in first..last (inclusive) with activity in the room."""
    return list(
        await conn.fetch(_TYPE_COUNTS_SQL, room_id, day_start(first), day_start(last) + timedelta(days=1))
    )


class DayCache(ABC, Generic[T]):
    """What is known of a room's UTC days (a `T` per day), reused while a past day's total is unchanged."""

    def __init__(self, max_days: int) -> None:
        self.max_days = max_days
        self._days: OrderedDict[tuple[str, date], T] = OrderedDict()

    @abstractmethod
    def total(self, known: T) -> int:
        """The events `known` stands for (compared with the day's total to tell whether it still holds)."""

    @abstractmethod
    def empty(self) -> T:
        """What is known of a day with no rows."""

    @abstractmethod
    async def read(self, conn: asyncpg.Connection, room_id: str, first: date, last: date) -> dict[date, T]:
        """Each UTC day in first..last (inclusive) with activity, read from the rows."""

    async def days(
        self, conn: asyncpg.Connection, room_id: str, first: date, last: date, today: date
    ) -> dict[date, T]:
        """Each UTC day in first..last (inclusive) with activity: cached where still true, read otherwise."""
        totals = await day_totals(conn, room_id, first, last)
        known: dict[date, T] = {}
        stale: list[date] = []
        for day, total in totals.items():
            cached = self._days.get((room_id, day))
            if day < today and cached is not None and self.total(cached) == total:
                self._days.move_to_end((room_id, day))
                known[day] = cached
            else:
                stale.append(day)
        if stale:
            fresh = await self.read(conn, room_id, min(stale), max(stale))
            for day in stale:
                value = fresh.get(day)
                if value is None:
                    value = self.empty()
                known[day] = value
                if day < today and self.total(value) == totals[day]:
                    self._remember((room_id, day), value)
        return known

    def _remember(self, key: tuple[str, date], value: T) -> None:
        self._days[key] = value
        self._days.move_to_end(key)
        while len(self._days) > self.max_days:
            self._days.popitem(last=False)


class DayCounts(DayCache[dict[str, int]]):
    """A room's event counts per UTC day and type, for the calendar."""

    def __init__(self, max_days: int = 50_000) -> None:
        super().__init__(max_days)

    def total(self, known: dict[str, int]) -> int:
        return sum(known.values())

    def empty(self) -> dict[str, int]:
        return {}

    async def read(
        self, conn: asyncpg.Connection, room_id: str, first: date, last: date
    ) -> dict[date, dict[str, int]]:
        fresh: dict[date, dict[str, int]] = {}
        for r in await type_counts(conn, room_id, first, last):
            fresh.setdefault(r["day"], {})[r["type"]] = int(r["n"])
        return fresh
