"""The batch writer: one transaction per batch, binary COPY, offsets of record in the same transaction.

Called by the ingest service (through its sink, pipeline/ingest/sink.py) for each prepared batch. Contract:
- On return, every row, dead letter, room change and the batch's next offsets are durably committed
  together; nothing of the batch is committed otherwise.
- Records an earlier transaction already wrote (their offset is below the stored next offset) are skipped,
  so a re-delivered batch, or a retry after a commit whose answer was lost, writes nothing twice.
- A batch that continues from offsets of record which are no longer stored (`WriteBatch.resumes_from`: a
  restored database, an operator's move back) raises `OffsetsMovedError` and writes nothing: committing it
  would jump over records nobody wrote.
- An event id is stored at most once, whatever class or timestamp its copies carry
  (pipeline.storage.event_ids): a copy with the same content is counted as a duplicate, one with other
  content becomes a `conflicting_duplicate` dead letter (and its room change is not applied).
- A deletion committed before this transaction covers its rows even if the batch was built earlier, and no
  deletion commits while it runs (pipeline.storage.deletions).
- Room state changes are applied only where they are newer by event version (pipeline.storage.rooms).
- A row PostgreSQL refuses is found by splitting the batch and returned as a `storage_rejected` dead letter;
  its neighbours are stored.
- Every dead letter is queued for the dead-letter topic in the same transaction (pipeline.storage.outbox).
- With detectors (pipeline.detectors), the alerts of the windows around the rows stored are evaluated over
  the stored rows and inserted in the same transaction (`WriteOutcome.alerts`); a detector's failure fails
  the batch like any storage error, so alerts are never lost or half-stored.
- `StorageUnavailableError` means PostgreSQL could not be reached: nothing was (knowingly) written; the
  caller retries the same batch later, and the fence makes that safe.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from datetime import date, datetime, timedelta
from typing import Any, Protocol

import asyncpg

from pipeline.events.deadletter import fingerprint
from pipeline.events.reasons import Reason
from pipeline.retention_rules import ClassRule
from pipeline.storage import db, event_ids, offsets, outbox, seals
from pipeline.storage.batch import (
    DEAD_LETTER_COLUMNS,
    EVENT_COLUMNS,
    ROW_ACTOR_ID,
    ROW_CLASS,
    ROW_EVENT_ID,
    ROW_EVENT_TYPE,
    ROW_OCCURRED_AT,
    ROW_OFFSET,
    ROW_PARTITION,
    ROW_ROOM_ID,
    DeadLetter,
    RoomChange,
    WriteBatch,
    WriteOutcome,
)
from pipeline.storage.deletions import Deletions
from pipeline.storage.event_ids import conflicting_copy, set_aside
from pipeline.storage.partitions import PartitionManager, day_of
from pipeline.storage.rooms import Classify, apply_room_changes

#: Errors that mean "this row is unacceptable" (data exceptions and integrity violations other than
#: duplicates); a batch failing with one of these is split to find the row.
ROW_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.DataError,
    asyncpg.IntegrityConstraintViolationError,
    asyncpg.exceptions.UntranslatableCharacterError,
    asyncpg.exceptions.CharacterNotInRepertoireError,
)
_STAGING = "roomlogs_events_staging"
#: WriteBatch.raw_value: the value of the batch's record at (partition, offset), as received
RawValue = Callable[[int, int], bytes | None]


class Detect(Protocol):
    """The detectors (pipeline.detectors.Detectors): called with the rows the batch stored, inside its
    transaction; return the alerts stored now."""

    async def detect(
        self, conn: asyncpg.Connection, rows: Sequence[tuple[Any, ...]], deletion_seq: int | None = None
    ) -> list[asyncpg.Record]: ...

    def settle(self, committed: bool) -> None:
        """The batch's write ended: committed, or failed (then nothing remembered may be trusted)."""

    def figures(self) -> tuple[dict[str, int], int | None]:
        """Of the last `detect`: rooms of its chat bounded from memory / read from storage; and the chat
        rows remembered (None: no memory)."""


