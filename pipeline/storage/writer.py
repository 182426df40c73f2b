"""The batch writer: one transaction per batch, binary COPY, offsets of record in the same transaction.

Called by the ingest consumer for each prepared batch. Contract:
- On return, every row, dead letter, room change and the batch's next offsets are durably committed
  together; nothing of the batch is committed otherwise.
- Records an earlier transaction already wrote (their offset is below the stored next offset) are skipped,
  so a re-delivered batch, or a retry after a commit whose answer was lost, writes nothing twice.
- A row PostgreSQL refuses is found by splitting the batch and returned as a `storage_rejected` dead letter;
  its neighbours are stored.
- `StorageUnavailableError` means PostgreSQL could not be reached: nothing was (knowingly) written; the
  caller retries the same batch later, and the fence makes that safe.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import asyncpg

from pipeline.errors import StorageUnavailableError
from pipeline.events.reasons import Reason
from pipeline.storage.batch import (
    DEAD_LETTER_COLUMNS,
    DL_OFFSET,
    DL_PARTITION,
    EVENT_COLUMNS,
    ROW_OFFSET,
    ROW_PARTITION,
    RoomChange,
    WriteBatch,
    WriteOutcome,
)
from pipeline.storage.db import CONNECTION_ERRORS
from pipeline.storage.partitions import PartitionManager

#: Errors that mean "this row is unacceptable" (data exceptions and integrity violations other than
#: duplicates); a batch failing with one of these is split to find the row.
ROW_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.DataError,
    asyncpg.IntegrityConstraintViolationError,
    asyncpg.exceptions.UntranslatableCharacterError,
    asyncpg.exceptions.CharacterNotInRepertoireError,
)
_STAGING = "roomlogs_events_staging"


class BatchWriter:
    def __init__(self, pool: asyncpg.Pool, partitions: PartitionManager) -> None:
        self._pool = pool
        self._partitions = partitions

    async def write(self, batch: WriteBatch, received_at: datetime) -> WriteOutcome:
        started = time.perf_counter()
        try:
            async with self._pool.acquire() as conn:
                try:
                    outcome = await self._write(conn, batch, received_at)
                except asyncpg.CheckViolationError:
                    # `events` has no CHECK constraints: this is "no partition of relation found for row",
                    # a partition another process dropped or we never saw. Re-read the catalog, retry once.
                    await self._partitions.load(conn)
                    outcome = await self._write(conn, batch, received_at)
        except CONNECTION_ERRORS as e:
            raise StorageUnavailableError(f"PostgreSQL unavailable: {type(e).__name__}: {e}") from e
        outcome.write_seconds = time.perf_counter() - started
        return outcome

    async def _write(
        self, conn: asyncpg.Connection, batch: WriteBatch, received_at: datetime
    ) -> WriteOutcome:
        outcome = WriteOutcome()
        outcome.partitions_created = await self._partitions.ensure(
            conn, batch.event_days, batch.dead_letter_days
        )
        async with conn.transaction():
            fenced = await self._fence(conn, batch)
            rows, dead_letters, changes = batch.rows, batch.dead_letters, batch.room_changes
            if fenced:
                rows = [r for r in rows if r[ROW_OFFSET] >= fenced.get(r[ROW_PARTITION], -1)]
                dead_letters = [d for d in dead_letters if d[DL_OFFSET] >= fenced.get(d[DL_PARTITION], -1)]
                changes = [c for c in changes if c.src_offset >= fenced.get(c.src_partition, -1)]
                outcome.fenced = len(batch.rows) + len(batch.dead_letters) - len(rows) - len(dead_letters)
            if rows:
                await self._copy_events(conn, rows, batch.topic, received_at, outcome)
            if outcome.rejected:
                dead_letters = [*dead_letters, *outcome.rejected]
                # dated `received_at`: its day may not be among the batch's own dead-letter days
                outcome.partitions_created += await self._partitions.ensure(conn, (), [received_at.date()])
            if dead_letters:
                await conn.copy_records_to_table(
                    "dead_letters", records=dead_letters, columns=DEAD_LETTER_COLUMNS
                )
            outcome.dead_lettered = len(dead_letters)
            if changes:
                await apply_room_changes(conn, changes)
            await conn.executemany(
                """INSERT INTO ingest_offsets (consumer_group, topic, partition, next_offset)
                   VALUES ($1, $2, $3, $4)
                   ON CONFLICT (consumer_group, topic, partition)
                   DO UPDATE SET next_offset = GREATEST(ingest_offsets.next_offset, EXCLUDED.next_offset),
                                 updated_at = now()""",
                [(batch.consumer_group, batch.topic, p, o) for p, o in batch.next_offsets.items()],
            )
        return outcome

    async def _fence(self, conn: asyncpg.Connection, batch: WriteBatch) -> dict[int, int]:
        """Lock this batch's offset rows; return {partition: stored next offset} where it overlaps."""
        stored = await conn.fetch(
            """SELECT partition, next_offset FROM ingest_offsets
                WHERE consumer_group = $1 AND topic = $2 AND partition = ANY($3::int[])
                FOR UPDATE""",
            batch.consumer_group,
            batch.topic,
            list(batch.first_offsets),
        )
        return {
            r["partition"]: r["next_offset"]
            for r in stored
            if r["next_offset"] > batch.first_offsets[r["partition"]]
        }

    async def _copy_events(
        self,
        conn: asyncpg.Connection,
        rows: Sequence[tuple[Any, ...]],
        topic: str,
        received_at: datetime,
        outcome: WriteOutcome,
        *,
        skip_duplicates: bool = False,
    ) -> None:
        """Store `rows` (inside the batch's transaction, each attempt in a savepoint).

        Fast path: binary COPY straight into `events`. A duplicate event id (a producer retry) switches to
        COPY into a staging table + INSERT ... ON CONFLICT DO NOTHING. A row PostgreSQL refuses is found by
        splitting in halves; only it becomes a dead letter.
        """
        try:
            async with conn.transaction():
                if skip_duplicates:
                    stored = await self._insert_skipping_duplicates(conn, rows)
                else:
                    await conn.copy_records_to_table("events", records=rows, columns=EVENT_COLUMNS)
                    stored = len(rows)
        except asyncpg.UniqueViolationError:
            await self._copy_events(conn, rows, topic, received_at, outcome, skip_duplicates=True)
        except asyncpg.CheckViolationError:
            raise  # a missing partition, not a bad row: handled by write()
        except ROW_ERRORS:
            if len(rows) == 1:
                outcome.rejected.append(_rejected(rows[0], topic, received_at, "refused by PostgreSQL"))
                return
            mid = len(rows) // 2
            for half in (rows[:mid], rows[mid:]):
                await self._copy_events(
                    conn, half, topic, received_at, outcome, skip_duplicates=skip_duplicates
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


def _rejected(row: tuple[Any, ...], topic: str, received_at: datetime, detail: str) -> tuple[Any, ...]:
    # The raw Kafka bytes are not at hand here; keep the normalized event's identity for the operator.
    ident = f"{detail}: event {row[0]} of type {row[4]} in room {row[3]}"
    return (
        received_at,
        Reason.STORAGE_REJECTED.value,
        ident,
        topic,
        row[ROW_PARTITION],
        row[ROW_OFFSET],
        None,
    )


async def apply_room_changes(conn: asyncpg.Connection, changes: Sequence[RoomChange]) -> None:
    """Fold the batch's settings and permission changes into `rooms` / `room_moderators`.

    Changes are folded in event order first (last settings per room, last owner per room, last add/remove
    per moderator), then written with one `executemany` per kind: a handful of round trips per batch
    whatever the number of changes.
    """
    settings: dict[str, RoomChange] = {}
    owners: dict[str, RoomChange] = {}
    moderators: dict[tuple[str, str], RoomChange] = {}
    known: dict[str, RoomChange] = {}
    for ch in changes:
        known.setdefault(ch.room_id, ch)
        if ch.kind == "settings":
            settings[ch.room_id] = ch
        elif ch.kind == "owner_transferred":
            owners[ch.room_id] = ch
        elif ch.kind in ("moderator_added", "moderator_removed") and ch.user_id is not None:
            moderators[(ch.room_id, ch.user_id)] = ch
    await conn.executemany(
        """INSERT INTO rooms (room_id, retention_class, updated_at) VALUES ($1, $2, $3)
           ON CONFLICT (room_id) DO NOTHING""",
        [(c.room_id, c.retention_class, c.occurred_at) for c in known.values()],
    )
    if settings:
        await conn.executemany(
            """UPDATE rooms SET privacy = $2, max_occupancy = $3, retention_class = $4, updated_at = $5
                WHERE room_id = $1""",
            [
                (c.room_id, c.privacy, c.max_occupancy, c.retention_class, c.occurred_at)
                for c in settings.values()
            ],
        )
    if owners:
        await conn.executemany(
            "UPDATE rooms SET owner_id = $2, updated_at = $3 WHERE room_id = $1",
            [(c.room_id, c.user_id, c.occurred_at) for c in owners.values()],
        )
    added = [
        (c.room_id, c.user_id, c.occurred_at) for c in moderators.values() if c.kind == "moderator_added"
    ]
    removed = [(c.room_id, c.user_id) for c in moderators.values() if c.kind == "moderator_removed"]
    if added:
        await conn.executemany(
            """INSERT INTO room_moderators (room_id, user_id, since) VALUES ($1, $2, $3)
               ON CONFLICT DO NOTHING""",
            added,
        )
    if removed:
        await conn.executemany("DELETE FROM room_moderators WHERE room_id = $1 AND user_id = $2", removed)
