"""A room's UTC days summarized for insights: events per hour and type, gift credits, top chatters.

Called by ``GET /v1/rooms/{room_id}/insights`` after authorization. Four weeks of a busy room are hundreds
of thousands of rows spread over every page of their day partitions (seconds to read), while a past day
rarely changes. So a day is summarized once per process and reused while its total is unchanged
(`queries.days.DayCache`): a late event, an erasure, a deletion or a dropped day changes a day's total and
makes it summarized again. Today is always summarized afresh.

A summary keeps each day's `CHATTERS_KEPT` most active chatters (with the display name they used last
that day): top chatters over several weeks are summed from those, which is exact unless a chatter is
among the top over the weeks without being among any day's `CHATTERS_KEPT` top. Summaries hold counts
and the top chatters' ids and names, never rows; the cache is per process, keyed by room, bounded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta

import asyncpg

from pipeline.api.queries.days import DayCache
from pipeline.storage.partitions import day_start

__all__ = ["CHATTERS_KEPT", "DaySummaries", "DaySummary"]

CHATTERS_KEPT = 100

_HOURS_SQL = """
SELECT (occurred_at AT TIME ZONE 'UTC')::date AS day,
       extract(hour FROM occurred_at AT TIME ZONE 'UTC')::int AS hour, event_type AS type, count(*) AS n,
       sum(CASE WHEN event_type = 'gift.sent' THEN (payload->>'credits')::bigint END) AS credits
  FROM events
 WHERE room_id = $1 AND occurred_at >= $2 AND occurred_at < $3
 GROUP BY 1, 2, 3
"""
_CHATTERS_SQL = """
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


@dataclass(slots=True)
class DaySummary:
    total: int = 0
    #: (UTC hour, event type) -> events
    hourly: dict[tuple[int, str], int] = field(default_factory=dict)
    #: UTC hour -> gift credits
    credits: dict[int, int] = field(default_factory=dict)
    #: the day's most active chatters: actor id -> (messages, display name used last)
    chatters: dict[str, tuple[int, str | None]] = field(default_factory=dict)


class DaySummaries(DayCache[DaySummary]):
    """The summary of each UTC day of a room (`days()`), cached per process."""

    def __init__(self, max_days: int = 20_000) -> None:
        super().__init__(max_days)

    def total(self, known: DaySummary) -> int:
        return known.total

    def empty(self) -> DaySummary:
        return DaySummary()

    async def read(
        self, conn: asyncpg.Connection, room_id: str, first: date, last: date
    ) -> dict[date, DaySummary]:
        since, until = day_start(first), day_start(last) + timedelta(days=1)
        out: dict[date, DaySummary] = {}
        for r in await conn.fetch(_HOURS_SQL, room_id, since, until):
            summary = out.setdefault(r["day"], DaySummary())
            n = int(r["n"])
            summary.total += n
            summary.hourly[(r["hour"], r["type"])] = n
            if r["credits"]:
                summary.credits[r["hour"]] = summary.credits.get(r["hour"], 0) + int(r["credits"])
        for r in await conn.fetch(_CHATTERS_SQL, room_id, since, until, CHATTERS_KEPT):
            out.setdefault(r["day"], DaySummary()).chatters[r["actor_id"]] = (int(r["n"]), r["display_name"])
        return out
