"""`roomlogs status`: is ingest keeping up, and is upkeep on time? One screen (or `--json`) for operators.

    roomlogs status [--worker URL ...] [--json]

Per partition of the events topic: where its log starts and ends (Kafka), the offset of record
(`ingest_offsets`) and the lag between them (never clamped: a stored offset past the log's end is shown as
such), when the partition was last written, how the offsets of record fit the log the broker has now (the
judgement a worker makes on assignment, pipeline/ingest/positions.py: ok, a new log to be read from its
start, records deleted unread, the database behind Kafka), the records ever deleted unread, and, with
`--worker` (a running worker's metrics address, e.g. http://127.0.0.1:9308; repeat it for each worker;
without it, the worker of the `roomlogs up` running in this directory, when it is that stack's status),
which worker holds it and whether that worker has paused ingest (its `/readyz`, with what it names). Then
the days each partitioned table has ahead of today and when the next retention run is due (the newest
`maintenance_runs` row + ROOMLOGS_MAINTENANCE_INTERVAL_SECONDS).

Reads ROOMLOGS_KAFKA_* (bootstrap and security), ROOMLOGS_EVENTS_TOPIC, ROOMLOGS_CONSUMER_GROUP,
ROOMLOGS_POSTGRES_DSN, ROOMLOGS_POSTGRES_SCHEMA, ROOMLOGS_MAINTENANCE_INTERVAL_SECONDS and
ROOMLOGS_DEAD_LETTER_RETENTION_DAYS. Changes nothing. Exit 0 when every partition's offsets of record fit
its log, 1 when one does not (a new log not yet read again, records deleted unread not yet recorded, the
database behind Kafka, a stored offset past the log's end), or when Kafka or a worker asked about does
not answer (each shown as such: the rest is still printed, worth seeing in an outage), 2 when PostgreSQL
cannot be read.
"""

from __future__ import annotations

import argparse
import asyncio
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from aiokafka.errors import KafkaError

from pipeline.cli.tables import table_lines
from pipeline.errors import RoomlogsError
from pipeline.ingest.positions import Finding, Verdict, judge_log
from pipeline.kafka_client import check_speaks_kafka
from pipeline.kafka_logs import LogProbe, TopicLog
from pipeline.retention.ledger import last_run
from pipeline.retention.status import partition_status
from pipeline.sealing import witness
from pipeline.sealing.state import SealingState, sealing_state
from pipeline.sealing.witness import WitnessLog
from pipeline.settings import Settings
from pipeline.storage import db, offsets, seals
from pipeline.storage.offsets import StoredOffset

__all__ = ["COMMANDS", "add_commands"]

_WORKER_TIMEOUT_SECONDS = 5.0


def add_commands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "status",
        help="per partition: end offset, stored offset, lag, last write, paused; partitions ahead; next "
        "retention run",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--worker",
        action="append",
        default=[],
        metavar="URL",
        help="a running worker's metrics address (http://host:9308); repeat for each worker (default: the "
        "worker of the `roomlogs up` of this directory, if that is the stack these settings name)",
    )
    p.add_argument("--json", action="store_true", help="one JSON object instead of the table")


@dataclass(frozen=True, slots=True)
class WorkerState:
    url: str
    #: None: it did not answer (see `error`)
    ready: bool | None
    paused: bool | None
    partitions: list[int]
    error: str | None = None
    #: what its /readyz names: a problem (not ready), and what its judgements found lately
    problem: str | None = None
    notices: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class PartitionState:
    partition: int
    end_offset: int | None
    stored_offset: int | None
    #: end - stored, never clamped: negative when the stored offset is past the log's end (an error)
    lag: int | None
    last_write: datetime | None
    #: None: no --worker given holds it, or it did not answer
    paused: bool | None
    worker: str | None
    #: the first offset the broker still holds (None: Kafka did not answer)
    log_start: int | None = None
    #: what a worker would find on assignment (pipeline.ingest.positions.Finding; None: Kafka did not
    #: answer), and the one line saying so
    finding: str | None = None
    detail: str = ""
    #: records ever deleted unread (or skipped by an operator's move), as recorded in offset_changes
    skipped_ever: int = 0

    @property
    def fits(self) -> bool:
        """The offsets of record fit the log (or nothing is known against them)."""
        return self.finding in (None, Finding.RESUME.value, Finding.FIRST_READ.value)


