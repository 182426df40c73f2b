"""Sealing closed days: every room's events of a UTC day as one signed Merkle tree head, chained.

Who calls it: maintenance, wherever it runs as the tables' owner (the worker host's timer, or
`roomlogs retention enforce --apply --loop`), and `roomlogs seals run`; only with ROOMLOGS_SEAL_KEY_FILE.
Off the ingest path: a run reads a closed day's rows once and writes a few rows per room.

A day is closed `seal_late_window_seconds` (ROOMLOGS_SEAL_LATE_WINDOW_SECONDS) after it ends, and sealed by
the next run. Once sealed, ingest refuses new events of that day (dead letter `day_sealed`; a copy of an event
already stored stays a counted duplicate and changes nothing); until then, a closed day still takes its late
rows (a lagging worker's, or those a database restored from a backup lost and reads again). The run reads
and seals a day holding the seal lock exclusively (`seals.SEAL_LOCK`), which an ingest transaction holds
shared from the moment it asks whether a day is sealed to its commit: either the run waits for that batch and
covers its rows, or the batch sees the day's head and refuses them. So a seal covers exactly the rows the day
will ever have.

One transaction per day: every room's seal (leaves in (occurred_at, event_id) order, RFC 9162 tree head,
rows per retention class, chained to the room's previous seal, signed) and the day's head over those seals
(chained to the previous head, signed). Killed half-way (kill -9, an outage), nothing of the day is
written and the next run seals it whole. Two runs at once: the second waits on the day's lock and finds the
day sealed. After commit, heads not yet on the witness topic are published (at least once).

A sealed day takes no more rows, so it can carry an index the live day could not afford: after sealing,
maintenance and `roomlogs seals run` build the chat search index of each sealed day's partitions
(`index_sealed_days`, pipeline/storage/search_index.py), within a time budget per maintenance run.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Protocol

import asyncpg
from aiokafka.errors import KafkaError

from pipeline.errors import ConfigurationError
from pipeline.evidence import merkle
from pipeline.evidence.keys import SealKey
from pipeline.evidence.leaves import leaf_of
from pipeline.evidence.statements import DayLeaves, Leaf, daily_head, room_day_seal, statement_hash
from pipeline.kafka_client import KafkaAccessError, KafkaUnavailableError
from pipeline.retention_rules import closed_before
from pipeline.sealing import witness
from pipeline.settings import Settings
from pipeline.storage import db, seals, search_index
from pipeline.storage.classes import retention_days
from pipeline.storage.seals import StoredHead, StoredSeal
from pipeline.storage.search_index import SearchIndexReport

__all__ = [
    "SEARCH_INDEX_BUDGET_SECONDS",
    "SealReport",
    "index_sealed_days",
    "seal_closed_days",
    "seal_in_maintenance",
]

log = logging.getLogger("roomlogs.sealing")


class Publish(Protocol):
    """Where the daily heads go (pipeline.sealing.witness.Publisher)."""

    async def __call__(self, head: StoredHead) -> None: ...

    async def log(self) -> witness.WitnessLog: ...


#: How long one maintenance run may go on starting search index builds on sealed days; the rest wait for
#: the next run (after an upgrade, or a long outage, many days may be waiting at once).
SEARCH_INDEX_BUDGET_SECONDS = 60.0


@dataclass
class SealReport:
    days: list[date] = field(default_factory=list)
    rooms: int = 0
    events: int = 0
    seconds: float = 0.0
    published: int = 0
    #: the search indexes built afterwards (`seal_in_maintenance`, `roomlogs seals run`)
    search: SearchIndexReport | None = None


async def seal_closed_days(
    conn: asyncpg.Connection,
    settings: Settings,
    key: SealKey,
    *,
    now: datetime,
    publish: Publish | None = None,
    max_days: int | None = None,
) -> SealReport:
    """Seal every closed day that has partitions and no head yet, oldest first; publish the heads."""
    started = time.perf_counter()
    report = SealReport()
    known = await seals.public_keys(conn)
    if known and key.key_id not in known:
        last = await seals.last_head(conn)
        log.warning(
            "sealing with key %s, new to this schema (seals so far signed with %s%s): a rotation (README, "
            "Evidence: Keys and rotation). If ROOMLOGS_SEAL_KEY_FILE is not the key meant (another "
            "deployment's, a test key), stop this process: every seal it makes from now on is signed with it",
            key.key_id,
            ", ".join(sorted(known)),
            f"; the last daily head, of {last.day}, with {last.key_id}" if last else "",
        )
    # registered before any fence below: a writer that starts after a fence sees that sealing is on
    await seals.add_key(conn, key.key_id, key.public_raw)
    # the database's clock too: a day is sealed once closed by both
    db_now: datetime = await conn.fetchval("SELECT clock_timestamp()")
    days = await seals.unsealed_days(conn, closed_before(min(now, db_now), settings.seal_late_window_seconds))
    for day in days[:max_days]:
        rooms, events = await _seal_day(conn, day, key)
        if rooms >= 0:
            report.days.append(day)
            report.rooms += rooms
            report.events += events
            log.info("sealed %s: %d rooms, %d events (key %s)", day, rooms, events, key.key_id)
    if publish is not None:
        report.published = await _publish(conn, settings.seal_heads_topic, publish)
    # a seal's leaves serve while rows they speak of may exist; the seal itself stays
    longest = max((await retention_days(conn)).values(), default=0)
    await seals.forget_leaves(conn, min(now, db_now).date() - timedelta(days=longest + 1))
    report.seconds = time.perf_counter() - started
    return report


async def _seal_day(conn: asyncpg.Connection, day: date, key: SealKey) -> tuple[int, int]:
    """Seal one day (rooms, events); (-1, 0) when another run sealed it first."""
    async with conn.transaction():
        await conn.execute(seals.SEAL_LOCK)  # writers asking about this day wait, or are waited for
        if await seals.heads(conn, day=day):
            return -1, 0
        sealed_at = datetime.now(UTC)
        made: list[StoredSeal] = []
        room: str | None = None
        rows: list[asyncpg.Record] = []
        async for r in seals.day_rows(conn, day):
            if r["room_id"] != room and rows:
                made.append(await _seal_room(conn, day, rows, key, sealed_at))
                rows = []
            room = r["room_id"]
            rows.append(r)
        if rows:
            made.append(await _seal_room(conn, day, rows, key, sealed_at))
        await _head(conn, day, made, key, sealed_at)
        return len(made), sum(s.tree_size for s in made)


async def _seal_room(
    conn: asyncpg.Connection, day: date, rows: list[asyncpg.Record], key: SealKey, sealed_at: datetime
) -> StoredSeal:
    room_id = rows[0]["room_id"]
    leaves = DayLeaves(
        tuple(Leaf(uuid.UUID(str(r["event_id"])), leaf_of(r), r["retention_class"]) for r in rows)
    )
    root = merkle.root([leaf.hash for leaf in leaves.leaves])
    prev = (await seals.last_seals(conn, [room_id])).get(room_id)
    seq = 1 if prev is None else prev.seq + 1
    statement = room_day_seal(
        room_id=room_id,
        day=day,
        seq=seq,
        tree_size=len(rows),
        root=root,
        first_at=rows[0]["occurred_at"],
        last_at=rows[-1]["occurred_at"],
        classes=dict(Counter(r["retention_class"] for r in rows)),
        sealed_at=sealed_at,
        prev=None if prev is None else prev.statement_hash,
        key_id=key.key_id,
    )
    seal = StoredSeal(
        0, room_id, day, seq, len(rows), root, statement, statement_hash(statement), key.key_id,
        key.sign(statement), sealed_at,
    )  # fmt: skip
    await seals.insert_seal(conn, seal, leaves)
    return seal


async def _head(
    conn: asyncpg.Connection, day: date, made: list[StoredSeal], key: SealKey, sealed_at: datetime
) -> None:
    prev = await seals.last_head(conn)
    leaves = head_leaves(made)
    root = merkle.root(leaves)
    seq = 1 if prev is None else prev.seq + 1
    statement = daily_head(
        day=day,
        seq=seq,
        tree_size=len(leaves),
        root=root,
        sealed_at=sealed_at,
        prev=None if prev is None else prev.statement_hash,
        key_id=key.key_id,
    )
    await seals.insert_head(
        conn,
        StoredHead(
            0,
            day,
            seq,
            len(leaves),
            root,
            statement,
            statement_hash(statement),
            key.key_id,
            key.sign(statement),
            sealed_at,
        ),
    )


async def _publish(conn: asyncpg.Connection, topic: str, publish: Publish) -> int:
    """Publish, oldest first, the heads this incarnation of the witness topic has not acknowledged yet: all
    of them to a topic that is not the one published to last (pipeline/sealing/witness.py, `judge`)."""
    heads = await seals.heads(conn)
    if not heads:
        return 0
    found = await publish.log()
    history = await seals.incarnations(conn, topic)
    latest = history[-1] if history else None
    changed = witness.judge(latest, found)
    topic_id, holding = witness.incarnation(latest, found, changed)
    if changed is None and latest is not None and latest.topic_id == seals.UNKNOWN_TOPIC_ID != topic_id:
        await seals.name_incarnation(conn, topic, topic_id)  # recorded before topic ids were (0020)
    done = await seals.published(conn, topic, holding)
    if changed is not None:
        log.warning(
            "%s; republishing the %d signed daily heads to it (topic id %s)",
            changed, len(heads) - len(done), topic_id,
        )  # fmt: skip
    n = 0
    for head in heads:
        if head.head_id in done:
            continue
        await publish(head)
        await seals.record_publication(conn, head.head_id, topic, topic_id)
        n += 1
    return n


def head_leaves(made: list[StoredSeal]) -> list[bytes]:
    """The leaves of a daily head: its seals' statement hashes, in room order, as leaf hashes."""
    return [merkle.leaf_hash(s.statement_hash) for s in sorted(made, key=lambda s: s.room_id)]


