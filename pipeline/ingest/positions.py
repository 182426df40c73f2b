"""Where each assigned partition resumes: the offsets of record judged against the log the broker has now.

Who calls it: the ingest service, on every assignment and whenever the broker or the writer says a
partition's position no longer fits (an offset out of range, offsets of record moved back), before any record
of those partitions is fetched or fenced off. Also `roomlogs status` and `roomlogs offsets show` (to show the
same verdicts, changing nothing).

The offsets of record were written against one log: one incarnation of the topic on one cluster. The world
may have changed under them: the broker restarted empty (the embedded one keeps nothing), the topic was
deleted and recreated, the events were re-published to a new topic or cluster, the database was restored
from a backup, or the broker's retention deleted records no worker read. `judge` tells these apart, per
partition, from the stored offsets (with the topic id and the last record written) and the log (its topic
id, start and end, the record at the last offset written, the group's offset committed to Kafka):

- resume: the log is the one the offsets count in. Resumes at the stored offset. The usual case.
- first_read: nothing stored for the partition. Resumes at the log's start: the group's first read.
- new_log: another topic id; or the stored offset is past the log's end; or the broker holds another record
  at the last offset written. Resumes at the new log's start: every event is read again, copies already
  stored are counted duplicates (the event-id registry), nothing is stored twice.
- deleted_unread: the same log, starting past the stored offset. Resumes at the log's start: the records
  between were deleted by the broker before any worker read them, a loss counted exactly (offsets, time
  range).
- database_behind: the group's offset committed to Kafka is past the stored offset. Resumes at the stored
  offset: PostgreSQL lost writes (restored from a backup), the records between are read again, copies
  counted as duplicates.

Every finding but `resume` is recorded (`offset_changes`, pipeline.storage.offsets), logged as one line and
counted (`roomlogs_offset_changes_total{kind}`, `roomlogs_records_deleted_unread_total`). Never a silent
skip: a record below the resume position that no worker wrote is either counted as deleted unread, or was
skipped by an operator's recorded `roomlogs offsets move`.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import StrEnum

import asyncpg

from pipeline.kafka_logs import LogProbe, PartitionLog, RecordMark, TopicLog
from pipeline.storage import offsets
from pipeline.storage.offsets import Change, StoredOffset

__all__ = ["Finding", "MissingPartitionsError", "Verdict", "judge", "judge_log", "resume_positions"]

log = logging.getLogger("roomlogs.ingest.positions")

#: Compare-and-set rounds before giving up (another worker keeps moving the same partition's offsets).
_SETTLE_ATTEMPTS = 5


class Finding(StrEnum):
    RESUME = "resume"
    FIRST_READ = "first_read"
    NEW_LOG = "new_log"
    DELETED_UNREAD = "deleted_unread"
    DATABASE_BEHIND = "database_behind"


@dataclass(frozen=True, slots=True)
class Verdict:
    partition: int
    finding: Finding
    #: the offset to read next
    resume_at: int
    #: the offsets of record as judged (None: none stored)
    stored: StoredOffset | None
    #: the log's topic id (None: the broker gives none)
    topic_id: uuid.UUID | None
    #: offsets no worker will read (deleted unread)
    skipped: int = 0
    #: offsets read again (a new log from its start, the database behind)
    reread: int = 0
    #: one line: what was found and what it means
    why: str = ""
    #: what was deleted unread happened after this (the last record written) ...
    skipped_after: datetime | None = None
    #: ... and before this (the first record the broker still holds)
    skipped_before: datetime | None = None

    @property
    def stored_offset(self) -> int | None:
        return None if self.stored is None else self.stored.next_offset


class MissingPartitionsError(Exception):
    """The broker does not (yet) show partitions the consumer was assigned: judge again shortly."""


def judge(
    stored: StoredOffset | None,
    part: PartitionLog,
    topic_id: uuid.UUID | None,
    *,
    record_at_last: RecordMark | None = None,
    committed: int | None = None,
) -> Verdict:
    """The finding for one partition (see the module's table). Pure.

    `record_at_last`: the record the broker holds now at `stored.last.offset` (None where it holds none
    there, or when not looked up). `committed`: the group's offset committed to Kafka (None: none).
    """
    p = part.partition
    if stored is None:
        why = f"first read of partition {p}, from the log's start at offset {part.start}"
        if part.start > 0:
            why += f" (offsets below {part.start} were deleted before this group ever read the partition)"
        return Verdict(p, Finding.FIRST_READ, part.start, None, topic_id, why=why)
    at = stored.next_offset
    reread = max(0, min(at, part.end) - part.start)
    if stored.topic_id is not None and topic_id is not None and stored.topic_id != topic_id:
        return Verdict(
            p, Finding.NEW_LOG, part.start, stored, topic_id, reread=reread,
            why=f"partition {p}: the offsets of record (next {at}) count in topic id {stored.topic_id}, the "
            f"broker's topic is {topic_id} (deleted and recreated, or another cluster): reading the new log "
            f"from offset {part.start}{_again(reread)}",
        )  # fmt: skip
    if at > part.end:
        return Verdict(
            p, Finding.NEW_LOG, part.start, stored, topic_id, reread=reread,
            why=f"partition {p}: the offset of record {at} is past the log's end {part.end} (the broker "
            f"started empty, or the topic was recreated or truncated): reading the log from offset "
            f"{part.start}{_again(reread)}",
        )  # fmt: skip
    last = stored.last
    if (
        last is not None
        and part.start <= last.offset < part.end
        and record_at_last is not None
        and (record_at_last.timestamp_ms, record_at_last.crc32) != (last.timestamp_ms, last.crc32)
    ):
        return Verdict(
            p, Finding.NEW_LOG, part.start, stored, topic_id, reread=reread,
            why=f"partition {p}: the record at offset {last.offset} is not the one last written there "
            f"(another log under the same name: the broker restarted empty, or the topic was recreated): "
            f"reading the log from offset {part.start}{_again(reread)}",
        )  # fmt: skip
    if part.start > at:
        return Verdict(
            p, Finding.DELETED_UNREAD, part.start, stored, topic_id, skipped=part.start - at,
            skipped_after=None if last is None else _time(last.timestamp_ms),
            why=f"partition {p}: the log starts at offset {part.start}, past the offset of record {at}: "
            f"{part.start - at:,} records were deleted by the broker before any worker read them (a loss); "
            f"reading on from offset {part.start}",
        )  # fmt: skip
    if committed is not None and committed > at:
        return Verdict(
            p, Finding.DATABASE_BEHIND, at, stored, topic_id, reread=committed - at,
            why=f"partition {p}: the group once committed offset {committed} to Kafka, the offset of record "
            f"is {at}: PostgreSQL is behind (restored from a backup?), or the group's offsets were moved on "
            "with Kafka's tools (not followed: `roomlogs offsets move` moves the offsets of record); reading "
            f"the {committed - at:,} records between, copies already stored count as duplicates",
        )  # fmt: skip
    return Verdict(p, Finding.RESUME, at, stored, topic_id)


def _again(reread: int) -> str:
    """What reading a new log from its start means for the events already stored."""
    if reread:
        return f" ({reread:,} records below the old offset of record: copies already stored count duplicates)"
    return " (the new log holds no record below the old offset of record: nothing is read twice)"


async def resume_positions(
    conn: asyncpg.Connection,
    probe: LogProbe,
    *,
    consumer_group: str,
    topic: str,
    partitions: Iterable[int],
    committed: Mapping[int, int | None],
    changed_by: str,
) -> list[Verdict]:
    """Judge `partitions` against the broker's log, settle the offsets of record where they must move (and
    record why), and return where each partition resumes.

    Raises MissingPartitionsError when the broker does not show some of them (the topic is being deleted or
    recreated: judge again shortly); Kafka and PostgreSQL errors propagate (the caller waits them out).
    """
    wanted = sorted(set(partitions))
    for _ in range(_SETTLE_ATTEMPTS):
        stored = await offsets.stored_offsets(conn, consumer_group, topic, wanted)
        topic_log = await probe.describe(topic, wanted)
        missing = set(wanted) - set(topic_log.partitions)
        if missing:
            raise MissingPartitionsError(
                f"the broker shows no partition {sorted(missing)} of topic {topic} (being deleted or "
                "created?)"
            )
        verdicts = await judge_log(probe, topic_log, stored, committed)
        settled = await _settle_all(conn, consumer_group, topic, verdicts, changed_by)
        if settled is not None:
            return settled
    raise RuntimeError(f"the offsets of record of {topic} kept moving while being judged")


async def judge_log(
    probe: LogProbe,
    topic_log: TopicLog,
    stored: Mapping[int, StoredOffset],
    committed: Mapping[int, int | None] | None = None,
) -> list[Verdict]:
    """`judge` for every partition of `topic_log` (looking up the records it needs) and for every stored
    partition the broker does not show (another log: the topic lost it). Changes nothing: `roomlogs
    status` and `roomlogs offsets show` show these; `resume_positions` settles them."""
    topic, parts = topic_log.topic, topic_log.partitions
    committed = committed or {}
    checkable = {
        p: s.last.offset
        for p, s in stored.items()
        if s.last is not None and p in parts and parts[p].start <= s.last.offset < parts[p].end
    }
    at_last = await probe.records_at(topic, checkable) if checkable else {}
    verdicts = [
        judge(
            stored.get(p), part, topic_log.topic_id, record_at_last=at_last.get(p), committed=committed.get(p)
        )
        for p, part in sorted(parts.items())
    ]
    verdicts += [
        _missing(topic, p, s, topic_log.topic_id) for p, s in sorted(stored.items()) if p not in parts
    ]
    lost = {v.partition: v.resume_at for v in verdicts if v.finding is Finding.DELETED_UNREAD}
    if not lost:
        return verdicts
    first_kept = await probe.records_at(topic, lost)
    return [
        replace(v, skipped_before=_time(mark.timestamp_ms))
        if (mark := first_kept.get(v.partition)) is not None
        else v
        for v in verdicts
    ]


def _missing(topic: str, p: int, mine: StoredOffset, topic_id: uuid.UUID | None) -> Verdict:
    why = (
        f"partition {p}: has offsets of record (next {mine.next_offset}) but the broker's topic {topic} has "
        "no such partition (recreated with fewer partitions, or deleted)"
    )
    return Verdict(p, Finding.NEW_LOG, 0, mine, topic_id, why=why)


def _time(timestamp_ms: int) -> datetime:
    return datetime.fromtimestamp(timestamp_ms / 1000, UTC)


async def _settle_all(
    conn: asyncpg.Connection, group: str, topic: str, verdicts: list[Verdict], changed_by: str
) -> list[Verdict] | None:
    """Write what each verdict changes; None as soon as a partition moved under us (judge again). Returns
    the verdicts as they stand: a database found behind Kafka where a recorded change (an operator's move
    back, or this very finding made earlier) set the stored offset is a plain resume."""
    out = []
    for v in verdicts:
        stored = v.stored
        change: Change | None = None
        if v.finding is Finding.RESUME:
            if stored is None or stored.topic_id == v.topic_id or v.topic_id is None:
                out.append(v)
                continue  # nothing to write
            # the offsets of record learn the topic id of the log they count in (first check since 0011)
        elif v.finding is Finding.DATABASE_BEHIND:
            last = await offsets.last_change(conn, group, topic, v.partition)
            if last is not None and last.change.to_offset == v.resume_at:
                out.append(replace(v, finding=Finding.RESUME, reread=0, why=""))
                continue
            change = _change(v, changed_by)
        else:
            change = _change(v, changed_by)
        if not await offsets.settle(
            conn,
            group,
            topic,
            stored,
            partition=v.partition,
            to_offset=v.resume_at,
            topic_id=v.topic_id if v.topic_id is not None else (stored.topic_id if stored else None),
            change=change,
        ):
            return None
        if change is not None:
            level = logging.ERROR if v.finding is Finding.DELETED_UNREAD else logging.WARNING
            log.log(level, "%s (topic %s, group %s)", v.why, topic, group)
        out.append(v)
    return out


def _change(v: Verdict, changed_by: str) -> Change:
    stored = v.stored
    return Change(
        v.partition,
        v.finding.value,
        v.stored_offset,
        v.resume_at,
        v.why,
        changed_by,
        skipped_records=v.skipped,
        reread_records=v.reread,
        skipped_after=v.skipped_after,
        skipped_before=v.skipped_before,
        old_topic_id=stored.topic_id if stored else None,
        new_topic_id=v.topic_id,
    )
