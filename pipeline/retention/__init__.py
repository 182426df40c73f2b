"""Partition lifecycle and retention: partitions made ahead, expired days dropped, legal holds, proof.

Retention classes (table `retention_classes`, changed at runtime) give each room's rows a retention in
days; a row keeps the class it was written with. Enforcement drops whole (class, day) partitions, never
deletes from them: each is detached concurrently (ingest keeps writing), then, in one transaction, its held
rooms' rows are copied out, it is dropped and the deletion ledger row written. See `maintenance` for one
run, `detach` for the steps and their crash safety, `check` for the proof question.
"""

from pipeline.retention.check import CheckResult, Offending, check_retention
from pipeline.retention.exceptions import (
    HeldRowsSchemaError,
    HoldNotFoundError,
    InvalidHoldError,
    RetentionError,
    UnknownRetentionClassError,
)
from pipeline.retention.holds import place_hold, release_hold
from pipeline.retention.ledger import LedgerEntry, read_ledger
from pipeline.retention.maintenance import (
    DROP_LOCK_TIMEOUT_MS,
    maintain,
    maintenance_lock,
    owns_log_tables,
    run_maintenance,
)
from pipeline.retention.metrics import RetentionMetrics
from pipeline.retention.plan import RetentionPlan, plan_retention
from pipeline.retention.policy import set_retention_days
from pipeline.retention.report import DeferredPartition, DroppedPartition, MaintenanceReport, PurgedHeld
from pipeline.retention.status import PartitionSetStatus, observe, partition_status
from pipeline.retention_rules import is_expired
from pipeline.storage.classes import RetentionClass, load_classes
from pipeline.storage.holds import Hold, active_rooms, list_holds

__all__ = [
    "DROP_LOCK_TIMEOUT_MS",
    "CheckResult",
    "DeferredPartition",
    "DroppedPartition",
    "HeldRowsSchemaError",
    "Hold",
    "HoldNotFoundError",
    "InvalidHoldError",
    "LedgerEntry",
    "MaintenanceReport",
    "Offending",
    "PartitionSetStatus",
    "PurgedHeld",
    "RetentionClass",
    "RetentionError",
    "RetentionMetrics",
    "RetentionPlan",
    "UnknownRetentionClassError",
    "active_rooms",
    "check_retention",
    "is_expired",
    "list_holds",
    "load_classes",
    "maintain",
    "maintenance_lock",
    "observe",
    "owns_log_tables",
    "partition_status",
    "place_hold",
    "plan_retention",
    "read_ledger",
    "release_hold",
    "run_maintenance",
    "set_retention_days",
]
