"""What the chat detectors remember of recent room-hours, trusted only where the rollups prove it complete.

Reading the stored chat around every batch costs the most on busy rooms and small batches (a live worker
writing every quarter second re-reads the last 30 s of each busy room each time). So the worker keeps, per
(room, UTC hour) of recent hours, the times of its chat rows by actor and by text key: enough to bound,
without reading, how many rows a chatter or a text has in a window. It is a cache of stored rows, never a
source of alerts: a subject that may fire is still read and evaluated exactly from stored rows
(pipeline.detectors.chat), so the alerts stay a function of the stored rows.

When an hour may be trusted: `room_hours` (pipeline/storage/migrations/0016_rollups.sql) counts a room's
chat rows per UTC hour exactly, in the batch's own transaction. An entry holds only rows known committed
(the batch's rows are added once its transaction committed, `settle(True)`; rows read to fill an entry
are installed the same way), and the whole entry is dropped when a deletion request was made (the only way
stored rows go away besides retention, which drops whole days far older than these hours). So an entry is
a subset of the stored rows of its hour, and when its count plus the batch's equals the stored count it
holds all of them but the batch's. Anything else (another worker wrote rows of the room, the worker just
started) is a mismatch: that room is read from storage as before, and the hour is filled again from
storage (current and previous hour only). A write that fails (an outage, a database restored or failed
over under the worker, a commit whose answer was lost) makes the worker forget everything: the
database after it may not be the one it remembers.

Memory: at most `max_rows` rows (ROOMLOGS_DETECTOR_MEMORY_ROWS, default 300,000: about 300 bytes a row
with its time and text key, so about 90 MB); past that the oldest hours go first, and a room whose hour
is not kept is read from storage as before. Hours more than two before the newest hour seen are dropped.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

__all__ = ["HourKey", "Hours", "RecentChat", "RecentHour", "hour_of"]

HourKey = tuple[str, datetime]
_HOUR = timedelta(hours=1)
#: hours kept behind the newest hour seen
KEEP_HOURS = 2


def hour_of(at: datetime) -> datetime:
    """The UTC hour holding `at` (an aware datetime)."""
    return at.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


class Hours:
    """`hour_of` for many times of few hours: memoized on the time's (day, hour), for times in UTC (as
    the normalizer and asyncpg give them; others are converted)."""

    __slots__ = ("_known",)

    def __init__(self) -> None:
        self._known: dict[int, datetime] = {}

    def __call__(self, at: datetime) -> datetime:
        if at.tzinfo is not UTC:
            return hour_of(at)
        n = at.toordinal() * 24 + at.hour
        hour = self._known.get(n)
        if hour is None:
            hour = self._known[n] = hour_of(at)
        return hour


@dataclass(slots=True)
class RecentHour:
    """One room's chat rows of one UTC hour: their count (actor-less rows included) and their times by
    actor and by text key (the spam wave's), each list sorted."""

    rows: int = 0
    actors: dict[str, list[datetime]] = field(default_factory=dict)
    keys: dict[str, list[datetime]] = field(default_factory=dict)

    def add(self, at: datetime, actor: str | None, key: str | None) -> None:
        self.rows += 1
        if actor is not None:
            _insert(self.actors, actor, at)
            if key is not None:
                _insert(self.keys, key, at)

    def actor_rows(self, actor: str, lo: datetime, hi: datetime) -> int:
        return _between(self.actors.get(actor), lo, hi)

    def key_rows(self, key: str, lo: datetime, hi: datetime) -> int:
        return _between(self.keys.get(key), lo, hi)


def _insert(index: dict[str, list[datetime]], name: str, at: datetime) -> None:
    times = index.get(name)
    if times is None:
        index[name] = [at]
    elif times[-1] <= at:
        times.append(at)
    else:
        insort(times, at)


def _between(times: list[datetime] | None, lo: datetime, hi: datetime) -> int:
    if not times:
        return 0
    return bisect_left(times, hi) - bisect_left(times, lo)


@dataclass(slots=True)
class _Staged:
    """What the batch in flight would change, installed if and only if its transaction commits."""

    #: entries made in this transaction: trusted empty (a new hour) or filled from storage
    made: dict[HourKey, RecentHour] = field(default_factory=dict)
    #: of those, the ones filled from storage: they hold the batch's rows already
    filled: set[HourKey] = field(default_factory=set)
    #: the batch's chat rows (room, hour, at, actor, key)
    rows: list[tuple[str, datetime, datetime, str | None, str | None]] = field(default_factory=list)
    #: entries this transaction found wrong: dropped whatever the outcome
    wrong: set[HourKey] = field(default_factory=set)


class RecentChat:
    """The recent room-hours of one worker (see the module's doc): `begin`, `check` / `stage_*` during
    the batch's detection, then `settle(committed)` once its transaction ended."""

    def __init__(self, *, max_rows: int = 300_000) -> None:
        self.max_rows = max_rows
        self.hours: dict[HourKey, RecentHour] = {}
        self.rows = 0
        self.newest: datetime | None = None
        #: deletion_requests.seq the entries were built under (pipeline.storage.deletions)
        self.deletion_seq = -1
        self._staged = _Staged()

    def begin(self, deletion_seq: int) -> None:
        """A batch's detection starts: forget what a previous attempt staged; after a deletion request,
        forget everything (rows may have been deleted under the entries)."""
        self._staged = _Staged()
        if deletion_seq != self.deletion_seq:
            self.hours.clear()
            self.rows = 0
            self.deletion_seq = deletion_seq

    def check(self, key: HourKey, stored: int, batch: int) -> RecentHour | None:
        """The entry of `key` if it holds every stored row of that hour but the batch's: `stored` rows
        stored now (this transaction's included), `batch` of them the batch's. An hour no entry knows and
        with no earlier rows is trusted empty (the usual start of a new hour)."""
        entry = self.hours.get(key)
        if entry is None:
            if stored == batch:
                entry = self._staged.made[key] = RecentHour()
                return entry
            return None
        if entry.rows + batch == stored:
            return entry
        self._staged.wrong.add(key)
        return None

    def wants_fill(self, key: HourKey) -> bool:
        """Whether to fill `key` from storage after a mismatch: only the newest two hours are worth it."""
        return self.newest is None or key[1] >= self.newest - _HOUR

    def stage_fill(self, key: HourKey, rows: Iterable[tuple[datetime, str | None, str | None]]) -> None:
        """Every stored chat row (at, actor, key) of `key` as this transaction sees them (its batch's
        included): the entry to install on commit."""
        entry = RecentHour()
        for at, actor, text_key in rows:
            entry.add(at, actor, text_key)
        self._staged.made[key] = entry
        self._staged.filled.add(key)
        self._staged.wrong.discard(key)

    def stage_row(self, room: str, hour: datetime, at: datetime, actor: str | None, key: str | None) -> None:
        """A chat row of the batch (`hour`: `hour_of(at)`): added on commit to its hour's entry (unless
        filled in this transaction: it holds the row already)."""
        self._staged.rows.append((room, hour, at, actor, key))

    def settle(self, committed: bool) -> None:
        """The batch's write ended: install what it staged if it committed, else forget everything.
        (Rows known committed keep every entry a subset of the stored rows; a later `check` proves it
        complete or not.)"""
        staged, self._staged = self._staged, _Staged()
        if not committed:
            # a write that failed may mean another database than the one remembered (a restore, a
            # failover, a commit whose answer was lost): forget everything, fill again from storage
            self.hours.clear()
            self.rows = 0
            return
        for key in staged.wrong:
            self._drop(key)
        for key, made in staged.made.items():
            self._drop(key)
            self.hours[key] = made
            self.rows += made.rows
            self._saw(key[1])
        for room, hour, at, actor, text_key in staged.rows:
            key = (room, hour)
            entry = self.hours.get(key)
            if entry is not None and key not in staged.filled:
                entry.add(at, actor, text_key)
                self.rows += 1
                self._saw(hour)
        self._evict()

    def _saw(self, hour: datetime) -> None:
        if self.newest is None or hour > self.newest:
            self.newest = hour

    def _drop(self, key: HourKey) -> None:
        entry = self.hours.pop(key, None)
        if entry is not None:
            self.rows -= entry.rows

    def _evict(self) -> None:
        if self.newest is not None:
            oldest = self.newest - KEEP_HOURS * _HOUR
            for key in [k for k in self.hours if k[1] < oldest]:
                self._drop(key)
        if self.rows > self.max_rows:
            for key in sorted(self.hours, key=lambda k: k[1]):
                self._drop(key)
                if self.rows <= self.max_rows:
                    break
