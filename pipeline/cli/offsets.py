"""`roomlogs offsets`: the offsets of record of the events topic, inspected and moved by an operator.

    roomlogs offsets [show] [--json]
    roomlogs offsets history [--partition P ...] [--kind K ...] [--limit N] [--json]
    roomlogs offsets move --to beginning|end|TIME [--partition P ...] --by NAME [--reason TEXT] [--apply]

`show`: per partition, the stored offset with the log it counts in (topic id, last record written), the
broker's log (start, end, topic id) and what a worker would find on assignment (pipeline/ingest/positions.py).
`history`: every move of the offsets of record other than a batch written (`offset_changes`), newest first:
first reads, new logs read from their start, records deleted unread (how many, which time range), a
database found behind Kafka, operators' moves.

`move` sets the offsets of record of the partitions asked (all by default) to the log's start
(`beginning`: everything the broker holds is read again; copies already stored count as duplicates), its
end (`end`: what the broker holds now is skipped, counted in the record) or the first record at or after
TIME (ISO date or time, UTC unless it has an offset). Dry by default: it prints what would move and how
many records would be read again or skipped; `--apply` moves them, each partition in its own transaction
that also appends an `offset_changes` row with `--by` and `--reason`. A running worker follows: a move
back makes its next write find the offsets behind it (it judges the partition again and reads from there),
a move forward fences off what it would have written below the new offset.

Reads ROOMLOGS_KAFKA_* (bootstrap and security), ROOMLOGS_EVENTS_TOPIC, ROOMLOGS_CONSUMER_GROUP,
ROOMLOGS_POSTGRES_DSN and ROOMLOGS_POSTGRES_SCHEMA. Exit 0 done (or, dry, nothing wrong to show), 1 `show`
found a partition whose offsets do not fit the log, or `move` could not move a partition (it moved
meanwhile: run it again), 2 an error.
"""

from __future__ import annotations

import argparse
import asyncio
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from pipeline.errors import ConfigurationError
from pipeline.ingest.positions import Finding, Verdict, judge_log
from pipeline.kafka_logs import LogProbe, PartitionLog, TopicLog
from pipeline.settings import Settings
from pipeline.storage import db, offsets
from pipeline.storage.offsets import Change, StoredOffset

__all__ = ["COMMANDS", "add_commands"]


def add_commands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "offsets",
        help="inspect the offsets of record against the broker's log, their history, and move them",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="offsets_command")
    show = sub.add_parser("show", help="per partition: stored offset, the broker's log, what a worker finds")
    show.add_argument("--json", action="store_true")
    hist = sub.add_parser("history", help="moves of the offsets of record other than batches, newest first")
    hist.add_argument("--partition", type=_partition, action="append", help="only this partition (repeat)")
    hist.add_argument("--kind", choices=offsets.KINDS, action="append", help="only this kind (repeat)")
    hist.add_argument("--limit", type=int, default=50, help="at most this many (default 50)")
    hist.add_argument("--json", action="store_true", help="JSON lines instead of a table")
    move = sub.add_parser("move", help="set the offsets of record to the beginning, the end or a time")
    move.add_argument("--to", required=True, type=_target, metavar="beginning|end|TIME")
    move.add_argument("--partition", type=_partition, action="append", help="only this partition (repeat)")
    move.add_argument("--by", required=True, help="who moves them (recorded with each move)")
    move.add_argument("--reason", default="", help="why (recorded with each move)")
    move.add_argument("--apply", action="store_true", help="move them (without it: only say what would move)")
    p.add_argument("--json", action="store_true", help=argparse.SUPPRESS)  # `roomlogs offsets --json`


