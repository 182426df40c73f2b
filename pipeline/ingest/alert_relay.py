"""The alerts relay: sends the alerts outbox (pipeline/storage/alert_outbox.py) to the alerts topic.

Started by the ingest service next to the dead-letter relay, woken after every batch that stored alerts and
every `idle_seconds` anyway (alerts a crashed worker left queued). Rounds, back-off and outage logs are the
shared relay's (pipeline/ingest/relay.py); several workers share the queue (FOR UPDATE SKIP LOCKED).
Delivery is at least once: a crash between the broker's acknowledgement and the commit sends again, with
the same alert_id, so consumers can drop repeats.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

import asyncpg
from aiokafka.errors import KafkaError
from prometheus_client import Counter, Gauge

from pipeline.ingest.relay import OutboxRelay
from pipeline.metrics import IngestMetrics
from pipeline.storage import alert_outbox

__all__ = ["AlertRelay"]

log = logging.getLogger("roomlogs.ingest.alert_relay")


class AlertRelay(OutboxRelay):
    what = "alerts"
    claim_rows = 200

    def counters(self, metrics: IngestMetrics) -> tuple[Counter, Counter, Gauge]:
        return metrics.alerts_published, metrics.alert_publish_errors, metrics.alert_outbox_pending

    async def claim(self, conn: asyncpg.Connection, limit: int) -> list[alert_outbox.Message]:
        return await alert_outbox.claim(conn, limit)

    async def done(self, conn: asyncpg.Connection, ids: list[int]) -> None:
        await alert_outbox.done(conn, ids)

    async def queued(self, conn: asyncpg.Connection) -> int:
        return await alert_outbox.pending(conn)

    async def send(self, messages: Sequence[alert_outbox.Message]) -> list[int]:
        sent: list[tuple[alert_outbox.Message, asyncio.Future[object]]] = []
        for m in messages:
            try:
                sent.append((m, await self._producer.send(self.topic, key=m.key, value=m.value)))
            except KafkaError as e:
                log.debug("alert %s not sent: %r", m.outbox_id, e)
                break
        acked: list[int] = []
        for m, future in sent:
            try:
                await future
            except KafkaError:
                continue
            acked.append(m.outbox_id)
        return acked