@dataclass(slots=True)
class Status:
    topic: str
    consumer_group: str
    as_of: datetime
    partitions: list[PartitionState] = field(default_factory=list)
    #: None when Kafka answered
    kafka_error: str | None = None
    workers: list[WorkerState] = field(default_factory=list)
    #: the broker's id of the topic's current incarnation (None: unknown)
    topic_id: str | None = None
    #: partitioned table -> consecutive days after today with a partition
    partitions_ahead: dict[str, int] = field(default_factory=dict)
    last_retention_run: datetime | None = None
    last_retention_outcome: str | None = None
    retention_interval_seconds: float = 0.0
    #: whether closed days are sealed in time (pipeline.sealing.state)
    sealing: SealingState | None = None

    @property
    def total_lag(self) -> int | None:
        lags = [p.lag for p in self.partitions]
        return None if not lags or any(lag is None for lag in lags) else sum(lag or 0 for lag in lags)

    @property
    def problems(self) -> list[PartitionState]:
        """Partitions whose offsets of record do not fit the broker's log."""
        return [p for p in self.partitions if not p.fits]

    @property
    def next_retention_run(self) -> datetime | None:
        if self.last_retention_run is None:
            return None
        return self.last_retention_run + timedelta(seconds=self.retention_interval_seconds)

    @property
    def retention_overdue(self) -> bool:
        """No run recorded, or the next one is more than an interval late (nobody is running retention)."""
        due = self.next_retention_run
        return due is None or self.as_of - due > timedelta(seconds=self.retention_interval_seconds)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(
            problems=[p.partition for p in self.problems],
            total_lag=self.total_lag,
            next_retention_run=self.next_retention_run,
            retention_overdue=self.retention_overdue,
        )
        return out

    def render(self) -> str:
        lines = [
            f"events topic {self.topic}, consumer group {self.consumer_group}, as of "
            f"{self.as_of:%Y-%m-%d %H:%M:%S} UTC"
        ]
        if self.kafka_error:
            lines.append(f"Kafka did not answer ({self.kafka_error}): end offsets and lag unknown")
        elif self.topic_id:
            lines[0] += f", topic id {self.topic_id}"
        header = ("partition", "log start", "end offset", "stored", "lag", "offsets of record",
                  "deleted unread", "last write (UTC)", "paused", "worker")  # fmt: skip
        rows = [
            (
                str(p.partition),
                _opt(p.log_start),
                _opt(p.end_offset),
                _opt(p.stored_offset),
                _opt(p.lag),
                _FINDING_SHOWN.get(p.finding or "", "-"),
                _opt(p.skipped_ever),
                self._ago(p.last_write),
                "-" if p.paused is None else ("yes" if p.paused else "no"),
                p.worker or "-",
            )
            for p in self.partitions
        ]
        lines += table_lines(header, rows)
        lines.append(f"total lag: {_opt(self.total_lag)} records")
        for p in self.problems:
            lines.append(f"ERROR {p.detail}")
        for w in self.workers:
            if w.error is not None:
                lines.append(f"worker {w.url}: did not answer ({w.error})")
            elif not w.partitions:
                lines.append(f"worker {w.url}: holds no partition (ready: {'yes' if w.ready else 'no'})")
            if w.problem:
                lines.append(f"worker {w.url}: {w.problem}")
            for notice in w.notices:
                lines.append(f"worker {w.url}: {notice}")
        lines.append("partitions ahead (days after today that have a partition):")
        lines += [f"  {table:<28} {days}" for table, days in sorted(self.partitions_ahead.items())]
        if self.last_retention_run is None:
            lines.append(
                "retention: no run recorded; is `roomlogs retention enforce --apply` running as the owner?"
            )
        else:
            due = self.next_retention_run
            assert due is not None
            lines.append(
                f"retention: last run {self._ago(self.last_retention_run)} ({self.last_retention_outcome}), "
                f"next due {due:%Y-%m-%d %H:%M:%S}"
                + (" (overdue: is anything running retention?)" if self.retention_overdue else "")
            )
        if self.sealing is not None:
            lines.append(self.sealing.say())
        return "\n".join(lines)

    def _ago(self, moment: datetime | None) -> str:
        if moment is None:
            return "-"
        seconds = max(0, int((self.as_of - moment).total_seconds()))
        return f"{moment.astimezone(UTC):%Y-%m-%d %H:%M:%S} ({_duration(seconds)} ago)"


