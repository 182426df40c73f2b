"""The six detectors: which stored rows each reads, what its subject is, and when a window fires.

Each `Rule` says, for one detector:
- `types`: the event types it reads; `subject_sql` / `extra_sql` / `join_sql` / `where_sql`: how a stored
  row of `events` (alias `e`) becomes one of its rows (the subject the window is about, and what the
  measure needs besides the actor and target);
- `least_rows(params)`: the fewest rows a window must hold to fire (a lower bound, for the reads'
  prefilter: windows with fewer rows are never read into Python);
- `measure(rows, params, threshold)`: the window's measure when it fires, None when it does not; every
  measure is monotone (more rows never stop a window firing: pipeline.detectors.windows relies on it);
- `describe`: the users involved and the counts the alert carries.

The SQL fragments are constants of this module (never built from input); only whole numbers checked by
pipeline.detectors.params are written into the statements.
"""

from __future__ import annotations

import hashlib
import math
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pipeline.detectors import params as P
from pipeline.detectors.windows import Row, firing_windows
from pipeline.events.contract import EventType
from pipeline.storage.alerts import Alert

__all__ = ["RULES", "Rule", "Stored", "alerts_of", "normalized_text_sql", "text_key", "text_key_length"]

#: A chat text as the spam detector compares it: ASCII letters case folded and ASCII whitespace removed
#: (so spacing tricks do not split a wave), by one translate() in SQL and the same table in Python
#: (`text_key`), so the batch's keys, computed in Python, match the stored rows' exactly. Its md5 is the
#: spam wave's subject. (Case folding beyond ASCII would need PostgreSQL's lower(), whose result depends on
#: the database's locale: Python could not compute the same key.)
_UPPER = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_SPACES = " \t\n\v\f\r"
_FOLD = str.maketrans({**{c: c.lower() for c in _UPPER}, **dict.fromkeys(_SPACES)})
_TRANSLATE_FROM = f"'{_UPPER}' || chr(32) || chr(9) || chr(10) || chr(11) || chr(12) || chr(13)"
normalized_text_sql = f"translate(e.body, {_TRANSLATE_FROM}, '{_UPPER.lower()}')"


def text_key(body: str) -> tuple[str, str]:
    """(the spam wave's subject of a chat text, the normalized text), as the SQL above computes them."""
    norm = body.translate(_FOLD)
    return hashlib.md5(norm.encode(), usedforsecurity=False).hexdigest(), norm


_SPACE_BYTES = _SPACES.encode()


def text_key_length(body: str) -> tuple[str, int]:
    """(`text_key(body)[0]`, the length in characters of the normalized text), computed on the UTF-8 bytes:
    bytes.lower() folds A-Z only and the whitespace deleted is ASCII, bytes that never occur inside a
    multi-byte UTF-8 sequence, so the bytes are exactly the normalized text's; each byte deleted is one
    character. Several times faster than str.translate (it runs on every chat text of every batch)."""
    raw = body.encode()
    folded = raw.lower().translate(None, _SPACE_BYTES)
    return hashlib.md5(folded, usedforsecurity=False).hexdigest(), len(body) - (len(raw) - len(folded))


class Stored(Row):
    """One stored row as a detector reads it."""

    __slots__ = ("actor_id", "extra", "extra2", "retention_class", "room_id", "subject", "target_id")

    def __init__(
        self,
        room_id: str,
        retention_class: str,
        subject: str,
        occurred_at: datetime,
        event_id: uuid.UUID,
        actor_id: str | None,
        target_id: str | None,
        extra: str | None,
        extra2: str | None,
    ) -> None:
        super().__init__(occurred_at, event_id)
        self.room_id = room_id
        self.retention_class = retention_class
        self.subject = subject
        self.actor_id = actor_id
        self.target_id = target_id
        self.extra = extra
        self.extra2 = extra2


Measure = Callable[[Sequence[Stored], Mapping[str, int], int], dict[str, Any] | None]


@dataclass(frozen=True, slots=True)
class Rule:
    name: str
    types: tuple[str, ...]
    subject_sql: str
    least_rows: Callable[[Mapping[str, int]], int]
    #: (window rows, params, threshold) -> counts when it fires, else None
    measure: Measure
    #: the users an alert names, from its window's rows
    users: Callable[[Sequence[Stored]], tuple[str, ...]]
    extra_sql: str = "NULL::text"
    extra2_sql: str = "NULL::text"
    join_sql: str = ""
    where_sql: str = ""


