"""Kafka records -> one WriteBatch: normalize, classify by room, drop expired, set bad input aside.

Called by the consumer loop for each polled batch, in two passes around one await:
`normalize_records()` (CPU, yielding now and then so the previous batch's write streams meanwhile)
then, once the rooms it mentions are
known, `build_batch()`. Nothing here raises for bad input: every record ends up as a row, a dead letter,
or an expired count.
"""

from __future__ import annotations

import asyncio
import logging
import traceback
import zlib
from bisect import bisect_left
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from functools import partial
from typing import Any, Protocol

from pipeline.events.contract import SCHEMA_VERSION
from pipeline.events.deadletter import fingerprint, keep, safe_detail
from pipeline.events.normalize import (
    ACTOR_ID,
    BODY,
    EVENT_ID,
    EVENT_TYPE,
    OCCURRED_AT,
    PAYLOAD,
    ROOM_ID,
    TARGET_ID,
    Normalized,
    Normalizer,
)
from pipeline.events.reasons import Invalid, Reason
from pipeline.ingest.rooms import RoomDirectory
from pipeline.kafka_logs import RecordMark
from pipeline.storage.batch import ROW_EVENT_TYPE, DeadLetter, RoomChange, WriteBatch
from pipeline.storage.deletions import Deletions


class KafkaRecord(Protocol):
    """What we use of aiokafka's ConsumerRecord."""

    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None


@dataclass(slots=True)
class NormalizedBatch:
    """Pass-one result for one batch."""

    topic: str
    #: (partition, offset, normalized event) in consumption order
    events: list[tuple[int, int, Normalized]] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    first_offsets: dict[int, int] = field(default_factory=dict)
    next_offsets: dict[int, int] = field(default_factory=dict)
    last_records: dict[int, RecordMark] = field(default_factory=dict)
    rooms: set[str] = field(default_factory=set)
    consumed: int = 0
    #: the records as consumed (a reference, nothing copied): the write batch reads a record's value back
    #: (`raw_value`) for the few dead letters the writer makes itself, which keep its fingerprint like every
    #: other dead letter
    records: Mapping[int, Sequence[KafkaRecord]] = field(default_factory=dict)


def raw_value(records: Mapping[int, Sequence[KafkaRecord]], partition: int, offset: int) -> bytes | None:
    """The value of the record at (partition, offset) among `records`, as received; None if it has none."""
    msgs = records.get(partition, ())
    i = bisect_left(msgs, offset, key=_offset_of)  # a partition's records come in offset order
    return msgs[i].value if i < len(msgs) and msgs[i].offset == offset else None


def _offset_of(record: KafkaRecord) -> int:
    return record.offset


@dataclass(slots=True)
class BatchStats:
    stored_by_type: Counter[str] = field(default_factory=Counter)
    dead_lettered_by_reason: Counter[str] = field(default_factory=Counter)
    expired_by_class: Counter[str] = field(default_factory=Counter)
    #: Events an authorized deletion covers (a replay of deleted logs), by reason.
    suppressed_by_reason: Counter[str] = field(default_factory=Counter)


#: Records normalized between two yields to the event loop. The previous batch's COPY is streamed by the
#: event loop; a batch normalized in one go would hold it and serialize Python and PostgreSQL work.
YIELD_EVERY_RECORDS = 200


async def normalize_records(
    topic: str,
    records: Mapping[int, Sequence[KafkaRecord]],
    normalizer: Normalizer,
    now: datetime,
) -> NormalizedBatch:
    out = NormalizedBatch(topic, records=records)
    events = out.events
    dls = out.dead_letters
    normalize = normalizer.normalize
    chat_max = normalizer.chat_text_max_chars
    for partition, msgs in records.items():
        if not msgs:
            continue
        out.first_offsets[partition] = msgs[0].offset
        last = msgs[-1]
        out.next_offsets[partition] = last.offset + 1
        out.last_records[partition] = RecordMark(last.offset, last.timestamp, zlib.crc32(last.value or b""))
        out.consumed += len(msgs)
        for start in range(0, len(msgs), YIELD_EVERY_RECORDS):
            for m in msgs[start : start + YIELD_EVERY_RECORDS]:
                try:
                    events.append((partition, m.offset, normalize(m.value, now)))
                except Invalid as e:
                    kept = keep(m.value, e.reason, chat_text_max_chars=chat_max)
                    dls.append(
                        DeadLetter(
                            now,
                            e.reason.value,
                            safe_detail(e.detail),
                            topic,
                            partition,
                            m.offset,
                            kept.content,
                            kept.raw_sha256,
                            kept.raw_bytes,
                        )
                    )
                except Exception as e:  # noqa: BLE001 - a bug of ours: the record is set aside, not the partition
                    dls.append(_normalizer_failed(e, m.value, now, topic, partition, m.offset))
            await asyncio.sleep(0)
    out.rooms = {ev[ROOM_ID] for _, _, ev in events}
    return out


log = logging.getLogger("roomlogs.ingest")
#: kinds of normalizer failure logged with a traceback (once each per process)
_FAILURES_LOGGED: set[str] = set()


