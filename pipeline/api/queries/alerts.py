"""A room's alerts as the API reads them: a page, the newest naming a user, counts per day and per room,
and the ones a live tail has not sent yet.

Called by the route handlers after authorization (`alerts`, `users`, `days`, `rooms`, `tail`). The table
and its writer are `pipeline.storage.alerts` (migration 0017): the reads it offers are used as they are;
the ones only the API needs (a live tail's, the rooms list's) stand here, on the same columns and indexes
(`alerts_room_time` (room_id, window_start); `alerts_users`, GIN on users).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import date, datetime
from typing import Any

import asyncpg

from pipeline.storage import alerts as stored

__all__ = [
    "AlertPosition",
    "alert_json",
    "day_counts",
    "raised_since",
    "recent_counts",
    "room_alerts",
    "user_alerts",
]

#: Where a page of alerts ends: (window_start, alert_id) of its last alert (a cursor carries it).
AlertPosition = tuple[datetime, uuid.UUID]
_COLUMNS = ", ".join(stored.ALERT_COLUMNS)


def alert_json(record: asyncpg.Record) -> dict[str, Any]:
    """An alert as the API returns it: its columns (counts as stored; event ids, the window's evidence)."""
    return dict(record.items())


async def room_alerts(
    conn: asyncpg.Connection,
    room_id: str,
    since: datetime,
    until: datetime,
    detectors: Sequence[str] | None,
    before: AlertPosition | None,
    limit: int,
) -> list[asyncpg.Record]:
    """Up to `limit` + 1 of the room's alerts whose window starts in [since, until), newest first, after
    `before` (the extra one tells the caller there is a next page)."""
    return await stored.room_alerts(
        conn, room_id, since, until, detectors=detectors, before=before, limit=limit + 1
    )


async def user_alerts(
    conn: asyncpg.Connection, room_id: str, user_id: str, limit: int
) -> list[asyncpg.Record]:
    """The newest `limit` alerts of the room naming the user among their users."""
    return await stored.user_alerts(conn, room_id, user_id, limit=limit)


async def day_counts(
    conn: asyncpg.Connection, room_id: str, first: date, last: date
) -> dict[date, dict[str, int]]:
    """{UTC day: {detector: alerts}} for the days first..last with any."""
    out: dict[date, dict[str, int]] = {}
    for r in await stored.day_counts(conn, room_id, first, last):
        out.setdefault(r["day"], {})[r["detector"]] = int(r["n"])
    return out


async def recent_counts(conn: asyncpg.Connection, rooms: Sequence[str], since: datetime) -> dict[str, int]:
    """{room: alerts whose window started since `since`} of the rooms with any (the rooms list's badges)."""
    rows = await conn.fetch(
        "SELECT room_id, count(*)::int AS n FROM alerts WHERE room_id = ANY($1::text[]) "
        "AND window_start >= $2 AND day >= ($2 AT TIME ZONE 'UTC')::date - 1 GROUP BY room_id",
        list(rooms),
        since,
    )
    return {r["room_id"]: int(r["n"]) for r in rows}


async def raised_since(
    conn: asyncpg.Connection,
    room_id: str,
    window_since: datetime,
    after: tuple[datetime, uuid.UUID],
    limit: int,
) -> list[asyncpg.Record]:
    """The room's alerts stored after `after` (raised_at, alert_id), in that order, whose window started
    since `window_since` (a live tail's poll: the alerts its events raised)."""
    return list(
        await conn.fetch(
            f"""SELECT {_COLUMNS} FROM alerts
                 WHERE room_id = $1 AND window_start >= $2 AND day >= ($2 AT TIME ZONE 'UTC')::date - 1
                   AND (raised_at, alert_id) > ($3, $4)
                 ORDER BY raised_at, alert_id LIMIT $5""",
            room_id,
            window_since,
            after[0],
            after[1],
            limit,
        )
    )