def _actors(rows: Sequence[Stored]) -> set[str]:
    return {r.actor_id for r in rows if r.actor_id is not None}


def _sorted_users(*groups: set[str]) -> tuple[str, ...]:
    seen: set[str] = set()
    for g in groups:
        seen |= g
    return tuple(sorted(seen))


# --- chat flood: one user, more than max_messages messages --------------------------------------------------
def _flood(rows: Sequence[Stored], p: Mapping[str, int], _: int) -> dict[str, Any] | None:
    n = len(rows)
    return {"messages": n, "max_messages": p["max_messages"]} if n > p["max_messages"] else None


# --- spam wave: one normalized text from at least min_users users -------------------------------------------
def _spam(rows: Sequence[Stored], p: Mapping[str, int], _: int) -> dict[str, Any] | None:
    long_enough = [r for r in rows if int(r.extra or 0) >= p["min_text_chars"]]
    users = _actors(long_enough)
    if len(users) < p["min_users"]:
        return None
    return {"users": len(users), "messages": len(long_enough), "min_users": p["min_users"]}


# --- raid: distinct users entering, at least the room's threshold for that hour of the week -----------------
def _raid(rows: Sequence[Stored], p: Mapping[str, int], threshold: int) -> dict[str, Any] | None:
    users = _actors(rows)
    if len(users) < threshold:
        return None
    return {"users": len(users), "entries": len(rows), "threshold": threshold, "min_users": p["min_users"]}


def raid_threshold(p: Mapping[str, int], baseline_entries_per_hour: float | None) -> int:
    """max(min_users, multiplier x the usual entries in a window of the room at that hour of the week)."""
    if not baseline_entries_per_hour:
        return p["min_users"]
    usual = baseline_entries_per_hour * p["window_seconds"] / 3600
    return max(p["min_users"], math.ceil(p["multiplier"] * usual))


# --- moderator abuse: one moderator acting on more than max_targets users -----------------------------------
def _abuse(rows: Sequence[Stored], p: Mapping[str, int], _: int) -> dict[str, Any] | None:
    targets = {r.target_id for r in rows if r.target_id is not None}
    if len(targets) <= p["max_targets"]:
        return None
    return {"targets": len(targets), "actions": len(rows), "max_targets": p["max_targets"]}


# --- permission churn: a setting, or a user's role, changed back to what it was -----------------------------
def _reversions(rows: Sequence[Stored]) -> int:
    """Changes that undo an earlier change of the window: a setting set back to a value it had before an
    earlier change (`extra` old, `extra2` new, JSON text), a role given after it was taken or taken after it
    was given (`extra` 'up' or 'down'). A function of the rows in (occurred_at, event_id) order."""
    n = 0
    olds: set[str] = set()
    directions: set[str] = set()
    for r in rows:
        if r.subject.startswith("role:"):
            if r.extra is not None and directions - {r.extra}:
                n += 1
            if r.extra is not None:
                directions.add(r.extra)
        else:
            if r.extra2 is not None and r.extra2 in olds:
                n += 1
            if r.extra is not None:
                olds.add(r.extra)
    return n


def _churn(rows: Sequence[Stored], p: Mapping[str, int], _: int) -> dict[str, Any] | None:
    n = _reversions(rows)
    if n < p["min_reversions"]:
        return None
    return {"changes": len(rows), "reversions": n, "min_reversions": p["min_reversions"]}


# --- gift burst: one sender to one recipient, more than max_gifts -------------------------------------------
def _gifts(rows: Sequence[Stored], p: Mapping[str, int], _: int) -> dict[str, Any] | None:
    if len(rows) <= p["max_gifts"]:
        return None
    return {"gifts": len(rows), "credits": sum(int(r.extra or 0) for r in rows), "max_gifts": p["max_gifts"]}


_MODERATION = (EventType.MOD_WARN, EventType.MOD_MUTE, EventType.MOD_KICK, EventType.MOD_BAN)
_PERMS, _SETTINGS = EventType.ROOM_PERMISSIONS_CHANGED.value, EventType.ROOM_SETTINGS_CHANGED.value