def _normalizer_failed(
    error: Exception, raw: bytes | None, now: datetime, topic: str, partition: int, offset: int
) -> DeadLetter:
    """The dead letter of a record the normalizer failed on (not refused: failed): a bug of ours.

    Nothing of the record is kept but its fingerprint (for the replay once fixed), and neither the detail nor
    the log carries the error's message: messages of built-in errors quote the value they failed on, which
    may be chat text or a private message. They name the error's type and where it was raised. The first
    failure of each kind is logged with its frames (more would let a producer flood the log; the metric
    counts them all)."""
    kind = type(error).__name__
    frames = traceback.extract_tb(error.__traceback__)
    ours = [f for f in frames if "/pipeline/" in f.filename.replace("\\", "/")] or frames
    where = f"{ours[-1].filename.rsplit('/', 1)[-1]}:{ours[-1].lineno} in {ours[-1].name}" if ours else "?"
    if kind not in _FAILURES_LOGGED:
        _FAILURES_LOGGED.add(kind)
        log.error(
            "the normalizer failed on the record at %s[%d]@%d (%s at %s; its message is not logged, it may "
            "quote the record); the record is set aside as a dead letter normalizer_failed, the partition "
            "goes on. Later failures of this kind are counted, not logged. Frames:\n%s",
            topic, partition, offset, kind, where, "".join(traceback.format_list(frames)),
        )  # fmt: skip
    detail = f"the normalizer failed ({kind} at {where}): a roomlogs bug, to report"
    return DeadLetter(
        now,
        Reason.NORMALIZER_FAILED.value,
        safe_detail(detail),
        topic,
        partition,
        offset,
        None,
        *fingerprint(raw),
    )


def build_batch(
    pass1: NormalizedBatch,
    *,
    consumer_group: str,
    rooms: RoomDirectory,
    horizons: Mapping[str, date],
    now: datetime,
    deletions: Deletions | None = None,
) -> tuple[WriteBatch, BatchStats]:
    """Assign retention classes (following room changes by event version), set aside expired, deleted
    and repeated events.

    An event id appears at most once in the batch's rows: a later copy with the same content is counted as
    a duplicate, one with other content becomes a `conflicting_duplicate` dead letter. Whether an id was
    stored by an earlier batch is the writer's to find out (pipeline.storage.event_ids).
    """
    batch = WriteBatch(
        topic=pass1.topic,
        consumer_group=consumer_group,
        dead_letters=pass1.dead_letters,
        first_offsets=pass1.first_offsets,
        next_offsets=pass1.next_offsets,
        last_records=pass1.last_records,
        raw_value=partial(raw_value, pass1.records),  # the records only, not pass one's other results
    )
    stats = BatchStats()
    rows = batch.rows
    days = batch.event_days
    expired = stats.expired_by_class
    class_of = rooms.class_of
    far_past = date.min
    #: event ids met in this batch: a later copy is settled by the writer against the copy that is stored
    #: (the first copy itself may turn out to conflict with an earlier batch's)
    seen: set[str] = set()
    for partition, offset, ev in pass1.events:
        # the Normalized fields by name (unpacking is the hot path's cheapest way to read them)
        event_id, occurred_at, room_id, etype, actor_id, target_id, body, payload, change = ev
        if event_id in seen:
            batch.variants.append(row_of(ev, "", partition, offset))
            continue  # before its room change: a copy never moves room state twice, a conflicting one never
        seen.add(event_id)
        if change is not None:
            cls = _room_change(batch, rooms, partition, offset, ev, change)
        else:
            cls = class_of(room_id)
        day = occurred_at.date()
        if day < horizons.get(cls, far_past):
            expired[cls] += 1
            continue
        if deletions and (gone := deletions.covers(room_id, etype, actor_id, occurred_at)):
            stats.suppressed_by_reason[gone] += 1
            continue
        days.add((cls, day))
        # EVENT_COLUMNS order (row_of, spelled out on the hot path)
        rows.append(
            (
                event_id,
                occurred_at,
                cls,
                room_id,
                etype,
                SCHEMA_VERSION,
                actor_id,
                target_id,
                body,
                payload,
                partition,
                offset,
            )
        )
    if batch.dead_letters:
        batch.dead_letter_days.add(now.date())
        stats.dead_lettered_by_reason.update(d.reason for d in batch.dead_letters)
    stats.stored_by_type.update(r[ROW_EVENT_TYPE] for r in rows)
    return batch, stats


def row_of(ev: Normalized, retention_class: str, partition: int, offset: int) -> tuple[Any, ...]:
    """The `events` row (EVENT_COLUMNS order) of a normalized event."""
    return (
        ev[EVENT_ID],
        ev[OCCURRED_AT],
        retention_class,
        ev[ROOM_ID],
        ev[EVENT_TYPE],
        SCHEMA_VERSION,
        ev[ACTOR_ID],
        ev[TARGET_ID],
        ev[BODY],
        ev[PAYLOAD],
        partition,
        offset,
    )


def _room_change(
    batch: WriteBatch,
    rooms: RoomDirectory,
    partition: int,
    offset: int,
    ev: Normalized,
    change: tuple[Any, ...],
) -> str:
    event_id, occurred_at, room_id = ev[EVENT_ID], ev[OCCURRED_AT], ev[ROOM_ID]
    if change[0] == "settings":
        state = rooms.apply_settings(room_id, change[1], change[2], (occurred_at, event_id))
        batch.room_changes.append(
            RoomChange(
                partition,
                offset,
                room_id,
                "settings",
                occurred_at,
                event_id,
                state.retention_class,
                privacy=change[1],
                max_occupancy=change[2],
            )
        )
        return state.retention_class
    cls = rooms.class_of(room_id)
    batch.room_changes.append(
        RoomChange(partition, offset, room_id, change[1], occurred_at, event_id, cls, user_id=change[2])
    )
    return cls
