"""The dead-letter relay: sends the outbox (pipeline/storage/outbox.py) to the dead-letter topic.

Started by the ingest service next to its batch loop, woken after every batch that queued dead letters and
every `idle_seconds` anyway (rows a crashed worker left behind). Each round locks up to `claim_rows` queued
messages (FOR UPDATE SKIP LOCKED, so several workers share the work), sends them, awaits each
acknowledgement on its own and deletes exactly the acknowledged rows in the same transaction.

- A message the broker (or the producer's request limit) refuses as too large is sent again as a reference
  (the dead letter's coordinates and size, header roomlogs.truncated=true): one oversize neighbour never
  costs the others their mirror.
- Any other failure (broker down, PostgreSQL down) keeps the rows queued and retries with capped back-off,
  logging once when it starts failing and once when it recovers (the rounds: pipeline/ingest/relay.py).
Delivery is at least once: a crash between the broker's acknowledgement and the commit sends again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

import asyncpg
from aiokafka.errors import KafkaError, MessageSizeTooLargeError, RecordListTooLargeError
from prometheus_client import Counter, Gauge

from pipeline.ingest.relay import OutboxRelay
from pipeline.metrics import IngestMetrics
from pipeline.storage import outbox

log = logging.getLogger("roomlogs.ingest.mirror")

_TOO_LARGE = (MessageSizeTooLargeError, RecordListTooLargeError)


class DeadLetterMirror(OutboxRelay):
    what = "dead letters"
    claim_rows = 500

    def counters(self, metrics: IngestMetrics) -> tuple[Counter, Counter, Gauge]:
        return (
            metrics.dead_letters_mirrored,
            metrics.dead_letter_publish_errors,
            metrics.dead_letter_outbox_pending,
        )

    async def claim(self, conn: asyncpg.Connection, limit: int) -> list[outbox.Message]:
        return await outbox.claim(conn, limit)

    async def done(self, conn: asyncpg.Connection, ids: list[int]) -> None:
        await outbox.done(conn, ids)

    async def queued(self, conn: asyncpg.Connection) -> int:
        return await outbox.pending(conn)

    async def send(self, messages: Sequence[outbox.Message]) -> list[int]:
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
