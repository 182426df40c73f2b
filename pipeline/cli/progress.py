"""How far the worker is: offsets of record versus the end of the topic's log, and what a run stored."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from datetime import datetime

from tqdm import tqdm

from pipeline.kafka_logs import LogProbe
from pipeline.settings import Settings
from pipeline.storage import db, offsets


async def wait_caught_up(settings: Settings, timeout_seconds: float, *, progress: bool = True) -> bool:
    """Wait until the worker has durably written every record now in the topic; show a progress bar.

    Only offsets of record that count in the log the broker holds now (its topic id) count: those an
    earlier run left in another log (`demo` again on the kept PostgreSQL: Tansu starts empty, with a new
    topic id; a topic recreated) are no progress, even where they are past the new log's end, which the
    same traffic of a seed reaches exactly. The worker reads such a log again from its start (README,
    When the log under the offsets changes); a caller that stopped at the old numbers stopped the stack
    before anything of this run was stored. Where the broker gives no topic id, the numbers alone."""
    async with LogProbe(settings) as probe:
        log = await probe.describe(settings.events_topic)
    ends = {p: part.end for p, part in log.partitions.items()}
    total = sum(ends.values())
    deadline = time.monotonic() + timeout_seconds
    with tqdm(total=total, unit="rec", desc="stored", disable=not progress, leave=False) as bar:
        while True:
            stored = await _stored_offsets(settings)
            done = sum(
                min(stored[p].next_offset, end)
                for p, end in ends.items()
                if p in stored and (log.topic_id is None or stored[p].topic_id == log.topic_id)
            )
            bar.update(done - bar.n)
            if done >= total:
                return True
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.5)


async def _stored_offsets(settings: Settings) -> dict[int, offsets.StoredOffset]:
    """The offsets of record of the configured group on the events topic, by partition."""
    conn = await db.connect(settings.postgres_dsn.get(), settings.postgres_schema)
    try:
        return await offsets.stored_offsets(conn, settings.consumer_group, settings.events_topic)
    finally:
        await conn.close()


@dataclass
class StoredReport:
    """What a run stored (ingested since it began), and how many events the database holds in all: the
    embedded PostgreSQL keeps earlier runs' rows, which are not this run's doing."""

    events_by_type: dict[str, int] = field(default_factory=dict)
    events_by_class: dict[str, int] = field(default_factory=dict)
    dead_letters_by_reason: dict[str, int] = field(default_factory=dict)
    rooms: int = 0
    events_in_all: int = 0

    def render(self) -> str:
        stored = sum(self.events_by_type.values())
        lines = [
            f"stored events: {stored:,} in {self.rooms:,} rooms"
            + (
                f" (the database holds {self.events_in_all:,}, earlier runs' too)"
                if self.events_in_all > stored
                else ""
            )
        ]
        lines += [f"  {k:<28} {v:>10,}" for k, v in sorted(self.events_by_type.items())]
        lines.append("by retention class:")
        lines += [f"  {k:<28} {v:>10,}" for k, v in sorted(self.events_by_class.items())]
        lines.append(f"dead-lettered: {sum(self.dead_letters_by_reason.values()):,}")
        lines += [f"  {k:<28} {v:>10,}" for k, v in sorted(self.dead_letters_by_reason.items())]
        return "\n".join(lines)


async def database_now(settings: Settings) -> datetime:
    """The database's clock, which stamps what is stored (`ingested_at`, `received_at`)."""
    conn = await db.connect(settings.postgres_dsn.get(), settings.postgres_schema)
    try:
        now: datetime = await conn.fetchval("SELECT now()")
        return now
    finally:
        await conn.close()


async def stored_report(settings: Settings, since: datetime) -> StoredReport:
    """What was stored (events, dead letters) from `since` on, when the run began."""
    conn = await db.connect(settings.postgres_dsn.get(), settings.postgres_schema)
    try:
        rep = StoredReport()
        for r in await conn.fetch(
            """SELECT event_type, retention_class, count(*) AS n FROM events WHERE ingested_at >= $1
                GROUP BY 1, 2""",
            since,
        ):
            rep.events_by_type[r["event_type"]] = rep.events_by_type.get(r["event_type"], 0) + r["n"]
            rep.events_by_class[r["retention_class"]] = (
                rep.events_by_class.get(r["retention_class"], 0) + r["n"]
            )
        for r in await conn.fetch(
            "SELECT reason, count(*) AS n FROM dead_letters WHERE received_at >= $1 GROUP BY 1", since
        ):
            rep.dead_letters_by_reason[r["reason"]] = r["n"]
        rep.rooms = (
            await conn.fetchval("SELECT count(DISTINCT room_id) FROM events WHERE ingested_at >= $1", since)
            or 0
        )
        rep.events_in_all = await conn.fetchval("SELECT count(*) FROM events") or 0
        return rep
    finally:
        await conn.close()
