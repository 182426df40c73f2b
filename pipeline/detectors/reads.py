"""The detectors' reads of stored rows: one statement per detector per batch, over merged time ranges.

`read_candidates` is handed, per room, the ranges [t - T, t + T) around the batch's new rows of the
detector's types (merged where they overlap: each stored row is read at most once). In one statement:
1. ranges whose room has fewer rows of those types, in the UTC hours they overlap (room_hours, through
   `detector_hour_counts()`, exact in this transaction), than a window needs to fire are dropped: a quiet
   room costs one index probe;
2. the rows of the remaining ranges are read through `events_room_time`, and, per subject, counted over
   every frame [t_i, t_i + span] (span: the longest window of the rooms read); only subjects with a frame
   of at least `least_rows` rows come back to Python, where the windows are evaluated exactly.
Both steps are upper bounds (a room-hour count is at least a window's rows; the longest window's frame
holds at least the room's own window's), so nothing that could fire is left out, and normal traffic
returns no rows at all.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

import asyncpg

from pipeline.detectors.rules import Rule, Stored

__all__ = ["hour_counts", "merge_ranges", "read_candidates"]

_MICROSECOND = timedelta(microseconds=1)

_READ_SQL = """
WITH u AS (
    SELECT * FROM unnest($1::text[], $2::timestamptz[], $3::timestamptz[]) AS u(room_id, lo, hi)
),
c AS (
    SELECT u.* FROM u
      JOIN detector_hour_counts($1::text[], $2::timestamptz[], $3::timestamptz[], $4::text[]) AS h
           USING (room_id, lo, hi)
     WHERE h.events >= $5
),
r AS (
    SELECT e.room_id, e.retention_class, {subject} AS subject, e.occurred_at, e.event_id, e.actor_id,
           e.target_id, {extra} AS extra, {extra2} AS extra2
      FROM c
     CROSS JOIN LATERAL (
           SELECT * FROM events e0
            WHERE e0.room_id = c.room_id AND e0.occurred_at >= c.lo AND e0.occurred_at < c.hi
              AND e0.event_type = ANY($4::text[])
            OFFSET 0) AS e
      {join}
     WHERE true {where}
),
w AS (
    SELECT room_id, subject,
           count(*) OVER (PARTITION BY room_id, subject ORDER BY occurred_at
                          RANGE BETWEEN CURRENT ROW AND INTERVAL '{span} seconds' FOLLOWING) AS n
      FROM r
),
hot AS (SELECT DISTINCT room_id, subject FROM w WHERE n >= $5)
SELECT r.* FROM r JOIN hot USING (room_id, subject)
 ORDER BY r.room_id, r.subject, r.occurred_at, r.event_id
"""


def merge_ranges(times: Sequence[datetime], window_seconds: int) -> list[tuple[datetime, datetime]]:
    """[t - T, t + T) around each of `times`, merged where they touch; sorted."""
    span = timedelta(seconds=window_seconds)
    after = span + _MICROSECOND
    gap = span + after  # two rows closer than this give overlapping ranges
    ordered = sorted(times)
    out: list[tuple[datetime, datetime]] = []
    start = last = ordered[0]
    for t in ordered[1:]:
        if t - last > gap:
            out.append((start - span, last + after))
            start = t
        last = t
    out.append((start - span, last + after))
    return out


async def read_candidates(
    conn: asyncpg.Connection,
    rule: Rule,
    ranges: Sequence[tuple[str, datetime, datetime]],
    span_seconds: int,
    least_rows: int,
) -> list[Stored]:
    """The stored rows of `rule`'s subjects that have a frame of `span_seconds` with at least `least_rows`
    rows, within `ranges` (room, lo, hi), ordered by room, subject, occurred_at, event_id."""
    if not ranges:
        return []
    sql = _READ_SQL.format(
        subject=rule.subject_sql,
        extra=rule.extra_sql,
        extra2=rule.extra2_sql,
        join=rule.join_sql,
        where=rule.where_sql,
        span=int(span_seconds),
    )
    rows = await conn.fetch(
        sql,
        [r[0] for r in ranges],
        [r[1] for r in ranges],
        [r[2] for r in ranges],
        list(rule.types),
        least_rows,
    )
    return [Stored(*r) for r in rows]


async def hour_counts(
    conn: asyncpg.Connection, ranges: Sequence[tuple[str, datetime, datetime]], types: Sequence[str]
) -> dict[tuple[str, datetime, datetime], int]:
    """{(room, lo, hi): the room's events of `types` in the UTC hours [lo, hi) overlaps} for `ranges`."""
    if not ranges:
        return {}
    rows = await conn.fetch(
        """SELECT room_id, lo, hi, events
             FROM detector_hour_counts($1::text[], $2::timestamptz[], $3::timestamptz[], $4::text[])""",
        [r[0] for r in ranges],
        [r[1] for r in ranges],
        [r[2] for r in ranges],
        list(types),
    )
    return {(r["room_id"], r["lo"], r["hi"]): int(r["events"]) for r in rows}
