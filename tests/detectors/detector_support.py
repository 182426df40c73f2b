"""Shared by the detector tests: events as the ingest stage hands them to the writer, low thresholds so
small scenarios fire, and the oracle: the alert keys of computing over all the stored rows at once."""

from __future__ import annotations

import random
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from typing import Any

import asyncpg
import orjson
from aiokafka import AIOKafkaProducer

from pipeline.detectors import params as P
from pipeline.detectors.rules import Stored, alerts_of, text_key
from pipeline.publisher import scenarios
from pipeline.publisher.simulator import SimulationConfig, iter_events
from pipeline.settings import Settings
from pipeline.storage import db, detector_settings, migrate
from pipeline.storage.batch import WriteBatch

#: yesterday noon (UTC): an open day with room for a minute either side
BASE = datetime.combine(datetime.now(UTC).date() - timedelta(days=1), time(12), tzinfo=UTC)

#: Small windows and thresholds, so a few events make each detector fire (set for class "public").
LOW: dict[str, dict[str, int]] = {
    P.CHAT_FLOOD: {"window_seconds": 10, "max_messages": 2},
    P.SPAM_WAVE: {"window_seconds": 10, "min_users": 2, "min_text_chars": 0},
    P.RAID: {"window_seconds": 10, "min_users": 2, "baseline_weeks": 0},
    P.MODERATOR_ABUSE: {"window_seconds": 10, "max_targets": 1},
    P.PERMISSION_CHURN: {"window_seconds": 20, "min_reversions": 1},
    P.GIFT_BURST: {"window_seconds": 10, "max_gifts": 1},
}


async def set_low_thresholds(
    conn: asyncpg.Connection, scope: str = "class", scope_id: str = "public"
) -> None:
    for name, params in LOW.items():
        await detector_settings.set_override(
            conn,
            scope,
            scope_id,
            name,
            enabled=True,
            params=params,
            changed_by="test",
            reason="small scenarios",
        )


@dataclass(frozen=True)
class Event:
    """One event of a room; `seconds` after BASE."""

    event_id: str
    room: str
    etype: str
    actor: str | None
    seconds: float
    target: str | None = None
    text: str | None = None
    #: room.settings_changed: {name: {"old": ..., "new": ...}}; room.permissions_changed: "change"
    data: dict[str, Any] = field(default_factory=dict)
    cls: str = "public"

    @property
    def at(self) -> datetime:
        return BASE + timedelta(microseconds=round(self.seconds * 1_000_000))

    def row(self, partition: int, offset: int) -> tuple[Any, ...]:
        payload: dict[str, Any] = dict(self.data)
        if self.actor is not None:
            payload["actor"] = {"user_id": self.actor}
        if self.etype == "gift.sent":
            payload.setdefault("credits", 10)
        return (
            self.event_id,
            self.at,
            self.cls,
            self.room,
            self.etype,
            1,
            self.actor,
            self.target,
            self.text,
            orjson.dumps(payload),
            partition,
            offset,
        )


def write_batch(events: list[Event], topic: str, first: int, partition: int = 0) -> WriteBatch:
    """A WriteBatch as the ingest stage builds it: one row per event id, further copies as variants."""
    batch = WriteBatch(
        topic=topic,
        consumer_group="g",
        first_offsets={partition: first},
        next_offsets={partition: first + len(events)},
    )
    seen: set[str] = set()
    for i, e in enumerate(events):
        row = e.row(partition, first + i)
        (batch.variants if e.event_id in seen else batch.rows).append(row)
        seen.add(e.event_id)
        batch.event_days.add((e.cls, row[1].date()))
    return batch


def _subjects(name: str, e: Event) -> list[tuple[str, str | None, str | None]]:
    """(subject, extra, extra2) of an event for detector `name`, as rules.py's SQL makes them."""
    if name == P.CHAT_FLOOD and e.etype == "chat.message":
        return [(e.actor or "", None, None)]
    if name == P.SPAM_WAVE and e.etype == "chat.message" and e.text is not None:
        key, norm = text_key(e.text)
        return [(key, str(len(norm)), None)]
    if name == P.RAID and e.etype == "user.entered":
        return [("", None, None)]
    if name == P.MODERATOR_ABUSE and e.etype in ("moderation.warn", "moderation.mute", "moderation.kick",
                                                  "moderation.ban"):  # fmt: skip
        return [(e.actor or "", None, None)]
    if name == P.PERMISSION_CHURN and e.etype == "room.permissions_changed":
        return [(f"role:{e.target}", "down" if e.data["change"] == "moderator_removed" else "up", None)]
    if name == P.PERMISSION_CHURN and e.etype == "room.settings_changed":
        out = []
        for key, change in e.data["changes"].items():
            old = change.get("old")
            out.append(
                (f"setting:{key}", None if old is None else orjson.dumps(old).decode(),
                 orjson.dumps(change["new"]).decode())
            )  # fmt: skip
        return out
    if name == P.GIFT_BURST and e.etype == "gift.sent":
        return [(f"{e.actor}>{e.target}", "10", None)]
    return []


