"""Prometheus metrics for a room server's publisher, read from its counters at scrape time.

The publisher already counts what it sent, what the broker acknowledged and what failed; this collector
exposes those counts when Prometheus scrapes, so the send path pays nothing per event. Room servers pass
their registry to `RoomEventPublisher(registry=...)` and serve it as they serve their other metrics.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector


class PublisherCounts(Protocol):
    topic: str
    sent: int
    acked: int
    failed: int
    in_flight: int


class PublisherCollector(Collector):
    def __init__(self, publisher: PublisherCounts, prefix: str = "roomlogs") -> None:
        self._publisher = publisher
        self._prefix = prefix

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        p, pub = self._prefix, self._publisher
        labels = ["topic"]
        sent = CounterMetricFamily(
            f"{p}_publisher_events_sent", "Events handed to the producer", labels=labels
        )
        sent.add_metric([pub.topic], pub.sent)
        acked = CounterMetricFamily(
            f"{p}_publisher_events_acked", "Events the broker acknowledged (acks=all)", labels=labels
        )
        acked.add_metric([pub.topic], pub.acked)
        errors = CounterMetricFamily(
            f"{p}_publisher_send_errors",
            "Events that will never be delivered (refused, timed out, lost at shutdown)",
            labels=labels,
        )
        errors.add_metric([pub.topic], pub.failed)
        buffered = GaugeMetricFamily(
            f"{p}_publisher_buffered_events", "Events sent and not yet acknowledged", labels=labels
        )
        buffered.add_metric([pub.topic], pub.in_flight)
        yield from (sent, acked, errors, buffered)
