"""What one write carries from the ingest stage to storage."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, Final, NamedTuple

from pipeline.kafka_logs import RecordMark

#: Column order of `events` rows as built by the ingest stage and copied by the writer. Rows are plain
#: tuples on the hot path; read them through the ROW_* positions below (Final literals, typed by mypy).
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
ROW_EVENT_ID: Final = 0
ROW_OCCURRED_AT: Final = 1
ROW_CLASS: Final = 2
ROW_ROOM_ID: Final = 3
ROW_EVENT_TYPE: Final = 4
ROW_SCHEMA_VERSION: Final = 5
ROW_ACTOR_ID: Final = 6
ROW_TARGET_ID: Final = 7
ROW_BODY: Final = 8
ROW_PAYLOAD: Final = 9
ROW_PARTITION: Final = 10
ROW_OFFSET: Final = 11


class DeadLetter(NamedTuple):
    """One `dead_letters` row (field order = column order, so it is copied as it is)."""

    received_at: datetime
    reason: str
    detail: str
    src_topic: str
    src_partition: int
    src_offset: int
    #: the allowlisted view of what was received, JSON (pipeline.events.deadletter), or None
    content: bytes | None
    raw_sha256: bytes | None
    raw_bytes: int | None


DEAD_LETTER_COLUMNS = DeadLetter._fields


@dataclass(frozen=True, slots=True)
class RoomChange:
    """A change to what the pipeline knows about a room, applied in the batch's transaction.

    Each change carries its event's version (event time, then event id); storage applies it only where it
    is newer than the version of the state it would replace, so replays and late events cannot roll a
    room back (see pipeline/storage/rooms.py).
    """

    src_partition: int
    src_offset: int
    room_id: str
    #: "settings" | "owner_transferred" | "moderator_added" | "moderator_removed"
    kind: str
    occurred_at: datetime
    event_id: str
    #: the room's class as the ingest stage saw it (used when the room is new to PostgreSQL)
    retention_class: str
    privacy: str | None = None
    max_occupancy: int | None = None
    user_id: str | None = None


@dataclass(slots=True)
class WriteBatch:
    """Everything one transaction writes: rows, dead letters, room changes and the offsets they complete.

    `next_offsets[p]` is the offset after the last record of partition p in this batch; `first_offsets[p]`
    is the first. Together they let the writer fence off records that an earlier transaction already wrote.
    An event id appears at most once in `rows`.
    """

    topic: str
    consumer_group: str
    rows: list[tuple[Any, ...]] = field(default_factory=list)
    #: Further copies of an event id of this batch (rows). Each is a duplicate or a conflicting duplicate,
    #: depending on the copy that is stored (this batch's first, or an earlier batch's).
    variants: list[tuple[Any, ...]] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    room_changes: list[RoomChange] = field(default_factory=list)
    first_offsets: dict[int, int] = field(default_factory=dict)
    next_offsets: dict[int, int] = field(default_factory=dict)
    #: The offsets of record this batch continues from, per partition, as the ingest service last knew them
    #: (its claim on assignment, then each batch it wrote). A stored offset behind one of them, or none at
    #: all, means the offsets of record moved back under the service (a restored database, an operator's
    #: `roomlogs offsets move`): the writer refuses the batch (pipeline.storage.offsets.OffsetsMovedError)
    #: rather than jump over records nobody wrote. Empty for writers that keep no position (a replay).
    resumes_from: dict[int, int] = field(default_factory=dict)
    #: Per partition, the last record of this batch (offset, timestamp in ms, CRC-32 of its value): stored
    #: with the offsets of record, so the next assignment can tell whether the broker still has that log.
    last_records: dict[int, RecordMark] = field(default_factory=dict)
    event_days: set[tuple[str, date]] = field(default_factory=set)
    dead_letter_days: set[date] = field(default_factory=set)
    #: The value of this batch's record at (partition, offset), as received (None: unknown). Read only for
    #: the dead letters the writer makes itself (conflicting copies, rows PostgreSQL refuses), to keep the
    #: fingerprint of what was received as every dead letter does; nothing is hashed on the usual path.
    raw_value: Callable[[int, int], bytes | None] | None = None


@dataclass(slots=True)
class WriteOutcome:
    stored: int = 0
    #: Copies of events already stored with the same content (producer retries, resends, replays).
    duplicates: int = 0
    #: Records an earlier transaction already wrote (re-delivery after a crash or an ambiguous commit).
    fenced: int = 0
    #: Rows PostgreSQL refused, turned into dead letters (reason storage_rejected).
    rejected: list[DeadLetter] = field(default_factory=list)
    rejected_event_ids: list[str] = field(default_factory=list)
    #: Copies of stored events whose content differs (reason conflicting_duplicate).
    conflicts: list[DeadLetter] = field(default_factory=list)
    #: New events of a day already closed and sealed (reason day_sealed).
    day_sealed: list[DeadLetter] = field(default_factory=list)
    #: Rooms whose changes were dropped with a conflicting copy (their cached state must be re-read).
    conflicting_rooms: set[str] = field(default_factory=set)
    #: Events an authorized deletion made known inside this transaction covers, by reason.
    suppressed: dict[str, int] = field(default_factory=dict)
    #: Events of a day retention was dropping as the batch was written, by class (counted as expired).
    expired: dict[str, int] = field(default_factory=dict)
    dead_lettered: int = 0
    partitions_created: int = 0
    write_seconds: float = 0.0
    #: Dead letters queued for the dead-letter topic in this transaction.
    outboxed: int = 0
    #: The detector of each alert stored (and queued for the alerts topic) in this transaction.
    alerts: list[str] = field(default_factory=list)
    #: Seconds spent in the detectors (pipeline.detectors), part of write_seconds.
    detect_seconds: float = 0.0
    #: Rooms of the batch's chat the detectors bounded from memory ("memory") or read ("storage").
    detect_rooms: dict[str, int] = field(default_factory=dict)
    #: Chat rows the detectors remember once this batch's transaction ended (None: they remember none).
    detect_memory_rows: int | None = None
