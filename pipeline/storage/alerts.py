"""Alerts (migration 0017): unusual activity the detectors flagged in a room; stored and read here.

One row per (room, detector, subject, window_key), partitioned like `events` (alerts_<class>, then
alerts_<class>_pYYYYMMDD by `day`, the UTC day of window_key), so retention drops a day's alerts with its
day of events (`day_partitions`, pipeline.retention.enforce).

- `subject`: what the alert is about: a user id (chat flood, moderator abuse), a text hash (spam wave),
  "sender>recipient" (gift burst), a kind of change (permission churn), '' (raid: the room).
- `window_key`: the start of the fixed bucket, as long as the detector's window, that holds the start of
  the first window over the threshold; `window_start`..`window_end`: that window (event time).
- `users`: the users involved; `counts`: what was counted, and the threshold (`{"n": 12, "limit": 10}`);
  `event_ids`: the events of the window. `alert_id`: md5 of the key, the same on every run.

Who writes: only the worker's detectors (pipeline.detectors), through `insert`, inside the transaction that
stores the batch's rows and its offsets of record. The key is a function of the stored rows only, and the
insert is ON CONFLICT DO NOTHING, so a replay, a crash, a rebalance or another batching store each alert
once; the first window found for a key is the one kept (a later, longer window in the same bucket does not
replace it: logs and their alerts are appended, never edited). A trigger queues each stored alert for the
alerts topic in the same transaction (alert_outbox, relayed by pipeline.ingest.alert_relay).
An authorized deletion or erasure of `events` rows deletes every alert citing one of them (migration 0017).

Who reads: the API (a room's alerts, one alert, a user's alerts in a room, per-day counts for badges),
once authorized for the room, and the detectors' tests. All reads go through the room's index.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import asyncpg
import orjson

__all__ = [
    "ALERT_COLUMNS",
    "TABLE",
    "Alert",
    "alert",
    "alert_keys",
    "day_counts",
    "day_partitions",
    "insert",
    "room_alerts",
    "user_alerts",
]

TABLE = "alerts"
#: What the read functions return, in this order.
ALERT_COLUMNS = (
    "alert_id",
    "retention_class",
    "day",
    "room_id",
    "detector",
    "subject",
    "window_key",
    "window_start",
    "window_end",
    "users",
    "counts",
    "event_ids",
    "raised_at",
)
_COLS = ", ".join(ALERT_COLUMNS)


@dataclass(frozen=True, slots=True)
class Alert:
    """One alert as a detector found it (before it is stored)."""

    retention_class: str
    room_id: str
    detector: str
    subject: str
    window_key: datetime
    window_start: datetime
    window_end: datetime
    users: tuple[str, ...]
    counts: dict[str, Any]
    event_ids: tuple[uuid.UUID, ...]

    @property
    def day(self) -> date:
        return self.window_key.date()  # window_key is UTC (pipeline.detectors.windows)

    @property
    def key(self) -> tuple[str, str, str, datetime]:
        return (self.room_id, self.detector, self.subject, self.window_key)


_INSERT_SQL = f"""
INSERT INTO alerts (retention_class, day, room_id, detector, subject, window_key, window_start, window_end,
                    users, counts, event_ids, alert_id)
SELECT a.cls, a.day, a.room_id, a.detector, a.subject, a.window_key, a.window_start, a.window_end,
       ARRAY(SELECT jsonb_array_elements_text(a.users)), a.counts,
       ARRAY(SELECT jsonb_array_elements_text(a.event_ids)::uuid),
       md5(a.room_id || chr(31) || a.detector || chr(31) || a.subject || chr(31)
           || extract(epoch FROM a.window_key)::text)::uuid
  FROM unnest($1::text[], $2::date[], $3::text[], $4::text[], $5::text[], $6::timestamptz[],
              $7::timestamptz[], $8::timestamptz[], $9::jsonb[], $10::jsonb[], $11::jsonb[])
       AS a(cls, day, room_id, detector, subject, window_key, window_start, window_end, users, counts,
            event_ids)
 ORDER BY a.room_id, a.detector, a.subject, a.window_key