async def collect(settings: Settings, workers: list[str], *, now: datetime) -> Status:
    status = Status(
        settings.events_topic,
        settings.consumer_group,
        now,
        retention_interval_seconds=settings.maintenance_interval_seconds,
    )
    status.workers = list(await asyncio.gather(*(_worker(url) for url in workers)))
    conn = await db.connect(settings.postgres_dsn.get(), settings.postgres_schema)
    try:
        group, topic = settings.consumer_group, settings.events_topic
        stored = await offsets.stored_offsets(conn, group, topic)
        skipped = await offsets.skipped_totals(conn, group, topic)
        verdicts: dict[int, Verdict] = {}
        topic_log: TopicLog | None = None
        heads_log: WitnessLog | None = None
        try:
            topic_log, stored, verdicts, heads_log = await _judge(
                settings, lambda: offsets.stored_offsets(conn, group, topic)
            )
        except RoomlogsError as e:
            status.kafka_error = str(e)
        except (KafkaError, OSError) as e:
            status.kafka_error = f"{type(e).__name__}: {e}"
        tables = await partition_status(
            conn, today=now.date(), dead_letter_retention_days=settings.dead_letter_retention_days
        )
        run = await last_run(conn)
        status.sealing = await sealing_state(
            conn,
            now=now,
            late_window_seconds=settings.seal_late_window_seconds,
            heads_topic=settings.seal_heads_topic,
        )
        if status.sealing.enabled and heads_log is not None:
            history = await seals.incarnations(conn, settings.seal_heads_topic)
            changed = witness.judge(history[-1] if history else None, heads_log)
            if changed is not None:
                heads = len(await seals.heads(conn))
                status.sealing = replace(
                    status.sealing,
                    witness_problem=f"{changed}; the next sealing run republishes the {heads} signed daily "
                    "heads to it (README, Evidence)",
                )
    finally:
        await conn.close()
    if topic_log is not None and topic_log.topic_id is not None:
        status.topic_id = str(topic_log.topic_id)
    parts = topic_log.partitions if topic_log is not None else {}
    holder = {p: w for w in status.workers for p in w.partitions}
    for p in sorted(set(parts) | set(stored)):
        log_part, mine, verdict = parts.get(p), stored.get(p), verdicts.get(p)
        end = log_part.end if log_part else None
        next_offset = mine.next_offset if mine else None
        # never written: the worker starts at the log's start
        lag = (
            None
            if log_part is None
            else log_part.end - (log_part.start if mine is None else mine.next_offset)
        )
        w = holder.get(p)
        status.partitions.append(
            PartitionState(
                p, end, next_offset, lag, mine.updated_at if mine else None, w.paused if w else None,
                w.url if w else None,
                log_start=log_part.start if log_part else None,
                finding=verdict.finding.value if verdict else None,
                detail=verdict.why if verdict else "",
                skipped_ever=skipped.get(p, 0),
            )
        )  # fmt: skip
    status.partitions_ahead = {t.table: t.ahead_days for t in tables}
    if run is not None:
        status.last_retention_run, status.last_retention_outcome = run.started_at, run.outcome
    return status


async def _judge(
    settings: Settings, read_stored: Callable[[], Awaitable[dict[int, StoredOffset]]]
) -> tuple[TopicLog, dict[int, StoredOffset], dict[int, Verdict], WitnessLog]:
    """The broker's log of the events topic, the offsets of record, and per partition what a worker would
    find on assignment; the witness topic as the broker has it.

    The offsets of record are read after the group's offsets on Kafka: a worker writes PostgreSQL first and
    commits to Kafka after, so read in this order a running worker never makes them look behind."""
    await check_speaks_kafka(settings)  # not Kafka's port: said in seconds
    async with LogProbe(settings) as probe:
        topic_log = await probe.describe(settings.events_topic)
        committed = await probe.committed(
            settings.consumer_group, settings.events_topic, topic_log.partitions
        )
        stored = await read_stored()
        verdicts = await judge_log(probe, topic_log, stored, committed)
        heads_log = await witness.describe(probe, settings.seal_heads_topic)
    return topic_log, stored, {v.partition: v for v in verdicts}, heads_log


