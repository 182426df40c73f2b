"""Retention and partition-lifecycle metrics, in one object built from an injected registry.

Label values are bounded: `table` is a partitioned parent (`events_<class>` for the few configured
retention classes, or `dead_letters`) or `held_events`; `stage` is one of premake, drop, purge_held, run.
Names do not collide with `pipeline.metrics.IngestMetrics`, so both share the worker's registry.

Catch-all rows: roomlogs creates no DEFAULT partition (a row whose day has no partition gets one on
demand), so `roomlogs_catchall_partition_rows` is measured, not assumed: it counts rows in any DEFAULT
partition found in the catalog, which is 0 unless someone attached one by hand (and `retention check`
then reports it as under no retention rule).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

__all__ = ["RetentionMetrics"]

STAGES = ("premake", "drop", "purge_held", "run")


class RetentionMetrics:
    def __init__(self, registry: CollectorRegistry, prefix: str = "roomlogs") -> None:
        p = prefix
        self.registry = registry
        # --- state, refreshed after every run ------------------------------------------------------------
        self.partitions_ahead = Gauge(
            f"{p}_partitions_ahead_days",
            "Consecutive days after today that already have a partition (0: the next day is made on demand)",
            ["table"],
            registry=registry,
        )
        self.oldest_partition_age = Gauge(
            f"{p}_oldest_partition_age_seconds",
            "Age of the oldest day partition still stored, from the start of its UTC day",
            ["table"],
            registry=registry,
        )
        self.retention_period = Gauge(
            f"{p}_retention_period_seconds",
            "Retention of each partitioned table (compare with the oldest partition's age)",
            ["table"],
            registry=registry,
        )
        self.expired_partitions = Gauge(
            f"{p}_expired_partitions",
            "Day partitions past their retention still stored (0 after a complete run; alert if it stays >0)",
            ["table"],
            registry=registry,
        )
        self.catchall_rows = Gauge(
            f"{p}_catchall_partition_rows",
            "Rows in DEFAULT (catch-all) partitions: roomlogs makes none, so 0 unless one was added by hand",
            registry=registry,
        )
        self.legal_holds_active = Gauge(
            f"{p}_legal_holds_active", "Legal holds placed and not released", registry=registry
        )
        self.held_rows = Gauge(
            f"{p}_held_rows_stored",
            "Rows preserved past retention for legal holds (held_events)",
            registry=registry,
        )
        # --- what runs did -------------------------------------------------------------------------------
        self.partitions_created = Counter(
            f"{p}_maintenance_partitions_created",
            "Partitions created ahead by maintenance runs",
            registry=registry,
        )
        self.partitions_dropped = Counter(
            f"{p}_retention_partitions_dropped",
            "Expired day partitions dropped",
            ["table"],
            registry=registry,
        )
        self.partitions_deferred = Counter(
            f"{p}_retention_partitions_deferred",
            "Expired partitions left for the next run (a reader held a lock past the lock timeout)",
            ["table"],
            registry=registry,
        )
        self.rows_deleted = Counter(
            f"{p}_retention_rows_deleted",
            "Rows deleted by retention (dropped partitions' rows not preserved for holds, purged held rows)",
            ["table"],
            registry=registry,
        )
        self.rows_held = Counter(
            f"{p}_retention_rows_held",
            "Rows of held rooms copied out of partitions before they were dropped",
            registry=registry,
        )
        self.failures = Counter(
            f"{p}_maintenance_failures",
            "Maintenance steps that failed (see the worker log)",
            ["stage"],
            registry=registry,
        )
        self.skipped = Counter(
            f"{p}_maintenance_skipped",
            "Runs that did nothing because another maintainer held the lock",
            registry=registry,
        )
        self.last_success = Gauge(
            f"{p}_maintenance_last_success_timestamp_seconds",
            "Unix time of the last maintenance run that completed (ok, or partial with drops deferred)",
            registry=registry,
        )
        self.duration = Gauge(
            f"{p}_maintenance_duration_seconds", "Duration of the last maintenance run", registry=registry
        )
        for stage in STAGES:
            self.failures.labels(stage)
