"""Running the detectors over a batch, inside the batch's own transaction.

Called by the batch writer (pipeline.storage.writer) after the batch's rows are stored and before its
offsets of record advance, on the same connection and transaction: `detect(conn, rows)` with the rows the
batch stored (duplicates the event-id registry turned away are not among them). It reads, per detector,
the stored rows around the new ones (pipeline.detectors.reads, one statement per detector that has new
rows), evaluates every window that contains a new row exactly (pipeline.detectors.windows), and inserts the
alerts ON CONFLICT DO NOTHING (pipeline.storage.alerts). Returns the alerts stored now.

Why state is rebuilt from stored rows rather than kept in memory: the rows and offsets of record commit
together, and so do the alerts, so
- a crash before the commit rolls back rows, offsets and alerts together; the batch is read again and
  evaluated again over the same stored rows;
- a replay (records whose event ids are stored) stores no rows, so it evaluates nothing and raises nothing;
- after a rebalance the next worker reads the same stored rows: there is no window state to hand over;
- a late or out-of-order event is evaluated in event time against the rows around it, so it lands in its
  window and can complete a window whose other rows came long before;
- the alerts are a function of the stored rows (the key argument in pipeline.detectors.windows), whatever
  the order, batching or duplication of the records.
The price is reading the rows around each batch's rows; the reads skip quiet rooms with the exact hourly
rollups and return nothing to Python for normal traffic (see reads.py). For chat, most of the traffic,
the worker also remembers recent room-hours, trusted only where the rollups prove them complete, to skip
the reads that cannot make a window fire (chat.py, recent.py): a cache of stored rows, never a source of
alerts, so everything above still holds (`settle` after the transaction keeps only what committed).
Two transactions storing rows of one room at once are ordered by a lock (`lock_rooms`).

A failure here raises: the batch's transaction rolls back and the batch is written again (as for any
storage error), so no alert is lost and none is half-stored. (ROOMLOGS_DETECTORS_ENABLED=false takes the
detectors out of ingest, should one ever keep failing.)
Parameters: pipeline.detectors.params, with operators' overrides read from `detector_settings` at most
every `settings_ttl_seconds` (inside a batch's transaction), so `roomlogs detectors set` takes effect
without a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import zlib
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from pipeline.detectors import params as P
from pipeline.detectors.chat import CHAT_DETECTORS, prepare_chat, prepared_chat_alerts
from pipeline.detectors.reads import Read, hour_counts, merge_ranges, read_many
from pipeline.detectors.recent import RecentChat
from pipeline.detectors.rules import RULES, Stored, alerts_of, raid_threshold
from pipeline.storage import alerts, detector_settings
from pipeline.storage.alerts import Alert
from pipeline.storage.batch import (
    ROW_CLASS,
    ROW_EVENT_ID,
    ROW_EVENT_TYPE,
    ROW_OCCURRED_AT,
    ROW_ROOM_ID,
)
from pipeline.storage.detector_settings import Override

__all__ = ["Detectors", "alerts_of", "evaluate"]

_WEEK = timedelta(days=7)
_HOUR = timedelta(hours=1)


class Detectors:
    """The detectors of one worker: parameters (cached overrides) and `detect`."""

    def __init__(
        self,
        *,
        settings_ttl_seconds: float = 10.0,
        only: Iterable[str] | None = None,
        clock: Callable[[], float] = time.monotonic,
        memory_rows: int = 300_000,
    ) -> None:
        self._ttl = settings_ttl_seconds
        self._clock = clock
        self._only = frozenset(only) if only is not None else frozenset(P.DETECTORS)
        self._overrides: dict[tuple[str, str, str], Override] = {}
        self._rooms_overridden: set[tuple[str, str]] = set()
        self._per_class: dict[tuple[str, str], P.Effective] = {}
        self._loaded_at: float | None = None
        #: recent room-hours of chat, to skip reads that cannot make a window fire (None: always read)
        self.recent: RecentChat | None = RecentChat(max_rows=memory_rows) if memory_rows > 0 else None
        #: of the last batch: rooms of its chat bounded from memory ("memory"), read ("storage")
        self.rooms: dict[str, int] = {}
        #: the chat rows remembered when the last batch was evaluated
        self.memory_rows = 0
        #: adding the last committed batch's rows to `recent` (None: done)
        self._install: asyncio.Future[None] | None = None

    async def refresh(self, conn: asyncpg.Connection, *, force: bool = False) -> None:
        now = self._clock()
        if not force and self._loaded_at is not None and now - self._loaded_at < self._ttl:
            return
        self._overrides = {(o.detector, o.scope, o.scope_id): o for o in await detector_settings.load(conn)}
        self._rooms_overridden = {
            (o.detector, o.scope_id) for o in self._overrides.values() if o.scope == "room"
        }
        self._per_class = {}
        self._loaded_at = now

    def effective(self, detector: str, retention_class: str, room_id: str) -> P.Effective:
        """`detector`'s parameters for a room: built-in (per class), then the class's, then the room's
        override; disabled where an override says so (the nearest that says anything)."""
        if (detector, room_id) not in self._rooms_overridden:
            # most rooms: the class's parameters, made once per settings refresh
            got = self._per_class.get((detector, retention_class))
            if got is None:
                got = self._per_class[(detector, retention_class)] = self._effective(
                    detector, retention_class, ""
                )
            return got
        return self._effective(detector, retention_class, room_id)

    def _effective(self, detector: str, retention_class: str, room_id: str) -> P.Effective:
        params = P.builtin(detector, retention_class)
        enabled = detector in self._only
        for scope, scope_id in (("class", retention_class), ("room", room_id)):
            o = self._overrides.get((detector, scope, scope_id))
            if o is not None:
                params.update(o.params)
                if o.enabled is not None:
                    enabled = o.enabled and detector in self._only
        return P.Effective(enabled, params)

    async def detect(
        self, conn: asyncpg.Connection, rows: Sequence[tuple[Any, ...]], deletion_seq: int | None = None
    ) -> list[asyncpg.Record]:
        """Evaluate the windows around the batch's stored `rows`; insert and return the new alerts.

        `deletion_seq`: deletion_requests.seq as this transaction sees it (pipeline.storage.deletions),
        which lets the recent room-hours be trusted; None: read from storage only. Call `settle` once the
        transaction ended."""
        await self.caught_up()
        recent = None
        if self.recent is not None and deletion_seq is not None:
            recent = self.recent
            self.memory_rows = recent.rows
            recent.begin(deletion_seq)
        if not rows:
            return []
        await self.refresh(conn)
        await lock_rooms(conn, {r[ROW_ROOM_ID] for r in rows})
        detectors = [d for d in P.DETECTORS if d in self._only]
        self.rooms = {}
        found = await evaluate(conn, rows, self.effective, detectors, recent, self.rooms)
        return await alerts.insert(conn, found) if found else []

    def settle(self, committed: bool) -> None:
        """The batch's transaction ended (committed or not): what `detect` learnt is kept only if it did.

        A commit's rows are added to the memory by a task that pauses now and then (they are thousands a
        batch, and moving the memory's floor sorts every time held): it runs while the next batch's
        statements run in PostgreSQL, not between the commit and the next batch. The next `detect` waits
        for it (`caught_up`); a write that failed stops it and forgets everything."""
        recent = self.recent
        if recent is None:
            return
        if not committed:
            if self._install is not None:
                self._install.cancel()  # it never runs again: it pauses only at its awaits
                self._install = None
            recent.forget()
            return
        staged = recent.take_staged()
        self._install = asyncio.ensure_future(_install(self._install, recent.installing(staged)))

    async def caught_up(self) -> None:
        """Wait until what the committed batches taught the memory is in it."""
        task = self._install
        if task is not None:
            await asyncio.shield(task)  # a caller cancelled meanwhile leaves it running
            if self._install is task:
                self._install = None

    def figures(self) -> tuple[dict[str, int], int | None]:
        """Rooms of the last batch's chat bounded from memory and read from storage (then reset), and the
        chat rows remembered when it was evaluated (None: no memory)."""
        rooms, self.rooms = self.rooms, {}
        return rooms, (self.memory_rows if self.recent is not None else None)


async def _install(before: asyncio.Future[None] | None, steps: Iterator[None]) -> None:
    """Run `steps` (RecentChat.installing) after `before`, yielding to the event loop between steps."""
    if before is not None:
        await before
    for _ in steps:
        await asyncio.sleep(0)


#: Rooms are locked for detection in this many buckets (at most this many locks per transaction).
ROOM_LOCK_BUCKETS = 64
# (and, in the same round trip: the reads are many small index scans, parallel workers would cost more to
# start than they save)
_LOCK_SQL = """
SELECT set_config('max_parallel_workers_per_gather', '0', true),
       (SELECT count(pg_advisory_xact_lock(hashtextextended(current_schema() || ':roomlogs.detect:' || b, 0)))
          FROM unnest($1::int[]) AS b)"""


async def lock_rooms(conn: asyncpg.Connection, rooms: Iterable[str]) -> None:
    """Hold, to the commit, the detection lock of `rooms` (by bucket, taken in bucket order: no deadlock);
    parallel query off for the rest of the transaction.

    Why: two transactions storing rows of one room at once (two workers, when a producer spreads a room
    over partitions) would each read the stored rows without the other's, and a window holding rows of
    both would be evaluated by neither. Taken after the batch's rows are stored and before they are read:
    of two such transactions, the second to get the lock reads after the first committed (READ COMMITTED
    takes a snapshot per statement), so it sees both batches' rows and evaluates those windows. The
    rollups' row locks serialize most such pairs already, but not rows of one room in two UTC hours."""
    buckets = sorted({zlib.crc32(room.encode()) % ROOM_LOCK_BUCKETS for room in rooms})
    await conn.fetchval(_LOCK_SQL, buckets)