def _notice_line(notice: dict[str, Any]) -> str:
    """A worker's notice: its detail, and since when (a re-read: up to which offset)."""
    line = str(notice["detail"])
    since = notice.get("since")
    if isinstance(since, str) and since:
        line += f" [found {since[:19].replace('T', ' ')} UTC"
        until = notice.get("until_offset")
        line += f"; reading again up to offset {until}]" if isinstance(until, int) else "]"
    return line


async def _worker(url: str) -> WorkerState:
    """A worker's `/readyz` (200 when ready, 503 with the same JSON body when not)."""
    target = url.rstrip("/")
    if not target.endswith(("/readyz", "/health")):
        target += "/readyz"
    if not target.startswith(("http://", "https://")):
        return WorkerState(url, None, None, [], "not an http(s) URL")

    def get() -> bytes:
        try:
            with urllib.request.urlopen(target, timeout=_WORKER_TIMEOUT_SECONDS) as answer:  # noqa: S310
                body: bytes = answer.read()
        except urllib.error.HTTPError as e:  # 503: not ready, and the body says why
            body = e.read()
        return body

    try:
        body = orjson.loads(await asyncio.to_thread(get))
    except (OSError, ValueError) as e:  # URLError, timeouts and refused connections are OSErrors
        return WorkerState(url, None, None, [], f"{type(e).__name__}: {e}")
    if not isinstance(body, dict):
        return WorkerState(url, None, None, [], "its /readyz did not answer a JSON object")
    partitions = [p for p in body.get("partitions", []) if isinstance(p, int)]
    problem = body.get("problem") if isinstance(body.get("problem"), str) else None
    notices = [_notice_line(n) for n in body.get("notices", []) if isinstance(n, dict) and n.get("detail")]
    return WorkerState(
        url,
        body.get("status") == "ok",
        bool(body.get("paused")),
        partitions,
        problem=problem,
        notices=notices,
    )


def status(settings: Settings, args: argparse.Namespace) -> int:
    workers = args.worker or _worker_of_the_stack(settings)
    result = asyncio.run(collect(settings, workers, now=datetime.now(UTC)))
    if args.json:
        print(orjson.dumps(result.to_json(), option=orjson.OPT_INDENT_2).decode())
    else:
        print(result.render())
    unanswered = result.kafka_error is not None or any(w.error is not None for w in result.workers)
    witness = result.sealing is not None and result.sealing.witness_problem
    return 1 if result.problems or witness or unanswered else 0


def _worker_of_the_stack(settings: Settings) -> list[str]:
    """Without --worker: the worker of the running `roomlogs up` (or `demo`) of this directory, when these
    settings are that stack's (.roomlogs/stack.json, pipeline/cli/stackfile.py), so that its paused and
    worker columns say something; else none."""
    from pipeline.cli import stackfile

    found = stackfile.running(stackfile.STACK_FILE)
    if found is None:
        return []
    env, url = found["env"], found.get("metrics_url")
    same = (
        env.get("ROOMLOGS_KAFKA_BOOTSTRAP") == settings.kafka_bootstrap
        and env.get("ROOMLOGS_POSTGRES_DSN") == settings.postgres_dsn.get()
        and env.get("ROOMLOGS_CONSUMER_GROUP", settings.consumer_group) == settings.consumer_group
    )
    return [url.removesuffix("/metrics")] if same and isinstance(url, str) else []


#: How the status table names each finding (pipeline.ingest.positions.Finding).
_FINDING_SHOWN = {
    Finding.RESUME.value: "ok",
    Finding.FIRST_READ.value: "ok (not read yet)",
    Finding.NEW_LOG.value: "ERROR another log",
    Finding.DELETED_UNREAD.value: "ERROR deleted unread",
    Finding.DATABASE_BEHIND.value: "ERROR database behind",
}


def _opt(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


def _duration(seconds: int) -> str:
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    if seconds < 172_800:
        return f"{seconds // 3600} h"
    return f"{seconds // 86_400} days"


COMMANDS = {"status": status}
