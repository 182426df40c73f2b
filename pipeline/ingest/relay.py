"""The relay loop both outboxes share: a queue in PostgreSQL sent to a Kafka topic until it is empty.

Who uses it: the dead-letter relay (pipeline/ingest/mirror.py: `dead_letter_outbox` to the dead-letter
topic) and the deletions relay (pipeline/ingest/deletion_log.py: `deletion_outbox` to the deletions
topic). A round (`drain`) claims queued rows inside a transaction, sends them,
awaits each acknowledgement and deletes exactly the acknowledged rows in that transaction, until the queue
is empty, raising `RelayStalledError` when some were not acknowledged; a subclass says how to claim, send,
mark done and count its queue. Rounds run after a wake-up or every `idle_seconds`, with capped back-off
after a failed one. PostgreSQL away is logged through the process's one outage log; a broker refusing or
not answering once when it starts failing and once when it flows again, with how long it lasted.
Delivery is at least once: a crash between the broker's acknowledgement and the commit sends again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from typing import Any

import asyncpg
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from prometheus_client import Counter, Gauge

from pipeline.ingest.backoff import Backoff
from pipeline.logs import outage_log
from pipeline.metrics import IngestMetrics
from pipeline.storage import db

__all__ = ["ROUND_IDLE_SECONDS", "OutboxRelay", "RelayStalledError"]

log = logging.getLogger("roomlogs.ingest.relay")
#: A round's transaction may wait this long for the broker's acknowledgements (longer than a worker's
#: sessions may otherwise stay idle in one: pipeline/storage/db.py WORKER_SESSION_SETTINGS).
ROUND_IDLE_SECONDS = 120
_postgres = outage_log("PostgreSQL")


class RelayStalledError(Exception):
    """Some claimed messages were not acknowledged this round (they stay queued)."""


class OutboxRelay:
    #: in log lines: what waits in the queue ("dead letters", "deletion requests")
    what = "messages"
    #: rows claimed per round, and the seconds between rounds when nothing wakes the relay
    claim_rows = 100
    idle_seconds = 30.0

    def __init__(
        self,
        pool: asyncpg.Pool,
        producer: AIOKafkaProducer,
        topic: str,
        metrics: IngestMetrics,
        *,
        claim_rows: int | None = None,
        idle_seconds: float | None = None,
        retry_initial_seconds: float = 0.5,
        retry_max_seconds: float = 30.0,
    ) -> None:
        self._pool = pool
        self._producer = producer
        self.topic = topic
        self._metrics = metrics
        self._sent, self._errors, self._pending = self.counters(metrics)
        self._claim_rows = claim_rows if claim_rows is not None else self.claim_rows
        self._idle_seconds = idle_seconds if idle_seconds is not None else self.idle_seconds
        self._retry = (retry_initial_seconds, retry_max_seconds)
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._failing_since: float | None = None
        self._requests = 0
        #: set once a round emptied the queue with nothing queued meanwhile (tests and the demo wait for it)
        self.drained = asyncio.Event()

    # --- what a subclass says about its queue -------------------------------------------------------
    def counters(self, metrics: IngestMetrics) -> tuple[Counter, Counter, Gauge]:
        """The queue's metrics: messages acknowledged, failed rounds, messages queued."""
        raise NotImplementedError

    async def claim(self, conn: asyncpg.Connection, limit: int) -> Sequence[Any] | None:
        """Lock up to `limit` queued rows, oldest first (None: another relay holds the queue now)."""
        raise NotImplementedError

    async def send(self, claimed: Sequence[Any]) -> list[int]:
        """Send the claimed rows; return the ids of those the broker acknowledged."""
        raise NotImplementedError

    async def done(self, conn: asyncpg.Connection, ids: list[int]) -> None:
        raise NotImplementedError

    async def queued(self, conn: asyncpg.Connection) -> int:
        raise NotImplementedError

    # --- the rounds ------------------------------------------------------------------------------------
    async def drain(self) -> int:
        """Send what is queued until the queue is empty; return how many were acknowledged."""
        total = 0
        while True:
            async with db.acquire(self._pool) as conn, conn.transaction():
                await conn.execute(f"SET LOCAL idle_in_transaction_session_timeout = '{ROUND_IDLE_SECONDS}s'")
                claimed = await self.claim(conn, self._claim_rows)
                if claimed is None:
                    return total
                if not claimed:
                    self._pending.set(0)
                    return total
                acked = await self.send(claimed)
                await self.done(conn, acked)
            total += len(acked)
            self._sent.inc(len(acked))
            if len(acked) < len(claimed):
                async with db.acquire(self._pool) as conn:
                    self._pending.set(await self.queued(conn))
                raise RelayStalledError(f"{len(claimed) - len(acked)} of {len(claimed)} not acknowledged")

    def wake(self) -> None:
        """Something was queued: run a round now."""
        self._requests += 1
        self.drained.clear()
        self._wake.set()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()

    async def run(self) -> None:
        backoff = Backoff(*self._retry)
        while not self._stopping.is_set():
            self._wake.clear()
            requests = self._requests
            try:
                await self.drain()
            except db.OUTAGES as e:
                self._errors.inc()
                _postgres.down(e, f"{self.what} wait in their outbox")
                await self._sleep(backoff.next_delay())
                continue
            except (KafkaError, RelayStalledError) as e:
                self._errors.inc()
                if self._failing_since is None:
                    self._failing_since = time.monotonic()
                    log.warning("topic %s: %s queued, retrying: %r", self.topic, self.what, e)
                await self._sleep(backoff.next_delay())
                continue
            _postgres.up()
            if self._failing_since is not None:
                log.warning(
                    "topic %s: %s flowing again after %.1f s",
                    self.topic,
                    self.what,
                    time.monotonic() - self._failing_since,
                )
                self._failing_since = None
            backoff = Backoff(*self._retry)
            if requests == self._requests:  # nothing queued since this round began
                self.drained.set()
            await self._sleep(self._idle_seconds)

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)
