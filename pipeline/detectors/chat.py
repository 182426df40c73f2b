"""The chat detectors (chat flood, spam wave): the batch's rows from memory, earlier rows read sparingly.

Chat is most of the traffic, so these two do not read the batch's own rows back (the writer hands them
over; they are stored in this transaction) and read, of the rows stored before it (`ingested_at <> now()`:
another transaction's) in [t - T, t + T) around the batch's chat rows, only what could make a window fire:
- chat flood: the earlier messages of the batch's chatters, and only for a chatter whose earlier and new
  messages in those ranges reach the threshold (counted in SQL: nothing comes back for normal traffic);
- spam wave: the earlier messages whose normalized text starts like one of the batch's texts in that room
  (the first 8 normalized characters, computed from the first 32 characters of the text: cheap for a wall
  of text), keyed in Python exactly as the batch's (`rules.text_key`).
A subject is evaluated (pipeline.detectors.windows) when its rows can reach the threshold; every window
holding a new row is then evaluated exactly, over the batch's and the earlier rows together. (No hourly
rollup prefilter here: a room with chat in the batch has chat in those hours, so it would skip nothing.)
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

import asyncpg

from pipeline.detectors import params as P
from pipeline.detectors.reads import merge_ranges
from pipeline.detectors.rules import RULES, Stored, alerts_of, text_key
from pipeline.storage.alerts import Alert
from pipeline.storage.batch import (
    ROW_ACTOR_ID,
    ROW_BODY,
    ROW_CLASS,
    ROW_EVENT_ID,
    ROW_OCCURRED_AT,
    ROW_ROOM_ID,
)

__all__ = ["chat_alerts"]

_CHAT = "chat.message"
_WS = "chr(32) || chr(9) || chr(10) || chr(11) || chr(12) || chr(13)"
_UPPER = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
#: characters of the normalized text a prefix filter compares
PREFIX_CHARS = 8

_EARLIER = f"""
WITH u AS (
    SELECT * FROM unnest($1::text[], $2::timestamptz[], $3::timestamptz[]) AS u(room_id, lo, hi)
),
c AS (SELECT * FROM u WHERE $4::int > 0),
m AS (
    SELECT e.room_id, e.retention_class, e.occurred_at, e.event_id, e.actor_id, e.body, e.p
      FROM c
     CROSS JOIN LATERAL (
           SELECT e0.*, {{prefix}} AS p FROM events e0
            WHERE e0.room_id = c.room_id AND e0.occurred_at >= c.lo AND e0.occurred_at < c.hi
              AND e0.event_type = '{_CHAT}' AND e0.ingested_at <> now() AND e0.actor_id IS NOT NULL
            OFFSET 0) AS e
)
"""
_FLOOD_SQL = (
    _EARLIER.format(prefix="NULL::text")
    + """,
b AS (SELECT * FROM unnest($5::text[], $6::text[], $7::int[]) AS b(room_id, actor_id, n)),
hot AS (
    SELECT m.room_id, m.actor_id FROM m JOIN b USING (room_id, actor_id)
     GROUP BY m.room_id, m.actor_id, b.n HAVING count(*) + b.n >= $4
)
SELECT m.room_id, m.retention_class, m.occurred_at, m.event_id, m.actor_id, NULL::text AS body
  FROM m JOIN hot USING (room_id, actor_id)
"""
)
_SPAM_SQL = (
    _EARLIER.format(
        prefix=f"translate(left(ltrim(e0.body, {_WS}), 32), '{_UPPER}' || {_WS}, '{_UPPER.lower()}')"
    )
    + f"""
SELECT m.room_id, m.retention_class, m.occurred_at, m.event_id, m.actor_id, m.body
  FROM m
 WHERE m.body IS NOT NULL AND length(m.body) >= $7
   AND (length(m.p) < {PREFIX_CHARS}
        OR (m.room_id, left(m.p, {PREFIX_CHARS})) IN (SELECT * FROM unnest($5::text[], $6::text[])))
