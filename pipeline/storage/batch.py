"""What one write carries from the ingest stage to storage."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

#: Column order of `events` rows as built by the ingest stage and copied by the writer.
EVENT_COLUMNS = (
    "event_id",
    "occurred_at",
    "retention_class",
    "room_id",
    "event_type",
    "schema_version",
    "actor_id",
    "target_id",
    "body",
    "payload",
    "src_partition",
    "src_offset",
)
ROW_CLASS, ROW_OCCURRED_AT, ROW_PARTITION, ROW_OFFSET = 2, 1, 10, 11

DEAD_LETTER_COLUMNS = ("received_at", "reason", "detail", "src_topic", "src_partition", "src_offset", "raw")
DL_PARTITION, DL_OFFSET = 4, 5


@dataclass(frozen=True, slots=True)
class RoomChange:
    """A change to what the pipeline knows about a room, applied in the batch's transaction."""

    src_partition: int
    src_offset: int
    room_id: str
    #: "settings" | "owner_transferred" | "moderator_added" | "moderator_removed"
    kind: str
    occurred_at: datetime
    retention_class: str
    privacy: str | None = None
    max_occupancy: int | None = None
    user_id: str | None = None


@dataclass(slots=True)
class WriteBatch:
    """Everything one transaction writes: rows, dead letters, room changes and the offsets they complete.

    `next_offsets[p]` is the offset after the last record of partition p in this batch; `first_offsets[p]`
    is the first. Together they let the writer fence off records that an earlier transaction already wrote.
    """

    topic: str
    consumer_group: str
    rows: list[tuple[Any, ...]] = field(default_factory=list)
    dead_letters: list[tuple[Any, ...]] = field(default_factory=list)
    room_changes: list[RoomChange] = field(default_factory=list)
    first_offsets: dict[int, int] = field(default_factory=dict)
    next_offsets: dict[int, int] = field(default_factory=dict)
    event_days: set[tuple[str, date]] = field(default_factory=set)
    dead_letter_days: set[date] = field(default_factory=set)


@dataclass(slots=True)
class WriteOutcome:
    stored: int = 0
    duplicates: int = 0
    #: Records an earlier transaction already wrote (re-delivery after a crash or an ambiguous commit).
    fenced: int = 0
    #: Rows PostgreSQL refused, turned into dead letters (reason storage_rejected).
    rejected: list[tuple[Any, ...]] = field(default_factory=list)
    dead_lettered: int = 0
    partitions_created: int = 0
    write_seconds: float = 0.0
