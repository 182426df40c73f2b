"""Counting what ingest decided: Prometheus counters and the worker's own totals, from each written batch.

Who calls it: the ingest loop, as records are consumed (`consumed`) and once a batch is written
(`written`), right after the sink hands it back and before anything else is awaited, so that whoever waits
for the write in flight to end (the demo, the tests) reads counters that include it. A batch an earlier
transaction had already written whole (every record fenced off) is not counted twice.
"""

from __future__ import annotations

import time

from pipeline.events.normalize import Normalizer
from pipeline.events.reasons import Reason
from pipeline.ingest.prepare import BatchStats
from pipeline.ingest.sink import Written
from pipeline.metrics import IngestMetrics
from pipeline.storage.batch import WriteBatch

__all__ = ["Tally"]


class Tally:
    def __init__(self, metrics: IngestMetrics, normalizer: Normalizer) -> None:
        self._metrics = metrics
        self._normalizer = normalizer
        #: Totals since start (also exported as metrics); handy for tests, the demo and the benchmark.
        self.totals: dict[str, int] = {
            "consumed": 0,
            "stored": 0,
            "dead_lettered": 0,
            "expired": 0,
            "suppressed": 0,
            "duplicates": 0,
        }

    def consumed(self, records: int) -> None:
        self._metrics.consumed.inc(records)
        self.totals["consumed"] += records

    def written(self, written: Written) -> None:
        m, totals = self._metrics, self.totals
        batch, outcome = written.batch, written.outcome
        if outcome.fenced < len(batch.rows) + len(batch.dead_letters) or not outcome.fenced:
            self._batch(batch, written.stats)
        m.write_seconds.observe(outcome.write_seconds)
        if outcome.detect_seconds:
            m.detect_seconds.observe(outcome.detect_seconds)
        for detector in outcome.alerts:
            m.alerts.labels(detector).inc()
        for how, rooms in outcome.detect_rooms.items():
            m.detector_rooms.labels(how).inc(rooms)
        if outcome.detect_memory_rows is not None:
            m.detector_memory_rows.set(outcome.detect_memory_rows)
        m.last_write.set(time.time())
        totals["stored"] += outcome.stored
        if outcome.duplicates:
            m.duplicates.inc(outcome.duplicates)
            totals["duplicates"] += outcome.duplicates
        if outcome.fenced:
            m.fenced.inc(outcome.fenced)
        if outcome.partitions_created:
            m.partitions_created.inc(outcome.partitions_created)
        if outcome.rejected:
            m.dead_lettered.labels(Reason.STORAGE_REJECTED.value).inc(len(outcome.rejected))
        if outcome.conflicts:
            m.dead_lettered.labels(Reason.CONFLICTING_DUPLICATE.value).inc(len(outcome.conflicts))
        if outcome.day_sealed:
            m.dead_lettered.labels(Reason.DAY_SEALED.value).inc(len(outcome.day_sealed))
        for reason, n in outcome.suppressed.items():
            m.suppressed.labels(reason).inc(n)
            totals["suppressed"] += n
        for cls, n in outcome.expired.items():
            m.expired.labels(cls).inc(n)
            totals["expired"] += n
        totals["dead_lettered"] += outcome.dead_lettered

    def _batch(self, batch: WriteBatch, stats: BatchStats) -> None:
        """What the ingest stage decided while building the batch."""
        m, totals = self._metrics, self.totals
        m.batch_events.observe(sum(nxt - batch.first_offsets[p] for p, nxt in batch.next_offsets.items()))
        for etype, n in stats.stored_by_type.items():
            m.stored.labels(etype).inc(n)
        for reason, n in stats.dead_lettered_by_reason.items():
            m.dead_lettered.labels(reason).inc(n)
        for cls, n in stats.expired_by_class.items():
            m.expired.labels(cls).inc(n)
            totals["expired"] += n
        for reason, n in stats.suppressed_by_reason.items():
            m.suppressed.labels(reason).inc(n)
            totals["suppressed"] += n
        dropped = self._normalizer.dropped_fields
        if dropped:
            for etype, n in dropped.items():
                m.fields_dropped.labels(etype).inc(n)
            dropped.clear()
        masked = self._normalizer.masked
        if masked:
            for kind, n in masked.items():
                m.text_masked.labels(kind).inc(n)
            masked.clear()