"""
)

Effective = Callable[[str, str, str], P.Effective]


def _uuid(value: Any) -> uuid.UUID:
    return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))


_SPACES = " \t\n\v\f\r"
_FOLD_ASCII = str.maketrans({**{c: c.lower() for c in _UPPER}, **dict.fromkeys(_SPACES)})


def text_prefix(body: str) -> str:
    """The first PREFIX_CHARS normalized characters as the SQL above computes them (from the first 32
    characters after leading whitespace); shorter than PREFIX_CHARS: unknown (whitespace in the way)."""
    return body.lstrip(_SPACES)[:32].translate(_FOLD_ASCII)[:PREFIX_CHARS]


def _stored(r: tuple[Any, ...], subject: str, extra: str | None) -> Stored:
    room, cls, at, actor = r[ROW_ROOM_ID], r[ROW_CLASS], r[ROW_OCCURRED_AT], r[ROW_ACTOR_ID]
    return Stored(room, cls, subject, at, _uuid(r[ROW_EVENT_ID]), actor, None, extra, None)


async def chat_alerts(
    conn: asyncpg.Connection, name: str, chat_rows: Sequence[tuple[Any, ...]], effective: Effective
) -> list[Alert]:
    """The alerts of detector `name` (chat_flood or spam_wave) of every window holding one of the batch's
    stored `chat_rows`."""
    spam = name == P.SPAM_WAVE
    settings: dict[str, P.Effective] = {}
    times: dict[str, list[datetime]] = defaultdict(list)
    # the batch's rows by (room, actor) for the flood, by (room, text prefix) for the spam wave
    groups: dict[tuple[str, str], list[tuple[Any, ...]]] = defaultdict(list)
    for r in chat_rows:
        room = r[ROW_ROOM_ID]
        if r[ROW_ACTOR_ID] is None:
            continue
        eff = settings.get(room)
        if eff is None:
            eff = settings[room] = effective(name, r[ROW_CLASS], room)
        if not eff.enabled:
            continue
        if spam:
            body = r[ROW_BODY]
            if body is None:
                continue
            prefix = text_prefix(body)
            if len(prefix) < PREFIX_CHARS:  # whitespace in the way, or a short text: the whole text's
                norm = text_key(body)[1]
                if len(norm) < eff.params["min_text_chars"]:
                    continue
                prefix = norm[:PREFIX_CHARS]
            groups[(room, prefix)].append(r)
        else:
            groups[(room, r[ROW_ACTOR_ID])].append(r)
        times[room].append(r[ROW_OCCURRED_AT])
    if not groups:
        return []
    rule = RULES[name]
    ranges = [
        (room, lo, hi)
        for room, ts in times.items()
        for lo, hi in merge_ranges(ts, settings[room].window_seconds)
    ]
    least = min(rule.least_rows(settings[room].params) for room in times)
    if spam:
        pairs = sorted(g for g in groups if len(g[1]) == PREFIX_CHARS)
        # a text shorter than min_text_chars never counts (its normalized form is no longer)
        shortest = min(settings[room].params["min_text_chars"] for room in times)
        extra_args: list[Any] = [[p[0] for p in pairs], [p[1] for p in pairs], shortest]
        sql = _SPAM_SQL
    else:
        counts = sorted((room, actor, len(rows)) for (room, actor), rows in groups.items())
        extra_args = [[c[0] for c in counts], [c[1] for c in counts], [c[2] for c in counts]]
        sql = _FLOOD_SQL
    records = await conn.fetch(
        sql, [r[0] for r in ranges], [r[1] for r in ranges], [r[2] for r in ranges], least, *extra_args
    )
    # earlier rows by (room, actor) or (room, the first PREFIX_CHARS characters of the normalized text)
    earlier: dict[tuple[str, str], list[asyncpg.Record]] = defaultdict(list)
    for rec in records:
        if spam:
            group = text_prefix(rec["body"])
            if len(group) < PREFIX_CHARS:
                group = text_key(rec["body"])[1][:PREFIX_CHARS]
        else:
            group = rec["actor_id"]
        earlier[(rec["room_id"], group)].append(rec)
    found: list[Alert] = []
    for (room, group), new_rows in groups.items():
        eff = settings[room]
        need = rule.least_rows(eff.params)
        old = earlier.get((room, group), [])
        if len(new_rows) + len(old) < need:
            continue  # not enough rows for any window of these subjects to fire
        by_subject: dict[str, list[Stored]] = defaultdict(list)
        new_ids: set[str] = set()
        for r in new_rows:
            if spam:
                subject, norm = text_key(r[ROW_BODY])
                if len(norm) < eff.params["min_text_chars"]:
                    continue
                s = _stored(r, subject, str(len(norm)))
            else:
                s = _stored(r, r[ROW_ACTOR_ID], None)
            by_subject[s.subject].append(s)
            new_ids.add(str(s.event_id))
        for rec in old:
            if spam:
                subject, norm = text_key(rec["body"])
                extra: str | None = str(len(norm))
            else:
                subject, extra = rec["actor_id"], None
            if subject in by_subject:
                at, actor = rec["occurred_at"], rec["actor_id"]
                by_subject[subject].append(
                    Stored(
                        room, rec["retention_class"], subject, at, rec["event_id"], actor, None, extra, None
                    )
                )
        for subject, rows in by_subject.items():
            if len(rows) < need:
                continue
            rows.sort(key=lambda s: (s.occurred_at, s.event_id))
            found += alerts_of(name, room, subject, rows, eff, new_ids, {})
    return found
