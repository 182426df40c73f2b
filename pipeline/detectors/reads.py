"""The detectors' reads of stored rows: one statement per batch for every detector but the chat ones
(pipeline.detectors.chat), over merged time ranges.

Each detector (`Read`) is handed, per room, the ranges [t - T, t + T) around the batch's new rows of its
types (merged where they overlap: each stored row is read at most once). In one statement, per detector:
1. ranges whose room has fewer rows of those types, in the UTC hours they overlap (room_hours, through
   `detector_hour_counts()`, exact in this transaction), than a window needs to fire are dropped: a quiet
   room costs one index probe;
2. the rows of the remaining ranges are read through `events_room_time`, and, per subject, counted over
   every frame [t_i, t_i + span] (span: the longest window of the rooms read); only subjects with a frame
   of at least `least_rows` rows come back to Python, where the windows are evaluated exactly.
Both steps are upper bounds (a room-hour count is at least a window's rows; the longest window's frame
holds at least the room's own window's), so nothing that could fire is left out, and normal traffic
returns no rows at all. (One statement, not one per detector: on small batches, as a live worker writes
them, the round trips were most of the detectors' time.)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg

from pipeline.detectors.rules import Rule, Stored

__all__ = ["Read", "hour_counts", "merge_ranges", "read_many"]

_MICROSECOND = timedelta(microseconds=1)

#: One detector's read, as CTEs named with the suffix {n} (several detectors share one statement) over its
#: parameters {p1}..{p5}: the ranges' rooms, starts and ends, the detector's event types, the fewest rows.
#: hot{n} is MATERIALIZED, computed once (it is a handful of rows at most). Inlined, PostgreSQL may join it
#: by nested loop as the inner side, estimating one row of the ranges read, and run the window count again
#: for every row read: quadratic in a busy room's rows. It did so for this read without its ORDER BY, over
#: the ingest benchmark's rows (62 ms instead of 6 for 343 entries; 994 ms for 1,372 with another index).
#: The statement as sent was not seen to, so this is a guard, not a measured gain.
_CTES = """
u{n} AS (
    SELECT * FROM unnest({p1}::text[], {p2}::timestamptz[], {p3}::timestamptz[]) AS u(room_id, lo, hi)
),
c{n} AS (
    SELECT u.* FROM u{n} AS u
      JOIN detector_hour_counts({p1}::text[], {p2}::timestamptz[], {p3}::timestamptz[], {p4}::text[]) AS h
           USING (room_id, lo, hi)
     WHERE h.events >= {p5}
),
r{n} AS (
    SELECT e.room_id, e.retention_class, {subject} AS subject, e.occurred_at, e.event_id, e.actor_id,
           e.target_id, {extra} AS extra, {extra2} AS extra2
      FROM c{n} AS c
     CROSS JOIN LATERAL (
           SELECT * FROM events e0
            WHERE e0.room_id = c.room_id AND e0.occurred_at >= c.lo AND e0.occurred_at < c.hi
              AND e0.event_type = ANY({p4}::text[])
            OFFSET 0) AS e
      {join}
     WHERE true {where}
),
w{n} AS (
    SELECT room_id, subject,
           count(*) OVER (PARTITION BY room_id, subject ORDER BY occurred_at
                          RANGE BETWEEN CURRENT ROW AND INTERVAL '{span} seconds' FOLLOWING) AS n
      FROM r{n}
),
hot{n} AS MATERIALIZED (SELECT DISTINCT room_id, subject FROM w{n} WHERE n >= {p5}),
out{n} AS (SELECT {n} AS read_index, r.* FROM r{n} AS r JOIN hot{n} USING (room_id, subject))"""


@dataclass(frozen=True, slots=True)
class Read:
    """What one detector reads: its rule, the ranges (room, lo, hi), the longest window of the rooms read
    and the fewest rows a window of theirs must hold to fire."""

    rule: Rule
    ranges: Sequence[tuple[str, datetime, datetime]]
    span_seconds: int
    least_rows: int


def _ctes(read: Read, n: int) -> str:
    rule, first = read.rule, 5 * n + 1
    return _CTES.format(
        n=n,
        **{f"p{k}": f"${first + k - 1}" for k in range(1, 6)},
        subject=rule.subject_sql,
        extra=rule.extra_sql,
        extra2=rule.extra2_sql,
        join=rule.join_sql,
        where=rule.where_sql,
        span=int(read.span_seconds),
    )


async def read_many(conn: asyncpg.Connection, reads: Sequence[Read]) -> dict[str, list[Stored]]:
    """Of each detector of `reads`, the stored rows of its subjects that have a frame of its span with at
    least its least rows, within its ranges, ordered by room, subject, occurred_at, event_id; all in one
    statement (one round trip per batch, not one per detector). {detector: rows}."""
    reads = [r for r in reads if r.ranges]
    if not reads:
        return {}
    sql = (
        "WITH "
        + ",".join(_ctes(read, n) for n, read in enumerate(reads))
        + "\n"
        + "\nUNION ALL\n".join(f"SELECT * FROM out{n}" for n in range(len(reads)))
        + "\nORDER BY read_index, room_id, subject, occurred_at, event_id"
    )
    args: list[object] = []
    for read in reads:
        args += [
            [x[0] for x in read.ranges],
            [x[1] for x in read.ranges],
            [x[2] for x in read.ranges],
            list(read.rule.types),
            read.least_rows,
        ]
    out: dict[str, list[Stored]] = {read.rule.name: [] for read in reads}
    for rec in await conn.fetch(sql, *args):
        out[reads[rec[0]].rule.name].append(Stored(*rec[1:]))
    return out


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
