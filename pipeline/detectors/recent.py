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

Memory: at most `max_rows` rows' times (ROOMLOGS_DETECTOR_MEMORY_ROWS, default 300,000: about 300 bytes a
row with its time and text key, so about 90 MB). An hour of a busy server is more than that, and the chat
windows are seconds long (10 s and 30 s by default), so past the bound the oldest times go, not whole
room-hours: the memory's `floor` moves forward until a quarter of the bound is free. An entry keeps its
hour's count (the proof above needs it) and the times of its rows at or after its floor; a range reaching
before an entry's floor is not bounded from memory, and its room is read from storage as before (a late
event, a window longer than the memory reaches back). An hour filled from storage is read from the floor
on only, its count taken from `room_hours`. Hours more than two before the newest hour seen are dropped.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

__all__ = ["HourKey", "Hours", "RecentChat", "RecentHour", "hour_of"]

HourKey = tuple[str, datetime]
_HOUR = timedelta(hours=1)
_MICROSECOND = timedelta(microseconds=1)
#: hours kept behind the newest hour seen
KEEP_HOURS = 2
#: past the bound, the floor moves until the times held are this share of it (so it moves now and then:
#: each move sorts the times held and cuts every list; at 0.5 the memory reaches back less, and twice as
#: many rooms were read from storage at the default benchmark's size)
TRIM_TO_SHARE = 0.75
#: rows `RecentChat.installing` adds between two pauses (a few milliseconds of work)
INSTALL_STEP_ROWS = 2_000


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
    """One room's chat rows of one UTC hour: their count (actor-less rows included) and, of those at or
    after `floor` (None: from the hour's start), their times by actor and by text key (the spam wave's),
    each list sorted; `kept`: the times held (rows with an actor at or after the floor)."""

    rows: int = 0
    actors: dict[str, list[datetime]] = field(default_factory=dict)
    keys: dict[str, list[datetime]] = field(default_factory=dict)
    floor: datetime | None = None
    kept: int = 0

    def add(self, at: datetime, actor: str | None, key: str | None) -> bool:
        """Count a row; hold its time if it has an actor and is not before the floor (then True)."""
        self.rows += 1
        if actor is None or (self.floor is not None and at < self.floor):
            return False
        self.kept += 1
        _insert(self.actors, actor, at)
        if key is not None:
            _insert(self.keys, key, at)
        return True

    def covers(self, lo: datetime) -> bool:
        """Whether the times held are every row's of this hour from `lo` on."""
        return self.floor is None or lo >= self.floor

    def trim(self, floor: datetime) -> int:
        """Keep only the times at or after `floor` (later than the current one); return how many went."""
        if self.floor is not None and floor <= self.floor:
            return 0
        self.floor = floor
        before = self.kept
        self.kept -= _cut(self.actors, floor)
        _cut(self.keys, floor)
        return before - self.kept

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