def oracle(events: list[Event]) -> set[tuple[str, str, str, datetime]]:
    """The alert keys of evaluating every window over all of `events` (one copy each) at once."""
    originals = {e.event_id: e for e in events}.values()
    keys: set[tuple[str, str, str, datetime]] = set()
    for name in P.DETECTORS:
        groups: dict[tuple[str, str], list[Stored]] = defaultdict(list)
        for e in originals:
            for subject, extra, extra2 in _subjects(name, e):
                groups[(e.room, subject)].append(
                    Stored(
                        e.room, e.cls, subject, e.at, uuid.UUID(e.event_id), e.actor, e.target, extra, extra2
                    )
                )
        params = P.Effective(True, {**P.builtin(name, "public"), **LOW[name]})
        for (room, subject), rows in groups.items():
            rows.sort(key=lambda s: (s.occurred_at, s.event_id))
            ids = {str(s.event_id) for s in rows}
            keys |= {a.key for a in alerts_of(name, room, subject, rows, params, ids, {})}
    return keys


async def produce_raw(settings: Settings, records: list[tuple[bytes, bytes]]) -> None:
    """Publish (key, value) records to the settings' events topic, acknowledged."""
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        for key, value in records:
            await producer.send(settings.events_topic, value=value, key=key)
        await producer.flush()
    finally:
        await producer.stop()


async def room_alerts(settings: Settings, room: str | None = None) -> list[asyncpg.Record]:
    """The stored alerts (of one room), as the schema's owner reads them."""
    dsn = settings.postgres_dsn.get()
    conn = await db.connect(dsn, settings.postgres_schema)
    try:
        return list(
            await conn.fetch(
                "SELECT * FROM alerts WHERE $1::text IS NULL OR room_id = $1 ORDER BY window_start, detector",
                room,
            )
        )
    finally:
        await conn.close()


SEED = 18


def mixed_records() -> list[tuple[bytes, bytes]]:
    """Normal traffic of 40 rooms with the six scenarios' rooms interleaved, all in the last few minutes."""
    now = datetime.now(UTC)
    normal = [
        (k, v) for k, v, _ in iter_events(SimulationConfig(40, 6_000, 0.0, SEED, history_seconds=240), now)
    ]
    bursts = [scenarios.build(name, now - timedelta(seconds=90)).records() for name in scenarios.SCENARIOS]
    out, rng = list(normal), random.Random(SEED)
    for burst in bursts:  # each scenario's records keep their order, spread among the others
        slots = sorted(rng.randrange(len(out) + 1) for _ in burst)
        for offset, (slot, record) in enumerate(zip(slots, burst, strict=True)):
            out.insert(slot + offset, record)
    return out


async def alert_ids(settings: Settings) -> dict[tuple[str, str, str, datetime], uuid.UUID]:
    conn = await db.connect(settings.postgres_dsn.get(), settings.postgres_schema)
    try:
        rows = await conn.fetch("SELECT room_id, detector, subject, window_key, alert_id FROM alerts")
        return {(r[0], r[1], r[2], r[3]): r[4] for r in rows}
    finally:
        await conn.close()


async def clean_run_alerts(
    settings: Settings, ingest_worker: Any, topic_factory: Any
) -> dict[tuple[str, str, str, datetime], uuid.UUID]:
    """The alerts of an uninterrupted in-process worker over everything in `settings`' events topic, in a
    schema, consumer group and alerts topic of its own (dropped afterwards with its roles)."""
    clean_schema = f"{settings.postgres_schema}_c"
    dsn = settings.postgres_dsn.get()
    conn = await db.connect(dsn, clean_schema)
    await migrate.migrate(conn, clean_schema)
    await conn.close()
    clean = settings.replace(
        postgres_schema=clean_schema,
        consumer_group=f"{settings.consumer_group}-clean",
        alerts_topic=await topic_factory(partitions=1, prefix="alerts-clean-"),
    )
    try:
        async with ingest_worker(clean) as w:
            assert await w.caught_up(180)
        return await alert_ids(clean)
    finally:
        admin = await asyncpg.connect(dsn)
        try:
            await admin.execute(f'DROP SCHEMA IF EXISTS "{clean_schema}" CASCADE')
            for role in (f"{clean_schema}_api", f"{clean_schema}_worker"):
                await admin.execute(f'DROP OWNED BY "{role}"')
                await admin.execute(f'DROP ROLE "{role}"')
        finally:
            await admin.close()