RULES: dict[str, Rule] = {
    P.CHAT_FLOOD: Rule(
        P.CHAT_FLOOD,
        (EventType.CHAT_MESSAGE.value,),
        "e.actor_id",
        lambda p: p["max_messages"] + 1,
        _flood,
        lambda rows: _sorted_users(_actors(rows)),
        where_sql="AND e.actor_id IS NOT NULL",
    ),
    P.SPAM_WAVE: Rule(
        P.SPAM_WAVE,
        (EventType.CHAT_MESSAGE.value,),
        f"md5({normalized_text_sql})",
        lambda p: p["min_users"],
        _spam,
        lambda rows: _sorted_users(_actors(rows)),
        extra_sql=f"length({normalized_text_sql})::text",
        where_sql="AND e.actor_id IS NOT NULL AND e.body IS NOT NULL",  # read by pipeline.detectors.chat
    ),
    P.RAID: Rule(
        P.RAID,
        (EventType.USER_ENTERED.value,),
        "''",
        lambda p: p["min_users"],
        _raid,
        lambda rows: _sorted_users(_actors(rows)),
        where_sql="AND e.actor_id IS NOT NULL",
    ),
    P.MODERATOR_ABUSE: Rule(
        P.MODERATOR_ABUSE,
        tuple(t.value for t in _MODERATION),
        "e.actor_id",
        lambda p: p["max_targets"] + 1,
        _abuse,
        lambda rows: _sorted_users(_actors(rows), {r.target_id for r in rows if r.target_id}),
        where_sql="AND e.actor_id IS NOT NULL",
    ),
    P.PERMISSION_CHURN: Rule(
        P.PERMISSION_CHURN,
        (_PERMS, _SETTINGS),
        f"CASE WHEN e.event_type = '{_PERMS}' THEN 'role:' || e.target_id ELSE 'setting:' || s.key END",
        lambda p: p["min_reversions"] + 1,
        _churn,
        lambda rows: _sorted_users(
            _actors(rows), {r.target_id for r in rows if r.target_id and r.subject.startswith("role:")}
        ),
        extra_sql=(
            f"CASE WHEN e.event_type = '{_PERMS}' THEN CASE e.payload->>'change' WHEN 'moderator_removed' "
            "THEN 'down' ELSE 'up' END ELSE nullif(s.value->'old', 'null'::jsonb)::text END"
        ),
        extra2_sql=f"CASE WHEN e.event_type = '{_PERMS}' THEN NULL ELSE (s.value->'new')::text END",
        join_sql=(
            "LEFT JOIN LATERAL jsonb_each(CASE WHEN e.event_type = "
            f"'{_SETTINGS}' THEN e.payload->'changes' END) AS s(key, value) ON true"
        ),
        where_sql=f"AND (e.event_type <> '{_PERMS}' OR e.target_id IS NOT NULL)"
        f" AND (e.event_type <> '{_SETTINGS}' OR s.key IS NOT NULL)",
    ),
    P.GIFT_BURST: Rule(
        P.GIFT_BURST,
        (EventType.GIFT_SENT.value,),
        "e.actor_id || '>' || e.target_id",
        lambda p: p["max_gifts"] + 1,
        _gifts,
        lambda rows: _sorted_users(_actors(rows), {r.target_id for r in rows if r.target_id}),
        extra_sql="(e.payload->>'credits')",
        where_sql="AND e.actor_id IS NOT NULL AND e.target_id IS NOT NULL",
    ),
}


def alerts_of(
    name: str,
    room: str,
    subject: str,
    group: list[Stored],
    eff: P.Effective,
    new_ids: set[str],
    thresholds: dict[tuple[str, datetime], int],
) -> list[Alert]:
    """The alerts of one room's subject: its firing windows that hold a new row, one per bucket."""
    rule, p = RULES[name], eff.params

    def measure(window: Sequence[Stored]) -> dict[str, Any] | None:
        hour = window[0].occurred_at.replace(minute=0, second=0, microsecond=0)
        return rule.measure(window, p, thresholds.get((room, hour), p.get("min_users", 0)))

    return [
        Alert(
            fired.rows[0].retention_class,
            room,
            name,
            subject,
            fired.bucket,
            fired.start,
            fired.end,
            rule.users(fired.rows),
            {**fired.measure, "window_seconds": eff.window_seconds},
            tuple(s.event_id for s in fired.rows),
        )
        for fired in firing_windows(group, lambda s: str(s.event_id) in new_ids, eff.window_seconds, measure)
    ]