def _cut(index: dict[str, list[datetime]], floor: datetime) -> int:
    """Drop the times before `floor` (and the names left with none); return how many went."""
    gone = 0
    for name in list(index):
        times = index[name]
        if times[0] >= floor:
            continue
        i = bisect_left(times, floor)
        gone += i
        if i == len(times):
            del index[name]
        else:
            del times[:i]
    return gone


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
        #: the rows whose times are held (what `max_rows` bounds)
        self.rows = 0
        #: the newest hour, and the newest row's time (not ahead of the clock), of the rows committed
        self.newest: datetime | None = None
        self.newest_at: datetime | None = None
        #: times before this are not held (None: none was let go)
        self.floor: datetime | None = None
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
        """Whether to fill `key` from storage after a mismatch: only the newest two hours are worth it,
        and only if some of the hour is after the floor."""
        floor = self.fill_floor()
        return (self.newest is None or key[1] >= self.newest - _HOUR) and (
            floor is None or key[1] + _HOUR > floor
        )

    def fill_floor(self) -> datetime | None:
        """From when an hour filled now is read (None: its start): the memory's floor."""
        return self.floor

    def stage_fill(
        self,
        key: HourKey,
        rows: Iterable[tuple[datetime, str | None, str | None]],
        *,
        stored: int,
        floor: datetime | None,
    ) -> None:
        """The entry to install on commit for `key`: `stored` chat rows in the hour as this transaction
        sees them (its batch's included; from `room_hours`), and `rows`, every one of them (at, actor, key)
        at or after `floor` (None: all of them)."""
        entry = RecentHour(floor=floor if floor is not None and floor > key[1] else None)
        for at, actor, text_key in rows:
            entry.add(at, actor, text_key)
        entry.rows = stored
        self._staged.made[key] = entry
        self._staged.filled.add(key)
        self._staged.wrong.discard(key)

    def stage_row(self, room: str, hour: datetime, at: datetime, actor: str | None, key: str | None) -> None:
        """A chat row of the batch (`hour`: `hour_of(at)`): added on commit to its hour's entry (unless
        filled in this transaction: it holds the row already)."""
        self._staged.rows.append((room, hour, at, actor, key))

    def staged_rows(self) -> list[tuple[str, datetime, datetime, str | None, str | None]]:
        """Where `stage_row` puts the batch's rows, for a caller staging every chat row of a batch: append
        (room, hour_of(at), at, actor, key) tuples to it (one call per batch, not per row)."""
        return self._staged.rows

    def settle(self, committed: bool) -> None:
        """The batch's write ended: install what it staged if it committed, else forget everything.
        (Rows known committed keep every entry a subset of the stored rows; a later `check` proves it
        complete or not.)"""
        if not committed:
            self.forget()
            return
        for _ in self.installing(self.take_staged()):
            pass

    def forget(self) -> None:
        """Forget everything (what is staged too): a write that failed may mean another database than the
        one remembered (a restore, a failover, a commit whose answer was lost); fill again from storage."""
        self._staged = _Staged()
        self.hours.clear()
        self.rows = 0
        self.newest = self.newest_at = self.floor = None

    def take_staged(self) -> _Staged:
        """What the batch whose transaction just committed staged, for `installing` (now or a little later,
        but before the next batch's `begin`)."""
        staged, self._staged = self._staged, _Staged()
        return staged

    def installing(self, staged: _Staged) -> Iterator[None]:
        """Install `staged` (of a committed batch), pausing (a `yield`) every INSTALL_STEP_ROWS rows, so
        that a caller can install it between other work. Until it is exhausted the memory is only partly
        updated: nothing may `begin` meanwhile; `forget` may (then stop iterating)."""
        for key in staged.wrong:
            self._drop(key)
        for key, made in staged.made.items():
            self._drop(key)
            self.hours[key] = made
            self.rows += made.kept
            self._saw(key[1])
        hours, filled = self.hours, staged.filled
        rows = staged.rows
        for start in range(0, len(rows), INSTALL_STEP_ROWS):
            if start:
                yield
            added = 0
            newest, newest_at = self.newest, self.newest_at
            for room, hour, at, actor, text_key in rows[start : start + INSTALL_STEP_ROWS]:
                if newest_at is None or at > newest_at:
                    newest_at = at
                key = (room, hour)
                entry = hours.get(key)
                if entry is None or (filled and key in filled):
                    continue
                added += entry.add(at, actor, text_key)
                if newest is None or hour > newest:
                    newest = hour
            self.rows += added
            self.newest = newest
            if newest_at is not None:
                self.newest_at = min(newest_at, datetime.now(UTC))  # (a budget's estimate only)
        self._evict()

    def _saw(self, hour: datetime) -> None:
        if self.newest is None or hour > self.newest:
            self.newest = hour

    def _drop(self, key: HourKey) -> None:
        entry = self.hours.pop(key, None)
        if entry is not None:
            self.rows -= entry.kept

    def _evict(self) -> None:
        if self.newest is not None:
            oldest = self.newest - KEEP_HOURS * _HOUR
            for key in [k for k in self.hours if k[1] < oldest]:
                self._drop(key)
        if self.rows > self.max_rows:
            self._raise_floor(int(self.max_rows * TRIM_TO_SHARE))

    def _raise_floor(self, target: int) -> None:
        """Move the floor to the time of the `target`-th newest time held: entries of hours wholly before
        it go, the others keep their times from it on."""
        times = [t for entry in self.hours.values() for ts in entry.actors.values() for t in ts]
        if not times:
            return
        if 0 < target <= len(times):
            floor, older = select(times, len(times) - target)
            if len(times) - older > self.max_rows:
                floor += _MICROSECOND  # more rows than the bound at that very time: let those go too
        else:
            floor = max(times) + _MICROSECOND
        # (an hour made since the last move, trusted empty, may hold times before the floor: cut too)
        self.floor = floor if self.floor is None else max(self.floor, floor)
        for key, entry in list(self.hours.items()):
            if key[1] + _HOUR <= floor:
                self._drop(key)
            elif key[1] < floor:
                self.rows -= entry.trim(floor)


#: `select` sorts every this-many-th value to bracket the one it looks for, then only the values between
SAMPLE_STEP = 32
#: sampled values either side of the estimate that bracket it (the bracket holds about 2 x 64 x 32 values)
SAMPLE_MARGIN = 64


def select(values: list[datetime], k: int) -> tuple[datetime, int]:
    """The k-th smallest of `values` (0-based) and how many values are smaller than it: what sorting them
    would give, without sorting them all (moving the memory's floor sorted 300,000 times held, a tenth of
    a second, every few batches). A sorted sample brackets the k-th; the values below the bracket are
    counted, those inside it sorted. Where the bracket misses it (it cannot be wrong, only miss), every
    value is sorted."""
    n = len(values)
    if n > 8 * SAMPLE_STEP * SAMPLE_MARGIN:
        sample = sorted(values[::SAMPLE_STEP])
        j = k // SAMPLE_STEP
        lo = sample[max(j - SAMPLE_MARGIN, 0)]
        hi = sample[min(j + SAMPLE_MARGIN, len(sample) - 1)]
        below = sum(1 for v in values if v < lo)
        if below <= k:
            inside = sorted([v for v in values if lo <= v <= hi])
            if k - below < len(inside):
                found = inside[k - below]
                return found, below + bisect_left(inside, found)
    ordered = sorted(values)
    return ordered[k], bisect_left(ordered, ordered[k])