ON CONFLICT DO NOTHING
RETURNING {_COLS}
"""


async def insert(conn: asyncpg.Connection, alerts: Sequence[Alert]) -> list[asyncpg.Record]:
    """Store `alerts` (inside the batch's transaction); return the rows stored now (keys stored before,
    by this run or another, are left as they are and not returned). Makes a missing day's alert table
    (a window bucket that starts on a day with no events of the class)."""
    if not alerts:
        return []
    for cls, day in sorted({(a.retention_class, a.day) for a in alerts}):
        await conn.execute("SELECT make_alert_partitions($1, $2)", cls, day)
    cols: list[list[Any]] = [[] for _ in range(11)]
    for a in alerts:
        values = (
            a.retention_class,
            a.day,
            a.room_id,
            a.detector,
            a.subject,
            a.window_key,
            a.window_start,
            a.window_end,
            orjson.dumps(list(a.users)),
            orjson.dumps(a.counts),
            orjson.dumps([str(e) for e in a.event_ids]),
        )
        for col, value in zip(cols, values, strict=True):
            col.append(value)
    return list(await conn.fetch(_INSERT_SQL, *cols))


def day_partitions(retention_class: str, day: date) -> list[tuple[str, str, str]]:
    """(table, its class's table, the day's partition) of the alert table of a class's UTC day."""
    return [(TABLE, f"{TABLE}_{retention_class}", f"{TABLE}_{retention_class}_p{day:%Y%m%d}")]


async def room_alerts(
    conn: asyncpg.Connection,
    room_id: str,
    since: datetime,
    until: datetime,
    *,
    detectors: Sequence[str] | None = None,
    limit: int = 100,
    before: tuple[datetime, uuid.UUID] | None = None,
) -> list[asyncpg.Record]:
    """A room's alerts whose window starts in [since, until), newest first (window_start DESC, alert_id
    DESC), at most `limit`; `detectors` narrows to those; `before` = (window_start, alert_id) of the last
    row of the previous page (keyset paging)."""
    return list(
        await conn.fetch(
            f"""SELECT {_COLS} FROM alerts
                 WHERE room_id = $1 AND window_start >= $2 AND window_start < $3
                   AND ($4::text[] IS NULL OR detector = ANY($4::text[]))
                   AND ($5::timestamptz IS NULL OR (window_start, alert_id) < ($5, $6::uuid))
                 ORDER BY window_start DESC, alert_id DESC LIMIT $7""",
            room_id,
            since,
            until,
            list(detectors) if detectors is not None else None,
            before[0] if before else None,
            before[1] if before else None,
            limit,
        )
    )


async def alert(conn: asyncpg.Connection, room_id: str, alert_id: uuid.UUID) -> asyncpg.Record | None:
    """One alert of a room by id (None: no such alert in that room)."""
    row: asyncpg.Record | None = await conn.fetchrow(
        f"SELECT {_COLS} FROM alerts WHERE room_id = $1 AND alert_id = $2", room_id, alert_id
    )
    return row


async def user_alerts(
    conn: asyncpg.Connection, room_id: str, user_id: str, *, limit: int = 100
) -> list[asyncpg.Record]:
    """The alerts of a room that name `user_id` among their users, newest first, at most `limit`."""
    return list(
        await conn.fetch(
            f"""SELECT {_COLS} FROM alerts WHERE room_id = $1 AND users @> ARRAY[$2::text]
                 ORDER BY window_start DESC, alert_id DESC LIMIT $3""",
            room_id,
            user_id,
            limit,
        )
    )


async def day_counts(conn: asyncpg.Connection, room_id: str, first: date, last: date) -> list[asyncpg.Record]:
    """(day, detector, n): a room's alerts per UTC day (of window_start) and detector, first..last
    inclusive (the console's badges on the calendar and the day view)."""
    return list(
        await conn.fetch(
            """SELECT (window_start AT TIME ZONE 'UTC')::date AS day, detector, count(*)::int AS n
                 FROM alerts
                WHERE room_id = $1 AND day BETWEEN $2::date - 1 AND $3
                  AND (window_start AT TIME ZONE 'UTC')::date BETWEEN $2 AND $3
                GROUP BY 1, 2 ORDER BY 1, 2""",
            room_id,
            first,
            last,
        )
    )


async def alert_keys(
    conn: asyncpg.Connection, room_id: str | None = None
) -> set[tuple[str, str, str, datetime]]:
    """{(room_id, detector, subject, window_key)} of every stored alert (of one room): what tests and the
    detectors' measurements compare."""
    rows = await conn.fetch(
        "SELECT room_id, detector, subject, window_key FROM alerts WHERE $1::text IS NULL OR room_id = $1",
        room_id,
    )
    return {(r["room_id"], r["detector"], r["subject"], r["window_key"]) for r in rows}
