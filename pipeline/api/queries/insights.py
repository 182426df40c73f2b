"""A room's UTC days summarized for insights: events per hour and type, gift credits, top chatters.

Called by ``GET /v1/rooms/{room_id}/insights`` after authorization. Read from the rollups
(`pipeline.storage.rollups`), exact and current on every request: four weeks of the busiest room are a few
thousand hourly rows and each day's top chatters come from an index.

A summary keeps each day's `CHATTERS_KEPT` most active chatters (with the display name they used last
that day): top chatters over several weeks are summed from those, which is exact unless a chatter is
among the top over the weeks without being among any day's `CHATTERS_KEPT` top.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date

import asyncpg

from pipeline.events.contract import EventType
from pipeline.storage import rollups

__all__ = ["CHATTERS_KEPT", "DaySummary", "day_summaries"]

CHATTERS_KEPT = 100


@dataclass(slots=True)
class DaySummary:
    total: int = 0
    #: (UTC hour, event type) -> events
    hourly: dict[tuple[int, str], int] = field(default_factory=dict)
    #: UTC hour -> gift credits
    credits: dict[int, int] = field(default_factory=dict)
    #: the day's most active chatters: actor id -> (messages, display name used last)
    chatters: dict[str, tuple[int, str | None]] = field(default_factory=dict)


async def day_summaries(
    conn: asyncpg.Connection, room_id: str, first: date, last: date
) -> dict[date, DaySummary]:
    """The summary of each UTC day in first..last (inclusive) with activity in the room."""
    out: dict[date, DaySummary] = {}
    for r in await rollups.hourly(conn, room_id, first, last):
        hour = r["hour"].astimezone(UTC)
        summary = out.setdefault(hour.date(), DaySummary())
        n = int(r["n"])
        summary.total += n
        summary.hourly[(hour.hour, r["type"])] = n
        if r["credits"]:
            summary.credits[hour.hour] = summary.credits.get(hour.hour, 0) + int(r["credits"])
    chat = await rollups.top_actors(conn, room_id, sorted(out), EventType.CHAT_MESSAGE, CHATTERS_KEPT)
    for r in chat:
        out.setdefault(r["day"], DaySummary()).chatters[r["actor_id"]] = (int(r["n"]), r["display_name"])
    return out
