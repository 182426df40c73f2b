"""The checkpoint: where each held partition stands against the offsets of record, and what the worker
found about the log under them.

Who calls it: the ingest service.
- `resume(partitions)` on every assignment, and whenever a partition's position no longer fits (the
  fetcher lost it, the writer found the offsets of record moved back, the topic watch saw another
  incarnation): judges them against the broker's log (pipeline/ingest/positions.py), records what it
  found, and seeks the fetcher there. It waits out PostgreSQL or Kafka being unreachable; False when the
  worker stops first (nothing sought: the next assignment judges again).
- `continue_from(batch)` as a batch is built: the offsets of record it continues from (the writer refuses
  it if they moved back), then the batch's end becomes the next batch's start.
- `written(batch)` once a batch committed: its offsets are durable (the lag gauge counts from them) and
  are committed to Kafka too (informational: Kafka tools show progress, and a restored database is noticed
  because the group's committed offsets are ahead of it).
- `notices(now)`: what /readyz names while it lasts (a log being read again, a loss found lately).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
from aiokafka.errors import KafkaError

from pipeline.ingest.backoff import Backoff
from pipeline.ingest.fetcher import Fetcher
from pipeline.ingest.positions import Finding, MissingPartitionsError, Verdict, resume_positions
from pipeline.ingest.prepare import KafkaRecord
from pipeline.ingest.sink import postgres_outage
from pipeline.kafka_logs import LogProbe
from pipeline.metrics import IngestMetrics
from pipeline.settings import Settings
from pipeline.storage import db
from pipeline.storage.batch import WriteBatch

__all__ = ["LOSS_NOTICE_SECONDS", "Checkpoint", "Notice"]

log = logging.getLogger("roomlogs.ingest")

#: How long /readyz keeps naming records deleted unread after they were found (they stay in offset_changes).
LOSS_NOTICE_SECONDS = 3600.0


@dataclass(slots=True)
class Notice:
    """What the judgement of a partition found, while it lasts."""

    verdict: Verdict
    since: datetime
    #: a re-read lasts until the offsets of record reach this offset; None: it is not a re-read
    until_offset: int | None

    def to_json(self) -> dict[str, Any]:
        return {
            "partition": self.verdict.partition,
            "finding": self.verdict.finding.value,
            "since": self.since.isoformat(),
            "until_offset": self.until_offset,
            "detail": self.verdict.why,
        }


class Checkpoint:
    def __init__(
        self,
        settings: Settings,
        pool: asyncpg.Pool,
        metrics: IngestMetrics,
        fetcher: Fetcher,
        probe: LogProbe,
        *,
        clock: Callable[[], datetime],
        changed_by: str,
        stopping: asyncio.Event,
    ) -> None:
        self._s = settings
        self._pool = pool
        self._metrics = metrics
        self._fetcher = fetcher
        self._probe = probe
        self._clock = clock
        self._stopping = stopping
        #: who moves offsets of record in `offset_changes` when this worker does
        self.changed_by = changed_by
        #: Where the offsets of record stand as far as this worker knows, by partition: where the judgement
        #: put them, then each batch launched. A batch continues from here (WriteBatch.resumes_from).
        self._positions: dict[int, int] = {}
        #: Next offset durably written, by partition (the offsets of record), for the lag gauge.
        self._written: dict[int, int] = {}
        #: (partition, finding) -> what /readyz names while it lasts
        self._notices: dict[tuple[int, str], Notice] = {}
        #: the topic id the held partitions were judged in (None: the broker gives none)
        self.topic_id: uuid.UUID | None = None
        #: committing the offsets of record to Kafka where its own were found behind them
        self._realign: asyncio.Future[dict[int, int]] | None = None

    # --- judgement -------------------------------------------------------------------------------------
    async def resume(self, partitions: Iterable[int]) -> bool:
        """Judge `partitions`, record what must be, seek the fetcher where each resumes."""
        s = self._s
        wanted = sorted(set(partitions))
        backoff = Backoff(s.db_retry_initial_seconds, s.db_retry_max_seconds)
        while True:
            try:
                committed = await self._fetcher.committed(wanted)
                async with db.acquire(self._pool) as conn:
                    verdicts = await resume_positions(
                        conn,
                        self._probe,
                        consumer_group=s.consumer_group,
                        topic=s.events_topic,
                        partitions=wanted,
                        committed=committed,
                        changed_by=self.changed_by,
                    )
                postgres_outage.up("assigned partitions resume from their stored offsets")
                break
            except db.OUTAGES as e:
                postgres_outage.down(e, "assigned partitions wait for their stored offsets")
                self._metrics.storage_unavailable.inc()
            except (KafkaError, MissingPartitionsError, OSError) as e:
                log.warning("assigned partitions wait for the broker's view of %s: %s", s.events_topic, e)
            if self._stopping.is_set():
                return False
            await asyncio.sleep(backoff.next_delay())
        now = self._clock()
        behind_kafka: dict[int, int] = {}
        for v in verdicts:
            self._note(v, now)  # recorded by this worker, held or not
            if not self._fetcher.seek(v.partition, v.resume_at):
                continue  # revoked while we judged: its next owner judges it
            self.topic_id = v.topic_id
            self._positions[v.partition] = self._written[v.partition] = v.resume_at
            was = committed.get(v.partition)
            if v.finding is Finding.RESUME and was is not None and was < v.resume_at:
                behind_kafka[v.partition] = was
        if behind_kafka:
            # Kafka's offsets moved back under the offsets of record (kafka-consumer-groups --reset-offsets,
            # or a commit lost): they are not read, and Kafka's own lag view would count read records as
            # waiting until each partition's next batch; set them to the offsets of record now
            shown = ", ".join(
                f"partition {p}: {o} < {self._positions[p]}" for p, o in sorted(behind_kafka.items())
            )
            log.warning(
                "the group's offsets committed to Kafka are behind the offsets of record (%s): ingest reads "
                "from the offsets of record (`roomlogs offsets move` moves those); Kafka's are set to them",
                shown,
            )
            # not awaited here: resume may run inside the consumer's rebalance callback
            self._realign = asyncio.ensure_future(
                self._fetcher.commit({p: self._positions[p] for p in behind_kafka})
            )
        log.info(
            "assigned %s; resuming at %s",
            [v.partition for v in verdicts],
            {v.partition: v.resume_at for v in verdicts},
        )
        return True

    def forget(self, partitions: Iterable[int]) -> None:
        """Partitions revoked: their positions, lag and re-read notices are their next owner's."""
        for p in partitions:
            self._positions.pop(p, None)
            self._written.pop(p, None)
            with contextlib.suppress(KeyError):
                self._metrics.lag.remove(str(p))
            for key in [k for k, n in self._notices.items() if k[0] == p and n.until_offset is not None]:
                del self._notices[key]  # a loss stays named: this worker found it

    def _note(self, v: Verdict, now: datetime) -> None:
        """Count a judgement this worker recorded (pipeline.ingest.positions: one row, one count) and keep
        what /readyz names while it lasts."""
        if v.finding is Finding.RESUME:
            return
        self._metrics.offset_changes.labels(v.finding.value).inc()
        if v.finding is Finding.FIRST_READ:
            return
        if v.finding is Finding.DELETED_UNREAD:
            self._metrics.deleted_unread.inc(v.skipped)
        until = v.resume_at + v.reread if v.reread else None
        self._notices[(v.partition, v.finding.value)] = Notice(v, now, until)

    # --- batches ---------------------------------------------------------------------------------------
    def skipped(
        self, records: Mapping[int, Sequence[KafkaRecord]], positions: Mapping[int, int]
    ) -> dict[int, tuple[int, int]]:
        """{partition: (from, to)} where the consumer's position after a poll (`positions`) is past its
        last record handed out (or, with none, past where the batches launched left off): offsets it read
        past that hold no record to write (transaction markers, aborted transactions, records compacted
        away; never a loss: the fetcher resets no position). The batch moves the offsets of record over
        them too (`continue_from`), else a partition ending in a transaction marker never looks caught up."""
        out: dict[int, tuple[int, int]] = {}
        for p, at in positions.items():
            msgs = records.get(p)
            known = msgs[-1].offset + 1 if msgs else self._positions.get(p)
            if known is not None and at > known:
                out[p] = (known, at)
        return out

    def continue_from(self, batch: WriteBatch, skipped: Mapping[int, tuple[int, int]] | None = None) -> None:
        """The batch is launched: it continues from where the previous one left off, and moves the offsets
        of record over its records and the offsets `skipped` after them."""
        for p, (start, end) in (skipped or {}).items():
            batch.first_offsets.setdefault(p, start)
            batch.next_offsets[p] = max(end, batch.next_offsets.get(p, end))
        positions = self._positions
        batch.resumes_from = {p: positions[p] for p in batch.next_offsets if p in positions}
        positions.update(batch.next_offsets)

    async def written(self, batch: WriteBatch) -> None:
        committed = await self._fetcher.commit(batch.next_offsets)
        self._written.update(committed)

    def update_lag(self) -> None:
        """Lag = end of partition - next offset durably written (not merely fetched)."""
        for p, written in self._written.items():
            high = self._fetcher.highwater(p)
            if high is not None:
                self._metrics.lag.labels(str(p)).set(max(0, high - written))

    def notices(self, now: datetime) -> list[dict[str, Any]]:
        """What the judgements found that still holds: re-reads not yet done, losses found lately."""
        for key, n in list(self._notices.items()):
            p = n.verdict.partition
            done = n.until_offset is not None and (
                p not in self._positions or self._written.get(p, -1) >= n.until_offset
            )
            stale = n.until_offset is None and (now - n.since).total_seconds() > LOSS_NOTICE_SECONDS
            if done or stale:
                del self._notices[key]
        return [n.to_json() for _, n in sorted(self._notices.items())]