async def evaluate(
    conn: asyncpg.Connection,
    rows: Sequence[tuple[Any, ...]],
    effective: Callable[[str, str, str], P.Effective],
    detectors: Sequence[str],
    recent: RecentChat | None = None,
    rooms: dict[str, int] | None = None,
) -> list[Alert]:
    """The alerts of every window, of each of `detectors`, that contains one of `rows` (stored), over the
    stored rows: each alert as found now (the caller stores them ON CONFLICT DO NOTHING)."""
    by_type: dict[str, list[tuple[Any, ...]]] = defaultdict(list)
    for r in rows:
        by_type[r[ROW_EVENT_TYPE]].append(r)
    chat = [d for d in detectors if d in CHAT_DETECTORS]
    chat_rows = by_type.get(RULES[P.CHAT_FLOOD].types[0]) if chat else None
    reads, settings_of = _reads(by_type, effective, detectors)
    # The other detectors' read (one statement) is sent first: PostgreSQL runs it while Python prepares
    # the batch's chat (keys, groups: most of the detectors' Python work). The connection runs one
    # statement at a time, so the chat's own statements wait for it.
    read = asyncio.ensure_future(read_many(conn, reads)) if reads else None
    try:
        prepared = await prepare_chat(chat_rows, effective, chat, recent) if chat_rows else None
        read_rows = await read if read is not None else {}
    except BaseException:
        if read is not None and not read.done():
            read.cancel()
            with contextlib.suppress(BaseException):
                await read
        raise
    found: list[Alert] = []
    if prepared is not None:
        found += await prepared_chat_alerts(conn, prepared, recent, rooms)
    new_ids: set[str] | None = None
    for name, stored in read_rows.items():
        if not stored:
            continue
        if new_ids is None:
            new_ids = {str(r[ROW_EVENT_ID]) for r in rows}
        settings = settings_of[name]
        thresholds = await _raid_thresholds(conn, stored, settings) if name == P.RAID else {}
        for room, subject, group in _groups(stored):
            found += alerts_of(name, room, subject, group, settings[room], new_ids, thresholds)
    return found


