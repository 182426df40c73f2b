"""The chat detectors (chat flood, spam wave): the batch's rows from memory, earlier rows read once.

Chat is most of the traffic, so these two do not read the batch's own rows back (the writer hands them
over; they are stored in this transaction). Of the rows stored before it (`ingested_at <> now()`: another
transaction's), one statement reads the chat rows in [t - T, t + T) around the batch's chat rows (T: the
longer of the two windows of the room) and sends back only what could make a window fire, counted in SQL:
- chat flood: the earlier messages of a batch chatter whose earlier and new messages in those ranges
  reach the flood's threshold;
- spam wave: the earlier messages with the same normalized text (`rules.text_key`: md5 of the text with
  ASCII letters folded and ASCII whitespace removed, computed by the same table in SQL and Python) as a
  text of the batch in that room, where the distinct users of the earlier ones plus the new ones reach
  the wave's threshold.
Both counts are upper bounds of any window's (a window is shorter than the ranges read, and holds no more
users than the earlier and the new rows together), so nothing that could fire is left out, and normal
traffic gets no rows back at all. A subject that may fire is evaluated exactly
(pipeline.detectors.windows), every window holding a new row, over the batch's and the earlier rows.
(No hourly rollup prefilter here: a room with chat in the batch has chat in those hours, so it would skip
nothing.)
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
from pipeline.detectors.rules import RULES, Stored, alerts_of, normalized_text_sql, text_key_length
from pipeline.storage.alerts import Alert
from pipeline.storage.batch import (
    ROW_ACTOR_ID,
    ROW_BODY,
    ROW_CLASS,
    ROW_EVENT_ID,
    ROW_OCCURRED_AT,
    ROW_ROOM_ID,
)

__all__ = ["CHAT_DETECTORS", "chat_alerts"]

_CHAT = "chat.message"
#: The detectors this module evaluates, together, over one read.
CHAT_DETECTORS = (P.CHAT_FLOOD, P.SPAM_WAVE)

# $1-$3 the ranges (room, lo, hi); $4-$6 the batch's chatters (room, actor, messages), $7 the fewest
# messages a flood window holds; $8-$10 the batch's texts (room, key, distinct users), $11 the fewest users
# of a wave, $12 the shortest normalized text a wave counts, $13 whether any room runs the spam wave.
_SQL = f"""
WITH u AS (
    SELECT * FROM unnest($1::text[], $2::timestamptz[], $3::timestamptz[]) AS u(room_id, lo, hi)
),
m AS MATERIALIZED (
    SELECT e.room_id, e.retention_class, e.occurred_at, e.event_id, e.actor_id, e.k, e.klen
      FROM u
     CROSS JOIN LATERAL (
           SELECT e.room_id, e.retention_class, e.occurred_at, e.event_id, e.actor_id, md5(n.t) AS k,
                  length(n.t) AS klen
             FROM events e
            CROSS JOIN LATERAL (
                  SELECT CASE WHEN $13::bool THEN {normalized_text_sql} END AS t) AS n
            WHERE e.room_id = u.room_id AND e.occurred_at >= u.lo AND e.occurred_at < u.hi
              AND e.event_type = '{_CHAT}' AND e.ingested_at <> now() AND e.actor_id IS NOT NULL
            OFFSET 0) AS e
),
fb AS (SELECT * FROM unnest($4::text[], $5::text[], $6::int[]) AS b(room_id, actor_id, n)),
fhot AS (
    SELECT m.room_id, m.actor_id FROM m JOIN fb USING (room_id, actor_id)
     GROUP BY m.room_id, m.actor_id, fb.n HAVING count(*) + fb.n >= $7
),
sb AS (SELECT * FROM unnest($8::text[], $9::text[], $10::int[]) AS b(room_id, k, n)),
shot AS (
    SELECT m.room_id, m.k FROM m JOIN sb USING (room_id, k)
     WHERE m.klen >= $12
     GROUP BY m.room_id, m.k, sb.n HAVING count(DISTINCT m.actor_id) + sb.n >= $11
)
SELECT true AS flood, m.room_id, m.retention_class, m.occurred_at, m.event_id, m.actor_id, NULL AS k,
       NULL::int AS klen
  FROM m JOIN fhot USING (room_id, actor_id)
UNION ALL
SELECT false, m.room_id, m.retention_class, m.occurred_at, m.event_id, m.actor_id, m.k, m.klen
  FROM m JOIN shot USING (room_id, k)
