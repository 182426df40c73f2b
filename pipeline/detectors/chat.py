"""The chat detectors (chat flood, spam wave): the batch's rows from memory, earlier rows read only when
they may make a window fire.

Chat is most of the traffic, so these two do not read the batch's own rows back (the writer hands them
over; they are stored in this transaction). What they need of the rows stored before it:
1. First, from the worker's memory of recent room-hours (pipeline.detectors.recent), trusted for a room
   only when `room_hours` (exact in this transaction) says it holds every earlier row of the hours the
   room's ranges touch: how many earlier rows the batch's chatters and texts have in [t - T, t + T). A
   room where neither count, with the batch's, can reach a threshold is done: nothing can fire there, and
   nothing is read. This is most rooms of normal traffic, and every batch of a live worker.
2. The other rooms (a window may fire, or their hours are not proven complete: another worker wrote
   there, this one just started) are read in one statement, over the rows of other transactions
   (`ingested_at <> now()`) in their ranges (T: the longer of the two windows of the room); it sends back
   only what could make a window fire, counted in SQL:
   - chat flood: the earlier messages of a batch chatter whose earlier and new messages in those ranges
     reach the flood's threshold;
   - spam wave: the earlier messages with the same normalized text (`rules.text_key`: md5 of the text
     with ASCII letters folded and ASCII whitespace removed, computed by the same table in SQL and
     Python) as a text of the batch in that room, where the distinct users of the earlier ones plus the
     new ones reach the wave's threshold.
   Hours not proven complete are filled from storage for the next batches (bounded per batch).
Every count is an upper bound of any window's (a window is shorter than the ranges counted, and holds no
more users than rows), so nothing that could fire is left out. A subject that may fire is evaluated
exactly (pipeline.detectors.windows), every window holding a new row, over the batch's and the earlier
rows read from storage: the alerts are a function of the stored rows, the memory only saves reads.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from pipeline.detectors import params as P
from pipeline.detectors.reads import hour_counts, merge_ranges
from pipeline.detectors.recent import HourKey, Hours, RecentChat, RecentHour, hour_of
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

__all__ = ["CHAT_DETECTORS", "ChatBatch", "prepare_chat", "prepared_chat_alerts"]

_CHAT = "chat.message"
_HOUR = timedelta(hours=1)
#: The detectors this module evaluates, together, over one read.
CHAT_DETECTORS = (P.CHAT_FLOOD, P.SPAM_WAVE)

# $1-$3 the ranges (room, lo, hi); $4-$6 the batch's chatters (room, actor, messages), $7 the fewest
# messages a flood window holds; $8-$10 the batch's texts (room, key, distinct users), $11 the fewest users
# of a wave, $12 the shortest normalized text a wave counts, $13 whether any room runs the spam wave.
# fhot and shot are MATERIALIZED for the reason reads.py gives for its hot{n}: never re-run per row of m.
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
fhot AS MATERIALIZED (
    SELECT m.room_id, m.actor_id FROM m JOIN fb USING (room_id, actor_id)
     GROUP BY m.room_id, m.actor_id, fb.n HAVING count(*) + fb.n >= $7
),
sb AS (SELECT * FROM unnest($8::text[], $9::text[], $10::int[]) AS b(room_id, k, n)),
shot AS MATERIALIZED (
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


@dataclass(slots=True)
class ChatBatch:
    """The batch's chat rows as the two detectors count them (`prepare_chat`): per room the parameters in
    effect and the times of the rows they count; the rows by (room, actor) for the flood and by (room,
    text key) for the spam wave (with the normalized text's length); every chat row per (room, UTC hour)."""

    flood_of: dict[str, P.Effective] = field(default_factory=dict)
    spam_of: dict[str, P.Effective] = field(default_factory=dict)
    times: dict[str, list[datetime]] = field(default_factory=lambda: defaultdict(list))
    floods: dict[tuple[str, str], list[tuple[Any, ...]]] = field(default_factory=lambda: defaultdict(list))
    waves: dict[tuple[str, str], list[tuple[tuple[Any, ...], int]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    batch_hours: dict[HourKey, int] = field(default_factory=lambda: defaultdict(int))


#: chat rows prepared between two yields to the event loop (`prepare_chat`): a read sent before it goes on
#: meanwhile (pipeline.detectors.engine sends the other detectors' read first)
YIELD_EVERY_ROWS = 2_000


async def prepare_chat(
    chat_rows: Sequence[tuple[Any, ...]],
    effective: Effective,
    detectors: Sequence[str] = CHAT_DETECTORS,
    recent: RecentChat | None = None,
) -> ChatBatch:
    """Python's part of the chat detectors, no statement: key each text, group the rows, stage them in
    `recent` (installed if the batch commits). Yields to the event loop now and then, so that a statement
    sent before runs on in PostgreSQL meanwhile."""
    flood_on, spam_on = P.CHAT_FLOOD in detectors, P.SPAM_WAVE in detectors
    out = ChatBatch()
    flood_of, spam_of, times, floods, waves = out.flood_of, out.spam_of, out.times, out.floods, out.waves
    batch_hours = out.batch_hours
    keys: dict[str, tuple[str, int]] = {}  # body -> (key, normalized length): repeated texts keyed once
    hours = Hours()
    staged = recent.staged_rows() if recent is not None else None
    # per room: (flood on, the spam wave's shortest text if on, the room's counted times); made once per
    # room, so the loop below does one lookup per row for all of them
    per_room: dict[str, tuple[bool, int | None, list[datetime]]] = {}
    for start in range(0, len(chat_rows), YIELD_EVERY_ROWS):
        if start:
            await asyncio.sleep(0)
        for r in chat_rows[start : start + YIELD_EVERY_ROWS]:
            room, actor, body, at = r[ROW_ROOM_ID], r[ROW_ACTOR_ID], r[ROW_BODY], r[ROW_OCCURRED_AT]
            got = None
            if body is not None and actor is not None:
                got = keys.get(body)
                if got is None:
                    got = keys[body] = text_key_length(body)
            if staged is not None:
                hour = hours(at)
                batch_hours[(room, hour)] += 1
                staged.append((room, hour, at, actor, got[0] if got is not None else None))
            if actor is None:
                continue
            on = per_room.get(room)
            if on is None:
                flood = spam = None
                if flood_on:
                    flood = flood_of[room] = effective(P.CHAT_FLOOD, r[ROW_CLASS], room)
                if spam_on:
                    spam = spam_of[room] = effective(P.SPAM_WAVE, r[ROW_CLASS], room)
                on = per_room[room] = (
                    flood is not None and flood.enabled,
                    spam.params["min_text_chars"] if spam is not None and spam.enabled else None,
                    times[room],
                )
            used = False
            if on[0]:
                floods[(room, actor)].append(r)
                used = True
            if on[1] is not None and got is not None and got[1] >= on[1]:
                waves[(room, got[0])].append((r, got[1]))
                used = True
            if used:
                on[2].append(at)
    for room in [room for room, ts in times.items() if not ts]:
        del times[room]  # rooms whose chat no detector counts
    return out


async def prepared_chat_alerts(
    conn: asyncpg.Connection,
    prepared: ChatBatch,
    recent: RecentChat | None = None,
    rooms: dict[str, int] | None = None,
) -> list[Alert]:
    """The alerts of the chat detectors prepared in `prepared` (by `prepare_chat`, with the same `recent`)
    of every window holding one of the batch's stored chat rows. With `recent` (the worker's memory of
    recent room-hours, pipeline.detectors.recent), rooms whose hours it proves complete are bounded from
    memory and read only when a window may fire; `rooms` counts them ("memory") and the rooms read
    ("storage")."""
    flood_of, spam_of, times = prepared.flood_of, prepared.spam_of, prepared.times
    floods, waves, batch_hours = prepared.floods, prepared.waves, prepared.batch_hours
    if not times:
        return []
    flood_rule, spam_rule = RULES[P.CHAT_FLOOD], RULES[P.SPAM_WAVE]
    need_flood = {room: flood_rule.least_rows(e.params) for room, e in flood_of.items()}
    need_spam = {room: spam_rule.least_rows(e.params) for room, e in spam_of.items()}
    ranges: dict[str, list[tuple[datetime, datetime]]] = {}
    for room, ts in times.items():
        span = max(
            e.window_seconds for e in (flood_of.get(room), spam_of.get(room)) if e is not None and e.enabled
        )
        ranges[room] = merge_ranges(ts, span)
    to_read = set(ranges)
    if recent is not None:
        to_read = await _not_bounded(conn, recent, ranges, batch_hours, floods, waves, need_flood, need_spam)
    if rooms is not None:
        rooms["memory"] = rooms.get("memory", 0) + len(ranges) - len(to_read)
        rooms["storage"] = rooms.get("storage", 0) + len(to_read)
    earlier = await _read_earlier(conn, to_read, ranges, floods, waves, flood_of, spam_of) if to_read else {}
    found: list[Alert] = []
    for (room, actor), rows in floods.items():
        old = earlier.get((True, room, actor), [])
        if len(rows) + len(old) >= need_flood[room]:  # else no window of this chatter can fire
            new = [_stored(r, actor, None) for r in rows]
            found += _evaluate(P.CHAT_FLOOD, room, actor, new, old, flood_of[room])
    for (room, key), pairs in waves.items():
        old = earlier.get((False, room, key), [])
        if len(pairs) + len(old) >= need_spam[room]:  # else no window of this text can fire
            new = [_stored(r, key, str(length)) for r, length in pairs]
            found += _evaluate(P.SPAM_WAVE, room, key, new, old, spam_of[room])
    return found


async def _not_bounded(
    conn: asyncpg.Connection,
    recent: RecentChat,
    ranges: dict[str, list[tuple[datetime, datetime]]],
    batch_hours: dict[HourKey, int],
    floods: dict[tuple[str, str], list[tuple[Any, ...]]],
    waves: dict[tuple[str, str], list[tuple[tuple[Any, ...], int]]],
    need_flood: dict[str, int],
    need_spam: dict[str, int],
) -> set[str]:
    """The rooms to read from storage: those whose hours `recent` cannot prove complete (filled from
    storage for next time, within bounds), and those where its rows and the batch's may make a window
    fire. The others cannot fire: nothing to read."""
    span: dict[str, tuple[datetime, datetime]] = {room: (rs[0][0], rs[-1][1]) for room, rs in ranges.items()}
    wanted = [(room, h) for room, (lo, hi) in span.items() for h in _hours(lo, hi)]
    counts = await hour_counts(conn, [(room, h, h + _HOUR) for room, h in wanted], [_CHAT])
    entries: dict[str, list[RecentHour]] = defaultdict(list)
    unknown: set[str] = set()
    refill: list[tuple[HourKey, int]] = []
    for room, h in wanted:
        stored = counts.get((room, h, h + _HOUR), 0)
        entry = recent.check((room, h), stored, batch_hours.get((room, h), 0))
        if entry is None:
            unknown.add(room)
            if recent.wants_fill((room, h)):
                refill.append(((room, h), stored))
        else:
            entries[room].append(entry)
    if refill:
        await _fill(conn, recent, refill)
    # a room whose span reaches before what an entry keeps (a late row, a long window) is read
    hot = unknown | {room for room, es in entries.items() if not all(e.covers(span[room][0]) for e in es)}
    # each subject: the batch's rows, then the memory's in the room's span, until the threshold is reached
    for (room, actor), rows in floods.items():
        if room not in hot and _reaches(
            len(rows), need_flood[room], entries[room], RecentHour.actor_rows, actor, span[room]
        ):
            hot.add(room)
    for (room, key), pairs in waves.items():
        if room not in hot and _reaches(
            1 if len(pairs) == 1 else len({r[ROW_ACTOR_ID] for r, _ in pairs}),
            need_spam[room],
            entries[room],
            RecentHour.key_rows,
            key,
            span[room],
        ):
            hot.add(room)
    return hot


def _reaches(
    n: int,
    need: int,
    entries: list[RecentHour],
    count: Callable[[RecentHour, str, datetime, datetime], int],
    subject: str,
    span: tuple[datetime, datetime],
) -> bool:
    """Whether a subject's `n` rows of the batch, with its rows `count` finds in the memory's `entries`
    within `span`, reach `need` (the entries are counted only until they do)."""
    for e in entries:
        if n >= need:
            break
        n += count(e, subject, *span)
    return n >= need


#: the most stored rows one batch reads to fill room-hours (a worker started mid-hour fills them over
#: several batches instead of stalling one); an hour's rows before the memory's floor are not read
FILL_MAX_ROWS = 50_000

_FILL_SQL = f"""
SELECT u.room_id, u.hour, e.occurred_at, e.actor_id, md5({normalized_text_sql}) AS k
  FROM unnest($1::text[], $2::timestamptz[]) AS u(room_id, hour)
 CROSS JOIN LATERAL (
       SELECT e.occurred_at, e.actor_id, e.body FROM events e
        WHERE e.room_id = u.room_id AND e.occurred_at >= greatest(u.hour, $3::timestamptz)
          AND e.occurred_at < u.hour + interval '1 hour' AND e.event_type = '{_CHAT}'
          AND e.actor_id IS NOT NULL
        OFFSET 0) AS e
"""


async def _fill(conn: asyncpg.Connection, recent: RecentChat, refill: list[tuple[HourKey, int]]) -> None:
    """Read the stored chat rows of the room-hours `refill` (key, rows stored) from the memory's floor on,
    smallest first, up to about FILL_MAX_ROWS rows, into `recent` (installed if the batch commits)."""
    floor = recent.fill_floor()
    chosen: list[HourKey] = []
    total = 0
    for key, stored in sorted(refill, key=lambda kv: kv[1]):
        estimate = _rows_after(stored, key[1], floor, recent.newest_at)
        if total + estimate > FILL_MAX_ROWS:
            break
        chosen.append(key)
        total += estimate
    if not chosen:
        return
    rows: dict[HourKey, list[tuple[datetime, str | None, str | None]]] = {key: [] for key in chosen}
    # (greatest() ignores a NULL floor)
    for rec in await conn.fetch(_FILL_SQL, [k[0] for k in chosen], [k[1] for k in chosen], floor):
        rows[(rec["room_id"], rec["hour"])].append((rec["occurred_at"], rec["actor_id"], rec["k"]))
    stored_of = dict(refill)
    for key, got in rows.items():
        recent.stage_fill(key, got, stored=stored_of[key], floor=floor)


def _rows_after(stored: int, hour: datetime, floor: datetime | None, newest: datetime | None) -> int:
    """About how many of an hour's `stored` rows lie after `floor`, were they spread evenly up to `newest`
    (a budget, not a bound: the fill reads them all)."""
    if floor is None or newest is None or floor <= hour or newest <= floor:
        return stored
    return min(stored, 1 + int(stored * (newest - floor) / (newest - hour)))


def _hours(lo: datetime, hi: datetime) -> list[datetime]:
    """The UTC hours [lo, hi) overlaps."""
    out, h = [], hour_of(lo)
    while h < hi:
        out.append(h)
        h += _HOUR
    return out


async def _read_earlier(
    conn: asyncpg.Connection,
    rooms: set[str],
    ranges: dict[str, list[tuple[datetime, datetime]]],
    floods: dict[tuple[str, str], list[tuple[Any, ...]]],
    waves: dict[tuple[str, str], list[tuple[tuple[Any, ...], int]]],
    flood_of: dict[str, P.Effective],
    spam_of: dict[str, P.Effective],
) -> dict[tuple[bool, str, str], list[Stored]]:
    """The rows stored before the batch, in `rooms`' ranges, that may complete a window, by (flood?,
    room, subject)."""
    flood_rule, spam_rule = RULES[P.CHAT_FLOOD], RULES[P.SPAM_WAVE]
    read = [(room, lo, hi) for room in sorted(rooms) for lo, hi in ranges[room]]
    floods_on = [e for room, e in flood_of.items() if e.enabled and room in rooms]
    waves_on = [e for room, e in spam_of.items() if e.enabled and room in rooms]
    flood_least = min((flood_rule.least_rows(e.params) for e in floods_on), default=0)
    spam_least = min((spam_rule.least_rows(e.params) for e in waves_on), default=0)
    shortest = min((e.params["min_text_chars"] for e in waves_on), default=0)
    f_args = [(room, actor, len(rows)) for (room, actor), rows in floods.items() if room in rooms]
    s_args = [
        (room, key, len({r[ROW_ACTOR_ID] for r, _ in rows}))
        for (room, key), rows in waves.items()
        if room in rooms
    ]
    records = await conn.fetch(
        _SQL,
        [r[0] for r in read],
        [r[1] for r in read],
        [r[2] for r in read],
        [a[0] for a in f_args],
        [a[1] for a in f_args],
        [a[2] for a in f_args],
        flood_least,
        [a[0] for a in s_args],
        [a[1] for a in s_args],
        [a[2] for a in s_args],
        spam_least,
        shortest,
        bool(s_args),
    )
    earlier: dict[tuple[bool, str, str], list[Stored]] = defaultdict(list)
    for rec in records:
        room, actor, is_flood = rec["room_id"], rec["actor_id"], rec["flood"]
        subject = actor if is_flood else rec["k"]
        extra = None if is_flood else str(rec["klen"])
        at, event_id, cls = rec["occurred_at"], rec["event_id"], rec["retention_class"]
        earlier[(is_flood, room, subject)].append(
            Stored(room, cls, subject, at, event_id, actor, None, extra, None)
        )
    return earlier


def _evaluate(
    name: str, room: str, subject: str, new: list[Stored], old: list[Stored], eff: P.Effective
) -> list[Alert]:
    """The alerts of one subject's windows holding a new row, over its new and earlier rows."""
    rows = new + old
    rows.sort(key=lambda s: (s.occurred_at, s.event_id))
    return alerts_of(name, room, subject, rows, eff, {str(s.event_id) for s in new}, {})