def _reads(
    by_type: dict[str, list[tuple[Any, ...]]],
    effective: Callable[[str, str, str], P.Effective],
    detectors: Sequence[str],
) -> tuple[list[Read], dict[str, dict[str, P.Effective]]]:
    """What each detector but the chat ones reads (`Read`: the ranges around the batch's rows of its types,
    in the rooms where it is on), and the parameters of those rooms, by detector."""
    reads: list[Read] = []
    settings_of: dict[str, dict[str, P.Effective]] = {}
    for name in detectors:
        if name in CHAT_DETECTORS:
            continue
        rule = RULES[name]
        mine = [r for t in rule.types for r in by_type.get(t, ())]
        if not mine:
            continue
        per_room: dict[str, tuple[str, list[datetime]]] = {}
        for r in mine:
            room = r[ROW_ROOM_ID]
            cls_times = per_room.get(room)
            if cls_times is None:
                per_room[room] = (r[ROW_CLASS], [r[ROW_OCCURRED_AT]])
            else:
                cls_times[1].append(r[ROW_OCCURRED_AT])
        settings: dict[str, P.Effective] = {}
        ranges: list[tuple[str, datetime, datetime]] = []
        for room, (cls, times) in per_room.items():
            eff = effective(name, cls, room)
            if not eff.enabled:
                continue
            settings[room] = eff
            ranges += [(room, lo, hi) for lo, hi in merge_ranges(times, eff.window_seconds)]
        if not ranges:
            continue
        span = max(s.window_seconds for s in settings.values())
        least = min(rule.least_rows(s.params) for s in settings.values())
        reads.append(Read(rule, ranges, span, least))
        settings_of[name] = settings
    return reads, settings_of


def _groups(stored: list[Stored]) -> Iterable[tuple[str, str, list[Stored]]]:
    """(room, subject, rows) of rows ordered by room and subject."""
    start = 0
    for i in range(1, len(stored) + 1):
        if i == len(stored) or (stored[i].room_id, stored[i].subject) != (
            stored[start].room_id,
            stored[start].subject,
        ):
            yield stored[start].room_id, stored[start].subject, stored[start:i]
            start = i


async def _raid_thresholds(
    conn: asyncpg.Connection, stored: list[Stored], settings: dict[str, P.Effective]
) -> dict[tuple[str, datetime], int]:
    """{(room, UTC hour): raid threshold} for the hours the candidate windows start in: max(min_users,
    multiplier x the room's mean entries in that hour of the week over the baseline weeks before, scaled
    to the window). A room with no entries in those hours has no baseline: min_users alone."""
    hours = {(s.room_id, s.occurred_at.replace(minute=0, second=0, microsecond=0)) for s in stored}
    ranges = []
    for room, hour in hours:
        for k in range(1, settings[room].params["baseline_weeks"] + 1):
            ranges.append((room, hour - k * _WEEK, hour - k * _WEEK + _HOUR))
    counts = await hour_counts(conn, ranges, RULES[P.RAID].types)
    out: dict[tuple[str, datetime], int] = {}
    for room, hour in hours:
        p = settings[room].params
        weeks = p["baseline_weeks"]
        total = sum(
            counts.get((room, hour - k * _WEEK, hour - k * _WEEK + _HOUR), 0) for k in range(1, weeks + 1)
        )
        out[(room, hour)] = raid_threshold(p, total / weeks if weeks else None)
    return out