"""

Effective = Callable[[str, str, str], P.Effective]


def _uuid(value: Any) -> uuid.UUID:
    return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))


def _stored(r: tuple[Any, ...], subject: str, extra: str | None) -> Stored:
    room, cls, at, actor = r[ROW_ROOM_ID], r[ROW_CLASS], r[ROW_OCCURRED_AT], r[ROW_ACTOR_ID]
    return Stored(room, cls, subject, at, _uuid(r[ROW_EVENT_ID]), actor, None, extra, None)


async def chat_alerts(
    conn: asyncpg.Connection,
    chat_rows: Sequence[tuple[Any, ...]],
    effective: Effective,
    detectors: Sequence[str] = CHAT_DETECTORS,
) -> list[Alert]:
    """The alerts of `detectors` (chat_flood, spam_wave or both) of every window holding one of the batch's
    stored `chat_rows`."""
    flood_on, spam_on = P.CHAT_FLOOD in detectors, P.SPAM_WAVE in detectors
    flood_of: dict[str, P.Effective] = {}
    spam_of: dict[str, P.Effective] = {}
    times: dict[str, list[datetime]] = defaultdict(list)
    # the batch's rows by (room, actor) for the flood; by (room, text key) for the spam wave (with the
    # normalized text's length)
    floods: dict[tuple[str, str], list[tuple[Any, ...]]] = defaultdict(list)
    waves: dict[tuple[str, str], list[tuple[tuple[Any, ...], int]]] = defaultdict(list)
    keys: dict[str, tuple[str, int]] = {}  # body -> (key, normalized length): repeated texts keyed once
    for r in chat_rows:
        room, actor = r[ROW_ROOM_ID], r[ROW_ACTOR_ID]
        if actor is None:
            continue
        flood = flood_of.get(room)
        if flood is None and flood_on:
            flood = flood_of[room] = effective(P.CHAT_FLOOD, r[ROW_CLASS], room)
        spam = spam_of.get(room)
        if spam is None and spam_on:
            spam = spam_of[room] = effective(P.SPAM_WAVE, r[ROW_CLASS], room)
        used = False
        if flood is not None and flood.enabled:
            floods[(room, actor)].append(r)
            used = True
        body = r[ROW_BODY]
        if spam is not None and spam.enabled and body is not None:
            got = keys.get(body)
            if got is None:
                got = keys[body] = text_key_length(body)
            if got[1] >= spam.params["min_text_chars"]:
                waves[(room, got[0])].append((r, got[1]))
                used = True
        if used:
            times[room].append(r[ROW_OCCURRED_AT])
    if not times:
        return []
    flood_rule, spam_rule = RULES[P.CHAT_FLOOD], RULES[P.SPAM_WAVE]
    ranges = []
    for room, ts in times.items():
        span = max(
            e.window_seconds for e in (flood_of.get(room), spam_of.get(room)) if e is not None and e.enabled
        )
        ranges += [(room, lo, hi) for lo, hi in merge_ranges(ts, span)]
    floods_on = [e for e in flood_of.values() if e.enabled]
    waves_on = [e for e in spam_of.values() if e.enabled]
    flood_least = min((flood_rule.least_rows(e.params) for e in floods_on), default=0)
    spam_least = min((spam_rule.least_rows(e.params) for e in waves_on), default=0)
    shortest = min((e.params["min_text_chars"] for e in waves_on), default=0)
    f_args = [(room, actor, len(rows)) for (room, actor), rows in floods.items()]
    s_args = [(room, key, len({r[ROW_ACTOR_ID] for r, _ in rows})) for (room, key), rows in waves.items()]
    records = await conn.fetch(
        _SQL,
        [r[0] for r in ranges],
        [r[1] for r in ranges],
        [r[2] for r in ranges],
        [a[0] for a in f_args],
        [a[1] for a in f_args],
        [a[2] for a in f_args],
        flood_least,
        [a[0] for a in s_args],
        [a[1] for a in s_args],
        [a[2] for a in s_args],
        spam_least,
        shortest,
        bool(waves),
    )
    # the earlier rows that may complete a window, by (flood?, room, subject)
    earlier: dict[tuple[bool, str, str], list[Stored]] = defaultdict(list)
    for rec in records:
        room, actor, is_flood = rec["room_id"], rec["actor_id"], rec["flood"]
        subject = actor if is_flood else rec["k"]
        extra = None if is_flood else str(rec["klen"])
        at, event_id, cls = rec["occurred_at"], rec["event_id"], rec["retention_class"]
        earlier[(is_flood, room, subject)].append(
            Stored(room, cls, subject, at, event_id, actor, None, extra, None)
        )
    found: list[Alert] = []
    need_flood = {room: flood_rule.least_rows(e.params) for room, e in flood_of.items()}
    for (room, actor), rows in floods.items():
        old = earlier.get((True, room, actor), [])
        if len(rows) + len(old) >= need_flood[room]:  # else no window of this chatter can fire
            new = [_stored(r, actor, None) for r in rows]
            found += _evaluate(P.CHAT_FLOOD, room, actor, new, old, flood_of[room])
    need_spam = {room: spam_rule.least_rows(e.params) for room, e in spam_of.items()}
    for (room, key), pairs in waves.items():
        old = earlier.get((False, room, key), [])
        if len(pairs) + len(old) >= need_spam[room]:  # else no window of this text can fire
            new = [_stored(r, key, str(length)) for r, length in pairs]
            found += _evaluate(P.SPAM_WAVE, room, key, new, old, spam_of[room])
    return found


def _evaluate(
    name: str, room: str, subject: str, new: list[Stored], old: list[Stored], eff: P.Effective
) -> list[Alert]:
    """The alerts of one subject's windows holding a new row, over its new and earlier rows."""
    rows = new + old
    rows.sort(key=lambda s: (s.occurred_at, s.event_id))
    return alerts_of(name, room, subject, rows, eff, {str(s.event_id) for s in new}, {})
