"""The dead-letter relay: sends the outbox (pipeline/storage/outbox.py) to the dead-letter topic.

Started by the ingest service next to its batch loop, woken after every batch that queued dead letters and
every `idle_seconds` anyway (rows a crashed worker left behind). Each round locks up to `claim_rows` queued
messages (FOR UPDATE SKIP LOCKED, so several workers share the work), sends them, awaits each
acknowledgement on its own and deletes exactly the acknowledged rows in the same transaction.

- A message the broker (or the producer's request limit) refuses as too large is sent again as a reference
  (the dead letter's coordinates and size, header roomlogs.truncated=true): one oversize neighbour never
  costs the others their mirror.
- Any other failure (broker down, PostgreSQL down) keeps the rows queued and retries with capped back-off,
  logging once when it starts failing and once when it recovers.
Delivery is at least once: a crash between the broker's acknowledgement and the commit sends again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import asyncpg
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, MessageSizeTooLargeError, RecordListTooLargeError

from pipeline.errors import StorageUnavailableError
from pipeline.ingest.backoff import Backoff
from pipeline.metrics import IngestMetrics
from pipeline.storage import db, outbox
from pipeline.storage.db import CONNECTION_ERRORS

log = logging.getLogger("roomlogs.ingest.mirror")

_TOO_LARGE = (MessageSizeTooLargeError, RecordListTooLargeError)
#: A relay round's transaction may wait this long for the broker's acknowledgements.
_ROUND_IDLE_SECONDS = 120


class MirrorStalledError(Exception):
    """Some queued messages could not be sent this round (they stay queued)."""


class DeadLetterMirror:
    def __init__(
        self,
        pool: asyncpg.Pool,
        producer: AIOKafkaProducer,
        topic: str,
        metrics: IngestMetrics,
        *,
        claim_rows: int = 500,
        idle_seconds: float = 30.0,
        retry_initial_seconds: float = 0.5,
        retry_max_seconds: float = 30.0,
    ) -> None:
        self._pool = pool
        self._producer = producer
        self.topic = topic
        self._metrics = metrics
        self._claim_rows = claim_rows
        self._idle_seconds = idle_seconds
        self._retry_initial = retry_initial_seconds
        self._retry_max = retry_max_seconds
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._failing_since: float | None = None
        self._requests = 0
        #: True once a round emptied the queue (tests and the demo wait for it)
        self.drained = asyncio.Event()

    def wake(self) -> None:
        self._requests += 1
        self.drained.clear()
        self._wake.set()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()

    async def run(self) -> None:
        backoff = Backoff(self._retry_initial, self._retry_max)
        while not self._stopping.is_set():
            self._wake.clear()
            requests = self._requests
            try:
                await self.drain()
            except (KafkaError, MirrorStalledError, StorageUnavailableError, *CONNECTION_ERRORS) as e:
                self._metrics.dead_letter_publish_errors.inc()
                if self._failing_since is None:
                    self._failing_since = time.monotonic()
                    log.warning("dead-letter topic %s: mirrors queued, retrying: %s", self.topic, e)
                await self._sleep(backoff.next_delay())
                continue
            if self._failing_since is not None:
                log.warning(
                    "dead-letter topic %s: mirrors flowing again after %.1f s",
                    self.topic,
                    time.monotonic() - self._failing_since,
                )
                self._failing_since = None
            backoff = Backoff(self._retry_initial, self._retry_max)
            if requests == self._requests:  # nothing queued since this round began
                self.drained.set()
            await self._sleep(self._idle_seconds)

    async def drain(self) -> int:
        """Send queued messages until the queue is empty; return how many were acknowledged."""
        total = 0
        while True:
            async with db.acquire(self._pool) as conn, conn.transaction():
                # the round waits for the broker inside its transaction: longer than a worker's sessions
                # may otherwise stay idle in one (pipeline/worker/app.py)
                await conn.execute(
                    f"SET LOCAL idle_in_transaction_session_timeout = '{_ROUND_IDLE_SECONDS}s'"
                )
                messages = await outbox.claim(conn, self._claim_rows)
                if not messages:
                    self._metrics.dead_letter_outbox_pending.set(0)
                    return total
                acked = await self._send(messages)
                await outbox.done(conn, acked)
            total += len(acked)
            self._metrics.dead_letters_mirrored.inc(len(acked))
            if len(acked) < len(messages):
                async with self._pool.acquire() as conn:
                    self._metrics.dead_letter_outbox_pending.set(await outbox.pending(conn))
                raise MirrorStalledError(f"{len(messages) - len(acked)} of {len(messages)} not acknowledged")

    async def _send(self, messages: list[outbox.Message]) -> list[int]:
        sent: list[tuple[outbox.Message, asyncio.Future[object] | None]] = []
        for m in messages:
            try:
                sent.append((m, await self._produce(m, m.value, m.headers)))
            except _TOO_LARGE:
                sent.append((m, None))  # sent as a reference below
            except KafkaError as e:
                log.debug("dead letter %s not sent: %r", m.outbox_id, e)
                break
        acked: list[int] = []
        for m, future in sent:
            try:
                if future is not None:
                    await future
                else:
                    await self._as_reference(m)
            except _TOO_LARGE:
                try:
                    await self._as_reference(m)
                except KafkaError:
                    continue
            except KafkaError:
                continue
            acked.append(m.outbox_id)
        return acked

    async def _as_reference(self, m: outbox.Message) -> None:
        headers = [*m.headers, ("roomlogs.truncated", b"true")]
        await (await self._produce(m, outbox.reference_value(m), headers))
        self._metrics.dead_letters_mirrored_as_reference.inc()

    async def _produce(
        self, m: outbox.Message, value: bytes, headers: list[tuple[str, bytes]]
    ) -> asyncio.Future[object]:
        future: asyncio.Future[object] = await self._producer.send(
            self.topic, key=m.key, value=value, headers=headers
        )
        return future

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)