#: How often a batch PostgreSQL rolled back to break a deadlock (or a serialization failure) is written again.
_ROLLED_BACK_ATTEMPTS = 5


class BatchWriter:
    def __init__(
        self,
        pool: asyncpg.Pool,
        partitions: PartitionManager,
        *,
        deletions: Deletions | None = None,
        classify: Classify | None = None,
        late_window_seconds: float | None = None,
        detectors: Detect | None = None,
    ) -> None:
        self._pool = pool
        self._detectors = detectors
        self._partitions = partitions
        #: days close this long after they end (pipeline.retention_rules.closed_before); None: never refuse
        self._late_window = late_window_seconds
        #: the schema has a seal key: closed days are (or will be) sealed, their new events refused
        self._sealing_on = False
        #: authorized deletions, shared with the batch builder (refreshed here, inside each transaction)
        self.deletions = deletions if deletions is not None else Deletions()
        self._classify = classify or ClassRule()

    async def write(self, batch: WriteBatch, received_at: datetime) -> WriteOutcome:
        started = time.perf_counter()
        try:
            async with db.acquire(self._pool) as conn:  # an outage, even mid-release: StorageUnavailableError
                for attempt in range(1, _ROLLED_BACK_ATTEMPTS + 1):
                    try:
                        outcome = await self._write(conn, batch, received_at)
                    except asyncpg.CheckViolationError:
                        # `events` has no CHECK constraints: this is "no partition of relation found for
                        # row", a partition another process dropped or we never saw. Re-read the catalog,
                        # retry once.
                        await self._partitions.load(conn)
                        outcome = await self._write(conn, batch, received_at)
                    except (asyncpg.DeadlockDetectedError, asyncpg.SerializationError):
                        # PostgreSQL rolled the transaction back (a deadlock with, say, a schema restored
                        # in one transaction under the worker): nothing of it committed; write it again
                        if attempt == _ROLLED_BACK_ATTEMPTS:
                            raise
                        await asyncio.sleep(0.05 * attempt)
                        continue
                    break
        except BaseException:
            # nothing of the batch is known committed, and the database may no longer be the one the
            # detectors remember (restored, failed over): they forget it
            if self._detectors is not None:
                self._detectors.settle(False)
            raise
        outcome.write_seconds = time.perf_counter() - started
        return outcome

    async def _write(
        self, conn: asyncpg.Connection, batch: WriteBatch, received_at: datetime
    ) -> WriteOutcome:
        outcome = WriteOutcome()
        outcome.partitions_created = await self._partitions.ensure(
            conn, batch.event_days, batch.dead_letter_days
        )
        await self._write_in_transaction(conn, batch, received_at, outcome)
        if self._detectors is not None:  # committed
            self._detectors.settle(True)
            outcome.detect_rooms, outcome.detect_memory_rows = self._detectors.figures()
        return outcome

    async def _write_in_transaction(
        self, conn: asyncpg.Connection, batch: WriteBatch, received_at: datetime, outcome: WriteOutcome
    ) -> None:
        async with conn.transaction():
            fenced = await offsets.lock_for_batch(
                conn, batch.consumer_group, batch.topic, batch.first_offsets, batch.resumes_from
            )
            rows, variants = batch.rows, batch.variants
            dead_letters, changes = batch.dead_letters, batch.room_changes
            if fenced:
                rows = [r for r in rows if r[ROW_OFFSET] >= fenced.get(r[ROW_PARTITION], -1)]
                variants = [v for v in variants if v[ROW_OFFSET] >= fenced.get(v[ROW_PARTITION], -1)]
                dead_letters = [d for d in dead_letters if d.src_offset >= fenced.get(d.src_partition, -1)]
                changes = [c for c in changes if c.src_offset >= fenced.get(c.src_partition, -1)]
                outcome.fenced = len(batch.rows) + len(batch.dead_letters) - len(rows) - len(dead_letters)
            if self._partitions.retiring and rows:
                rows = _not_retiring(rows, self._partitions.retiring, outcome)
            # No deletion can commit from here to our commit; one committed before is seen now.
            if await self.deletions.hold_and_refresh(conn) and (rows or variants):
                rows = self._not_deleted(rows, outcome)
                variants = self._not_deleted(variants, outcome)
            copies: list[tuple[tuple[Any, ...], datetime | None]] = []
            if rows:
                reg = await event_ids.register(conn, [(r[ROW_EVENT_ID], r[ROW_OCCURRED_AT]) for r in rows])
                if len(reg.new) < len(rows):
                    copies = [(rows[i], at) for i, at in reg.known.items()]
                    rows = [rows[i] for i in reg.new]
            if rows and self._late_window is not None:
                rows = await self._not_sealed(conn, rows, batch, received_at, outcome)
            if rows:
                await self._copy_events(conn, rows, batch.topic, received_at, outcome, batch.raw_value)
            if variants:  # after this batch's rows are in: a variant may be a copy of one of them
                times = await event_ids.stored_times(conn, [v[ROW_EVENT_ID] for v in variants])
                copies += [(v, times.get(v[ROW_EVENT_ID])) for v in variants]
            if copies:
                changes = await self._settle(
                    conn, copies, changes, batch.topic, received_at, outcome, batch.raw_value
                )
            if outcome.rejected_event_ids:
                await event_ids.forget(conn, outcome.rejected_event_ids)
            if rows and self._detectors is not None:
                await self._detect(conn, rows, outcome)
            extra = [*outcome.conflicts, *outcome.rejected, *outcome.day_sealed]
            if extra:
                dead_letters = [*dead_letters, *extra]
                # dated `received_at`: its day may not be among the batch's own dead-letter days
                outcome.partitions_created += await self._partitions.ensure(conn, (), [received_at.date()])
            if dead_letters:
                await conn.copy_records_to_table(
                    "dead_letters", records=dead_letters, columns=DEAD_LETTER_COLUMNS
                )
                outcome.outboxed = await outbox.enqueue(conn, dead_letters)
            outcome.dead_lettered = len(dead_letters)
            if changes:
                await apply_room_changes(conn, changes, self._classify)
            await offsets.advance(
                conn, batch.consumer_group, batch.topic, batch.next_offsets, batch.last_records
            )

    async def _detect(
        self, conn: asyncpg.Connection, rows: list[tuple[Any, ...]], outcome: WriteOutcome
    ) -> None:
        """The detectors over the rows this transaction stored (not those PostgreSQL refused)."""
        assert self._detectors is not None
        if outcome.rejected_event_ids:
            refused = set(outcome.rejected_event_ids)
            rows = [r for r in rows if r[ROW_EVENT_ID] not in refused]
        started = time.perf_counter()
        raised = await self._detectors.detect(conn, rows, self.deletions.seq)
        outcome.alerts = [r["detector"] for r in raised]
        outcome.detect_seconds = time.perf_counter() - started

    async def _not_sealed(
        self,
        conn: asyncpg.Connection,
        rows: list[tuple[Any, ...]],
        batch: WriteBatch,
        received_at: datetime,
        outcome: WriteOutcome,
    ) -> list[tuple[Any, ...]]:
        """New rows of sealed days, where this schema seals, become `day_sealed` dead letters (their ids
        forgotten). Their room changes are still applied (the batch's changes are left alone): the room's
        state is not the sealed log, and a moderator removed or an owner replaced must lose access whenever
        the change arrives.

        A day is refused once it is sealed (it has a daily head), not merely closed by the clock: a closed
        day the sealing run has not reached yet still takes its late rows, and its seal covers them. That is
        what a database restored from a backup needs, whose closed days lost rows the backup did not have:
        read again, they are stored, and those days sealed whole (a lagging worker too). Exact against the
        sealing run: whether a day is sealed is read under the seal lock held shared, which the run holds
        exclusively while it reads and seals a day (pipeline/sealing/run.py); either it waits for this
        batch and its seal covers these rows, or this batch sees the day's head and refuses them."""
        assert self._late_window is not None
        # only days the clock may have closed can be sealed (the sealing run seals closed days only)
        maybe = (received_at - timedelta(seconds=self._late_window) + timedelta(days=1)).date()
        candidates = {d for r in rows if (d := day_of(r[ROW_OCCURRED_AT])) < maybe}
        if not candidates:
            return rows  # the usual batch: every row of an open day
        # Under the lock before anything is asked, sealing's first run included: a batch that finds no key
        # yet, and stores these rows, is waited for by the run that registered the key meanwhile.
        await conn.execute(seals.SEAL_LOCK_SHARED)
        if not self._sealing_on:
            self._sealing_on = bool(await conn.fetchval("SELECT EXISTS (SELECT 1 FROM seal_keys)"))
            if not self._sealing_on:
                return rows
        sealed = await seals.headed_days(conn, candidates)
        if not sealed:
            return rows
        kept: list[tuple[Any, ...]] = []
        refused: list[tuple[Any, ...]] = []
        for r in rows:
            (refused if day_of(r[ROW_OCCURRED_AT]) in sealed else kept).append(r)
        for r in refused:
            detail = (
                f"event {r[ROW_EVENT_ID]} of {day_of(r[ROW_OCCURRED_AT])} came after that day was closed and "
                "sealed; the seal says the day's events are those it covers (its room change, if any, is "
                "applied)"
            )
            raw = _raw(batch.raw_value, r)
            outcome.day_sealed.append(set_aside(r, Reason.DAY_SEALED, detail, received_at, batch.topic, raw))
        await event_ids.forget(conn, [r[ROW_EVENT_ID] for r in refused])
        return kept

    def _not_deleted(self, rows: list[tuple[Any, ...]], outcome: WriteOutcome) -> list[tuple[Any, ...]]:
        """Drop rows a deletion made after the batch was built covers (counted in `outcome.suppressed`)."""
        covers = self.deletions.covers
        kept = []
        for r in rows:
            gone = covers(r[ROW_ROOM_ID], r[ROW_EVENT_TYPE], r[ROW_ACTOR_ID], r[ROW_OCCURRED_AT])
            if gone:
                outcome.suppressed[gone] = outcome.suppressed.get(gone, 0) + 1
            else:
                kept.append(r)
        return kept

    async def _settle(
        self,
        conn: asyncpg.Connection,
        copies: list[tuple[tuple[Any, ...], datetime | None]],
        changes: list[RoomChange],
        topic: str,
        received_at: datetime,
        outcome: WriteOutcome,
        raw_value: RawValue | None,
    ) -> list[RoomChange]:
        """Copies of event ids stored before (this batch or earlier): count the duplicates, dead-letter the
        conflicting ones (with the fingerprint of the record received, read through `raw_value`) and take
        back the room changes those would have made. Rare: a replay, a resend."""
        duplicates, conflicts = await event_ids.settle(conn, copies)
        outcome.duplicates += len(duplicates)
        if not conflicts:
            return changes
        dropped = set()
        for row, stored_at, differs in conflicts:
            raw = _raw(raw_value, row)
            outcome.conflicts.append(conflicting_copy(row, received_at, topic, stored_at, raw, differs))
            outcome.conflicting_rooms.add(row[ROW_ROOM_ID])
            dropped.add((row[ROW_PARTITION], row[ROW_OFFSET]))
        return [c for c in changes if (c.src_partition, c.src_offset) not in dropped]

    async def _copy_events(
        self,
        conn: asyncpg.Connection,
        rows: Sequence[tuple[Any, ...]],
        topic: str,
        received_at: datetime,
        outcome: WriteOutcome,
        raw_value: RawValue | None,
        *,
        skip_duplicates: bool = False,
    ) -> None:
        """Store `rows` (inside the batch's transaction, each attempt in a savepoint).

        Fast path: binary COPY straight into `events`. A duplicate event id (a producer retry) switches to
        COPY into a staging table + INSERT ... ON CONFLICT DO NOTHING. A row PostgreSQL refuses is found by
        splitting in halves; only it becomes a dead letter, with the fingerprint of the record received
        (read through `raw_value`).
        """
        try:
            async with conn.transaction():
                if skip_duplicates:
                    stored = await self._insert_skipping_duplicates(conn, rows)
                else:
                    await conn.copy_records_to_table("events", records=rows, columns=EVENT_COLUMNS)
                    stored = len(rows)
        except asyncpg.UniqueViolationError:
            await self._copy_events(conn, rows, topic, received_at, outcome, raw_value, skip_duplicates=True)
        except asyncpg.CheckViolationError:
            raise  # a missing partition, not a bad row: handled by write()
        except ROW_ERRORS:
            if len(rows) == 1:
                raw = _raw(raw_value, rows[0])
                outcome.rejected.append(_rejected(rows[0], topic, received_at, "refused by PostgreSQL", raw))
                outcome.rejected_event_ids.append(rows[0][ROW_EVENT_ID])
                return
            mid = len(rows) // 2
            for half in (rows[:mid], rows[mid:]):
                await self._copy_events(
                    conn, half, topic, received_at, outcome, raw_value, skip_duplicates=skip_duplicates
                )
        else:
            outcome.stored += stored
            outcome.duplicates += len(rows) - stored

    async def _insert_skipping_duplicates(
        self, conn: asyncpg.Connection, rows: Sequence[tuple[Any, ...]]
    ) -> int:
        await conn.execute(
            f"""CREATE TEMP TABLE IF NOT EXISTS {_STAGING}
                (LIKE events INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"""
        )
        cols = ", ".join(EVENT_COLUMNS)
        await conn.execute(f"TRUNCATE {_STAGING}")
        await conn.copy_records_to_table(_STAGING, records=rows, columns=EVENT_COLUMNS)
        status = await conn.execute(
            f"INSERT INTO events ({cols}) SELECT {cols} FROM {_STAGING} ON CONFLICT DO NOTHING"
        )
        return int(status.rsplit(" ", 1)[-1])