def _partition(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("a partition number is 0 or more")
    return value


def _target(text: str) -> str | datetime:
    if text in ("beginning", "end"):
        return text
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: beginning, end, or an ISO date or time") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


# --- show ------------------------------------------------------------------------------------------------
async def _look(settings: Settings) -> tuple[dict[int, StoredOffset], TopicLog, dict[int, Verdict]]:
    async with LogProbe(settings) as probe:
        topic_log = await probe.describe(settings.events_topic)
        # the group's offsets on Kafka, past the stored ones: the database is behind (a restore). Read
        # before the stored ones, as a worker writes PostgreSQL first: a running one never looks behind.
        committed = await probe.committed(
            settings.consumer_group, settings.events_topic, topic_log.partitions
        )
        stored = await _stored(settings)
        verdicts = await judge_log(probe, topic_log, stored, committed)
    return stored, topic_log, {v.partition: v for v in verdicts}


async def _stored(settings: Settings) -> dict[int, StoredOffset]:
    conn = await db.connect(settings.postgres_dsn.get(), settings.postgres_schema)
    try:
        return await offsets.stored_offsets(conn, settings.consumer_group, settings.events_topic)
    finally:
        await conn.close()


def show(settings: Settings, args: argparse.Namespace) -> int:
    stored, topic_log, verdicts = asyncio.run(_look(settings))
    rows: list[dict[str, Any]] = []
    for p in sorted(set(stored) | set(topic_log.partitions)):
        mine, part, v = stored.get(p), topic_log.partitions.get(p), verdicts.get(p)
        rows.append(
            {
                "partition": p,
                "stored_offset": mine.next_offset if mine else None,
                "stored_topic_id": str(mine.topic_id) if mine and mine.topic_id else None,
                "last_record": mine.last._asdict() if mine and mine.last else None,
                "log_start": part.start if part else None,
                "log_end": part.end if part else None,
                "finding": v.finding.value if v else "no such partition",
                "detail": v.why if v else f"the broker's topic has no partition {p}",
            }
        )
    bad = [r for r in rows if r["finding"] not in (Finding.RESUME.value, Finding.FIRST_READ.value)]
    if args.json:
        print(orjson.dumps({"topic_id": str(topic_log.topic_id or ""), "partitions": rows}).decode())
        return 1 if bad else 0
    print(
        f"events topic {settings.events_topic} (topic id {topic_log.topic_id or 'not given by the broker'}), "
        f"consumer group {settings.consumer_group}"
    )
    header = ("partition", "stored", "stored in topic id", "log start", "log end", "finding")
    table: list[tuple[str, ...]] = [
        (
            str(r["partition"]),
            _opt(r["stored_offset"]),
            r["stored_topic_id"] or "-",
            _opt(r["log_start"]),
            _opt(r["log_end"]),
            r["finding"],
        )
        for r in rows
    ]
    widths = [max(len(row[i]) for row in [header, *table]) for i in range(len(header))]
    for row in [header, *table]:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    for r in bad:
        print(f"ERROR {r['detail']}")
    return 1 if bad else 0


# --- history ---------------------------------------------------------------------------------------------
def history(settings: Settings, args: argparse.Namespace) -> int:
    async def run() -> list[offsets.StoredChange]:
        conn = await db.connect(settings.postgres_dsn.get(), settings.postgres_schema)
        try:
            return await offsets.changes(
                conn,
                settings.consumer_group,
                settings.events_topic,
                partitions=args.partition,
                kinds=args.kind,
                limit=args.limit,
            )
        finally:
            await conn.close()

    found = asyncio.run(run())
    for c in found:
        ch = c.change
        if args.json:
            print(
                orjson.dumps({"change_id": c.change_id, "changed_at": c.changed_at, **_fields(ch)}).decode()
            )
            continue
        moved = f"{_opt(ch.from_offset)} -> {_opt(ch.to_offset)}"
        extra = []
        if ch.skipped_records:
            extra.append(f"skipped {ch.skipped_records:,}")
            if ch.skipped_after or ch.skipped_before:
                extra.append(f"between {_when(ch.skipped_after)} and {_when(ch.skipped_before)}")
        if ch.reread_records:
            extra.append(f"read again {ch.reread_records:,}")
        print(
            f"{c.change_id:>6}  {c.changed_at:%Y-%m-%d %H:%M:%S}  partition {ch.partition:<3} {ch.kind:<16} "
            f"{moved:<22} {', '.join(extra)}  by {ch.changed_by}: {ch.detail}"
        )
    if not found and not args.json:
        print("no changes recorded")
    return 0


def _fields(ch: Change) -> dict[str, Any]:
    return {
        "partition": ch.partition,
        "kind": ch.kind,
        "from_offset": ch.from_offset,
        "to_offset": ch.to_offset,
        "skipped_records": ch.skipped_records,
        "reread_records": ch.reread_records,
        "skipped_after": ch.skipped_after,
        "skipped_before": ch.skipped_before,
        "old_topic_id": str(ch.old_topic_id) if ch.old_topic_id else None,
        "new_topic_id": str(ch.new_topic_id) if ch.new_topic_id else None,
        "changed_by": ch.changed_by,
        "detail": ch.detail,
    }


# --- move ------------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Move:
    partition: int
    stored: StoredOffset | None
    to_offset: int
    change: Change


async def plan_moves(
    settings: Settings, target: str | datetime, partitions: list[int] | None, *, by: str, reason: str
) -> tuple[TopicLog, list[Move]]:
    """What `move --to target` would do to each partition asked (all that the broker shows by default)."""
    if not by.strip():
        raise ConfigurationError("--by: name who moves the offsets (it is recorded)")
    stored = await _stored(settings)
    async with LogProbe(settings) as probe:
        topic_log = await probe.describe(settings.events_topic)
        parts = topic_log.partitions
        unknown = sorted(set(partitions or ()) - set(parts))
        if unknown:
            raise ConfigurationError(f"--partition {unknown}: the topic {settings.events_topic} has no such")
        wanted = sorted(partitions or parts)
        at_time: dict[int, int | None] = {}
        if isinstance(target, datetime):
            at_time = await probe.offsets_for_time(
                settings.events_topic, wanted, int(target.timestamp() * 1000)
            )
    moves = []
    for p in wanted:
        part, mine = parts[p], stored.get(p)
        if target == "beginning":
            to, said = part.start, "the log's start"
        elif target == "end":
            to, said = part.end, "the log's end"
        else:
            assert isinstance(target, datetime)
            found = at_time.get(p)
            to = part.end if found is None else found
            said = f"the first record at or after {target.isoformat()}"
        detail = f"moved to {said} (offset {to})" + (f": {reason.strip()}" if reason.strip() else "")
        moves.append(_move(p, mine, part, to, detail, by.strip(), topic_log.topic_id))
    return topic_log, moves


def _move(
    p: int,
    mine: StoredOffset | None,
    part: PartitionLog,
    to: int,
    detail: str,
    by: str,
    topic_id: uuid.UUID | None,
) -> Move:
    """Partition `p` moved from where it is stored (`mine`) to `to`: what is skipped and read again."""
    current = mine.next_offset if mine else None
    skipped = max(0, to - (part.start if current is None else max(current, part.start)))
    reread = max(0, min(current, part.end) - to) if current is not None else 0
    change = Change(
        p, "moved", current, to, detail, by,
        skipped_records=skipped, reread_records=reread,
        old_topic_id=mine.topic_id if mine else None, new_topic_id=topic_id,
    )  # fmt: skip
    return Move(p, mine, to, change)


#: How often `move --apply` plans a partition again when a running worker wrote it between plan and move.
MOVE_ATTEMPTS = 20


def move(settings: Settings, args: argparse.Namespace) -> int:
    async def run() -> int:
        topic_log, moves = await plan_moves(settings, args.to, args.partition, by=args.by, reason=args.reason)
        failed = 0
        conn = await db.connect(settings.postgres_dsn.get(), settings.postgres_schema) if args.apply else None
        try:
            for m in moves:
                if conn is None:
                    print(f"would move {_move_line(m)}")
                    continue
                for attempt in range(1, MOVE_ATTEMPTS + 1):
                    ok = await offsets.settle(
                        conn,
                        settings.consumer_group,
                        settings.events_topic,
                        m.stored,
                        partition=m.partition,
                        to_offset=m.to_offset,
                        topic_id=topic_log.topic_id or (m.stored.topic_id if m.stored else None),
                        change=m.change,
                    )
                    if ok or attempt == MOVE_ATTEMPTS:
                        break
                    # a running worker wrote a batch of it meanwhile: the same target, from what is stored now
                    now = await offsets.stored_offsets(
                        conn, settings.consumer_group, settings.events_topic, [m.partition]
                    )
                    c = m.change
                    m = _move(
                        m.partition, now.get(m.partition), topic_log.partitions[m.partition], m.to_offset,
                        c.detail, c.changed_by, c.new_topic_id,
                    )  # fmt: skip
                if ok:
                    print(f"moved {_move_line(m)}")
                else:
                    failed += 1
                    print(
                        f"not moved: partition {m.partition}'s offsets of record changed under each of "
                        f"{MOVE_ATTEMPTS} attempts (workers writing it): stop them and move again"
                    )
        finally:
            if conn is not None:
                await conn.close()
        if conn is None:
            print("nothing moved: add --apply to move them")
        return 1 if failed else 0

    return asyncio.run(run())


def _move_line(m: Move) -> str:
    c = m.change
    return (
        f"partition {m.partition}: {_opt(c.from_offset)} -> {c.to_offset:,}"
        f" (read again {c.reread_records:,}, skipped {c.skipped_records:,})"
    )


def offsets_command(settings: Settings, args: argparse.Namespace) -> int:
    sub = getattr(args, "offsets_command", None) or "show"
    if sub == "show" and not hasattr(args, "json"):
        args.json = False
    return {"show": show, "history": history, "move": move}[sub](settings, args)


def _opt(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


def _when(moment: datetime | None) -> str:
    return "?" if moment is None else f"{moment.astimezone(UTC):%Y-%m-%d %H:%M:%S}"


COMMANDS = {"offsets": offsets_command}