async def seal_in_maintenance(
    pool: asyncpg.Pool, settings: Settings, key: SealKey, publish: Publish | None
) -> SealReport | None:
    """A maintenance run's sealing step, then the search indexes of sealed days (`index_sealed_days`):
    never raises for an outage or for the broker (logged, retried at the next run); a bug propagates."""
    report = None
    try:
        async with db.acquire(pool) as conn:
            report = await seal_closed_days(conn, settings, key, now=datetime.now(UTC), publish=publish)
    except db.OUTAGES as e:
        log.warning("sealing skipped this run, PostgreSQL unreachable: %r", e)
        return None
    except (KafkaError, KafkaUnavailableError, KafkaAccessError) as e:  # the broker away or refusing us
        log.warning("sealing done, daily heads not yet published to the witness topic: %r", e)
    search = await index_sealed_days(pool, budget_seconds=SEARCH_INDEX_BUDGET_SECONDS)
    if report is not None:
        report.search = search
    return report


async def index_sealed_days(pool: asyncpg.Pool, *, budget_seconds: float | None) -> SearchIndexReport | None:
    """The chat search indexes of sealed days (pipeline/storage/search_index.py), on a connection of the
    pool outside any transaction: None when PostgreSQL is unreachable (logged; the next run builds them).
    A build that times out on a lock is deferred inside the report, not raised. Without pg_trgm or
    btree_gin in the database, each run logs an error with the fix and goes on: searches stay correct,
    only slower, and neither ingest nor sealing needs them."""
    unfit: ConfigurationError | None = None
    try:
        async with db.acquire(pool) as conn:
            return await search_index.build_sealed(
                conn, today=datetime.now(UTC).date(), budget_seconds=budget_seconds
            )
    except db.OUTAGES as e:
        log.warning("search indexes of sealed days skipped this run, PostgreSQL unreachable: %r", e)
    except ConfigurationError as e:
        unfit = e
    if unfit is not None:
        log.error("search indexes of sealed days not built: %s", unfit)  # no traceback: the fix is in it
    return None