def _rejected(
    row: tuple[Any, ...], topic: str, received_at: datetime, detail: str, raw: bytes | None
) -> DeadLetter:
    """The dead letter of a row PostgreSQL refused: the normalized event's identity for the operator, and
    the fingerprint of `raw`, the record's value as received (None: not at hand), as every dead letter has."""
    ident = f"{detail}: event {row[ROW_EVENT_ID]} of type {row[ROW_EVENT_TYPE]} in room {row[ROW_ROOM_ID]}"
    return DeadLetter(
        received_at,
        Reason.STORAGE_REJECTED.value,
        ident,
        topic,
        row[ROW_PARTITION],
        row[ROW_OFFSET],
        None,
        *fingerprint(raw),
    )


def _raw(raw_value: RawValue | None, row: tuple[Any, ...]) -> bytes | None:
    """The value of the record `row` was made from, as received (None: the batch did not bring it)."""
    return raw_value(row[ROW_PARTITION], row[ROW_OFFSET]) if raw_value is not None else None


def _not_retiring(
    rows: list[tuple[Any, ...]], retiring: set[tuple[str, date]], outcome: WriteOutcome
) -> list[tuple[Any, ...]]:
    """Rows of a day retention is dropping right now are expired (its clock got there before ours)."""
    kept = []
    for r in rows:
        cls = r[ROW_CLASS]
        if (cls, day_of(r[ROW_OCCURRED_AT])) in retiring:
            outcome.expired[cls] = outcome.expired.get(cls, 0) + 1
        else:
            kept.append(r)
    return kept
