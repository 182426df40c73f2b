"""Prometheus metrics, in one object built from an injected registry (tests get a fresh one).

Names carry units and follow Prometheus conventions; every label value comes from a bounded set
(event type, reason code, retention class, Kafka partition number), never a room or user id.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_BATCH_SIZE_BUCKETS = (1, 10, 100, 500, 1_000, 2_500, 5_000, 10_000, 20_000, 50_000)
_SECONDS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class IngestMetrics:
    def __init__(self, registry: CollectorRegistry, prefix: str = "roomlogs") -> None:
        p = prefix
        self.registry = registry
        self.consumed = Counter(
            f"{p}_events_consumed", "Kafka records read by the ingest worker", registry=registry
        )
        self.stored = Counter(
            f"{p}_events_stored", "Room-log events committed to PostgreSQL", ["event_type"], registry=registry
        )
        self.dead_lettered = Counter(
            f"{p}_events_dead_lettered",
            "Records set aside with a reason instead of stored",
            ["reason"],
            registry=registry,
        )
        self.expired = Counter(
            f"{p}_events_expired",
            "Events older than their retention class's horizon (a replay), not re-inserted",
            ["retention_class"],
            registry=registry,
        )
        self.suppressed = Counter(
            f"{p}_events_suppressed",
            "Events an authorized deletion covers (a replay of deleted logs), not re-inserted",
            ["reason"],
            registry=registry,
        )
        self.duplicates = Counter(
            f"{p}_events_duplicate",
            "Events whose id was already stored (producer retries)",
            registry=registry,
        )
        self.fenced = Counter(
            f"{p}_records_redelivered",
            "Records skipped because an earlier transaction already wrote them (re-delivery after a crash)",
            registry=registry,
        )
        self.fields_dropped = Counter(
            f"{p}_fields_dropped",
            "Undeclared fields dropped by the normalizer (never stored)",
            ["event_type"],
            registry=registry,
        )
        self.text_masked = Counter(
            f"{p}_text_masked", "Personal data masked inside chat text", ["kind"], registry=registry
        )
        self.batch_events = Histogram(
            f"{p}_batch_events", "Records per ingest batch", buckets=_BATCH_SIZE_BUCKETS, registry=registry
        )
        self.write_seconds = Histogram(
            f"{p}_batch_write_seconds",
            "Time to commit one batch to PostgreSQL",
            buckets=_SECONDS_BUCKETS,
            registry=registry,
        )
        self.commit_seconds = Histogram(
            f"{p}_offset_commit_seconds",
            "Time to commit Kafka offsets after a batch is durable",
            buckets=_SECONDS_BUCKETS,
            registry=registry,
        )
        self.last_write = Gauge(
            f"{p}_last_successful_write_timestamp_seconds",
            "Unix time of the last batch committed to PostgreSQL",
            registry=registry,
        )
        self.lag = Gauge(
            f"{p}_consumer_lag_messages",
            "Records behind the end of each assigned partition",
            ["partition"],
            registry=registry,
        )
        self.storage_unavailable = Counter(
            f"{p}_storage_unavailable",
            "Write attempts that found PostgreSQL unreachable (then retried)",
            registry=registry,
        )
        self.paused = Gauge(
            f"{p}_ingest_paused", "1 while the worker waits for PostgreSQL to come back", registry=registry
        )
        self.partitions_created = Counter(
            f"{p}_partitions_created", "Partitions created (ahead of time or on demand)", registry=registry
        )
        self.dead_letter_publish_errors = Counter(
            f"{p}_dead_letter_publish_errors",
            "Rounds of the dead-letter relay that left mirrors queued (retried with back-off)",
            registry=registry,
        )
        self.dead_letters_mirrored = Counter(
            f"{p}_dead_letters_mirrored",
            "Dead letters acknowledged by the dead-letter topic",
            registry=registry,
        )
        self.dead_letters_mirrored_as_reference = Counter(
            f"{p}_dead_letters_mirrored_as_reference",
            "Dead letters too large for the broker, mirrored as a reference to the dead_letters table",
            registry=registry,
        )
        self.dead_letter_outbox_pending = Gauge(
            f"{p}_dead_letter_outbox_pending",
            "Dead letters stored but not yet acknowledged by the dead-letter topic",
            registry=registry,
        )
        self.offset_changes = Counter(
            f"{p}_offset_changes",
            "Moves of the offsets of record other than a batch written, by what the worker found on "
            "assignment (pipeline/ingest/positions.py): first_read, new_log, deleted_unread, "
            "database_behind",
            ["kind"],
            registry=registry,
        )
        self.deleted_unread = Counter(
            f"{p}_records_deleted_unread",
            "Kafka offsets the broker deleted before any worker read them (retention ran while ingest was "
            "behind): a loss, also recorded in offset_changes",
            registry=registry,
        )
        self.partitions_held = Gauge(
            f"{p}_partitions_assigned",
            "Partitions of the events topic this worker holds now",
            registry=registry,
        )
        self.unowned_partitions = Gauge(
            f"{p}_partitions_unowned",
            "Partitions of the events topic with records waiting that no worker has written for a while, "
            "as seen by a worker that holds none (it rejoins its group; see /readyz)",
            registry=registry,
        )
        self.deletions_relayed = Counter(
            f"{p}_deletions_relayed",
            "Deletion requests acknowledged by the deletions topic (kept outside the database)",
            registry=registry,
        )
        self.deletion_relay_errors = Counter(
            f"{p}_deletion_relay_errors",
            "Rounds of the deletions relay that left requests queued (retried with back-off)",
            registry=registry,
        )
        self.deletion_outbox_pending = Gauge(
            f"{p}_deletion_outbox_pending",
            "Deletion requests recorded but not yet acknowledged by the deletions topic",
            registry=registry,
        )
        self.deletions_reapplied = Counter(
            f"{p}_deletions_reapplied",
            "Deletion requests from the deletions topic the database did not have (restored from a backup?), "
            "re-applied by a starting worker",
            registry=registry,
        )
        self.deletion_records_refused = Counter(
            f"{p}_deletion_records_refused",
            "Records of the deletions topic not applied, by why: bad_seal (forged or altered), other_key "
            "(sealed by another database's key, or not sealed)",
            ["reason"],
            registry=registry,
        )
        # --- detectors (pipeline/detectors) --------------------------------------------------------------
        self.alerts = Counter(
            f"{p}_alerts",
            "Alerts stored by the detectors, in the transaction of the batch that completed their window "
            "(each alert once, whatever replays, crashes and rebalances)",
            ["detector"],
            registry=registry,
        )
        self.detect_seconds = Histogram(
            f"{p}_detect_seconds",
            "Time each batch spent in the detectors (part of roomlogs_write_seconds)",
            buckets=_SECONDS_BUCKETS,
            registry=registry,
        )
        self.detector_rooms = Counter(
            f"{p}_detector_rooms",
            "Rooms of a batch's chat the detectors bounded from the worker's memory of recent room-hours "
            "(memory) or read from storage (storage: a window may fire, or the memory could not be proven "
            "complete there)",
            ["how"],
            registry=registry,
        )
        self.detector_memory_rows = Gauge(
            f"{p}_detector_memory_rows",
            "Chat rows of recent room-hours whose times the worker held for the detectors when it evaluated "
            "its last batch (bounded by ROOMLOGS_DETECTOR_MEMORY_ROWS)",
            registry=registry,
        )
        self.alerts_published = Counter(
            f"{p}_alerts_published", "Alerts acknowledged by the alerts topic", registry=registry
        )
        self.alert_publish_errors = Counter(
            f"{p}_alert_publish_errors",
            "Rounds of the alerts relay that left alerts queued (retried with back-off)",
            registry=registry,
        )
        self.alert_outbox_pending = Gauge(
            f"{p}_alert_outbox_pending",
            "Alerts stored but not yet acknowledged by the alerts topic",
            registry=registry,
        )
