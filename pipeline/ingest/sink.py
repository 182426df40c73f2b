"""Writing batches: one in flight at a time, waited out through PostgreSQL outages, fenced by generation.

Who calls it: the ingest loop. It `launch`es a batch once the previous one is `finish`ed, so normalizing
batch N+1 overlaps writing batch N (Python and PostgreSQL each keep a core busy). What a failure means:

- PostgreSQL unreachable (`StorageUnavailableError`, a dropped connection): nothing of the batch was
  knowingly written. The sink marks ingest paused, waits with capped back-off while the fetcher keeps the
  group membership alive (`idle`), and writes the same batch again: the offsets of record fence off
  whatever an ambiguous commit did write. One log line when the outage starts, one when it ends.
- A rebalance while a write waits out an outage: the write is dropped (`finish` answers None), its records
  are read again by whoever holds the partitions now.
- `OffsetsMovedError`: the offsets of record moved back under the batch (a restored database, an
  operator's move). Nothing of it was written; it propagates to the loop, which judges those partitions.
- Anything else from PostgreSQL is a bug and propagates: the worker ends instead of retrying forever.

`read(fn)` runs the loop's reads (room state before a batch is built) under the same outage rule.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pipeline.errors import StorageUnavailableError
from pipeline.ingest.backoff import Backoff
from pipeline.ingest.prepare import BatchStats
from pipeline.logs import outage_log
from pipeline.metrics import IngestMetrics
from pipeline.settings import Settings
from pipeline.storage.batch import WriteBatch, WriteOutcome
from pipeline.storage.db import OUTAGES
from pipeline.storage.writer import BatchWriter

__all__ = ["BatchSink", "Written"]

log = logging.getLogger("roomlogs.ingest")

#: one line when PostgreSQL goes away, one when it is back (shared with the rest of the process)
postgres_outage = outage_log("PostgreSQL")


@dataclass(slots=True)
class _InFlight:
    batch: WriteBatch
    stats: BatchStats
    received_at: datetime
    #: the fetcher's generation the batch was read under (a write that outlives a rebalance is dropped)
    generation: int
    task: asyncio.Task[WriteOutcome]


@dataclass(frozen=True, slots=True)
class Written:
    """A batch committed: what it carried, what the ingest stage counted, what the writer decided."""

    batch: WriteBatch
    stats: BatchStats
    outcome: WriteOutcome


class BatchSink:
    def __init__(
        self,
        settings: Settings,
        writer: BatchWriter,
        metrics: IngestMetrics,
        *,
        idle: Callable[[float], Awaitable[None]],
        resume: Callable[[], None],
        generation: Callable[[], int],
        stopping: asyncio.Event,
    ) -> None:
        self._writer = writer
        self._metrics = metrics
        self._retry = (settings.db_retry_initial_seconds, settings.db_retry_max_seconds)
        self._idle = idle
        self._resume = resume
        self._generation = generation
        self._stopping = stopping
        self._in_flight: _InFlight | None = None
        #: ingest waits for PostgreSQL (/readyz says so; `roomlogs_ingest_paused`)
        self.paused = False

    @property
    def in_flight(self) -> bool:
        """A batch is being written or its outcome not yet handed back."""
        return self._in_flight is not None

    def launch(self, batch: WriteBatch, stats: BatchStats, received_at: datetime, generation: int) -> None:
        assert self._in_flight is None, "finish() the batch in flight first"
        task = asyncio.create_task(self._writer.write(batch, received_at))
        self._in_flight = _InFlight(batch, stats, received_at, generation, task)

    async def finish(self) -> Written | None:
        """Wait for the write in flight, retrying it through outages; None when there is none, or it was
        dropped (a rebalance, or a stop that could not wait out the outage). Raises OffsetsMovedError."""
        job = self._in_flight
        if job is None:
            return None
        backoff = self._backoff()
        try:
            while True:
                try:
                    outcome = await job.task
                    break
                except StorageUnavailableError as e:
                    self._metrics.storage_unavailable.inc()
                    if job.generation != self._generation():
                        return None  # revoked meanwhile: the records are read again from the stored offsets
                    postgres_outage.down(e.__cause__ or e, "ingest paused, retrying with back-off")
                    self._pause(True)
                    await self._idle(backoff.next_delay())
                    if self._stopping.is_set() and backoff.exhausted:
                        log.warning("stopping with a batch unwritten; it will be read again on restart")
                        return None
                    job.task = asyncio.create_task(self._writer.write(job.batch, job.received_at))
        finally:
            self._in_flight = None
        if self.paused:
            postgres_outage.up("ingest resumed")
            self._pause(False)
        return Written(job.batch, job.stats, outcome)

    async def settle(self, within_seconds: float) -> None:
        """Let the write in flight land (or fail) before partitions change hands or offsets are read; its
        outcome is still handed back by the next `finish`."""
        job = self._in_flight
        if job is not None:
            try:
                await asyncio.wait_for(asyncio.shield(job.task), within_seconds)
            except Exception:  # noqa: BLE001 - finish() sees the same error and decides
                return

    @property
    def landed(self) -> bool:
        """The write in flight has committed (its outcome waits for `finish`)."""
        job = self._in_flight
        return job is not None and job.task.done() and not job.task.cancelled() and not job.task.exception()

    def drop(self) -> None:
        """Forget the write in flight (its partitions are being judged again; it is read again if needed)."""
        self._in_flight = None

    async def read(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> bool:
        """`await fn(*args)` against PostgreSQL, waiting out an outage. False when a rebalance or a stop
        made it moot."""
        generation = self._generation()
        backoff = self._backoff()
        while True:
            try:
                await fn(*args)
            except OUTAGES as e:
                postgres_outage.down(e, "ingest paused, retrying with back-off")
                self._metrics.storage_unavailable.inc()
                self._pause(True)
                if self._stopping.is_set() or generation != self._generation():
                    return False
                await self._idle(backoff.next_delay())
                continue
            if self.paused:
                postgres_outage.up("ingest resumed")
                self._pause(False)
            return True

    def _backoff(self) -> Backoff:
        return Backoff(*self._retry)

    def _pause(self, paused: bool) -> None:
        self.paused = paused
        self._metrics.paused.set(1 if paused else 0)
        if not paused:
            self._resume()
