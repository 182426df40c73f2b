"""Order, duplication, batching and crash independence of the detectors (storage level, real PostgreSQL):
whatever the writer is handed, in any order, with any copies and cuts, and a transaction that dies before
its commit, the alerts stored are those of evaluating every window over all the stored rows at once."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import asyncpg
import pytest
from detector_support import Event, oracle, set_low_thresholds, write_batch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.detectors import Detectors
from pipeline.storage import alerts, db, migrate, offsets
from pipeline.storage.offsets import advance
from pipeline.storage.partitions import PartitionManager
from pipeline.storage.writer import BatchWriter

PROPERTY = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
USERS = ("u-1", "u-2", "u-3")


@pytest.fixture
async def pool(postgres_dsn: str, pg_schema: str) -> AsyncIterator[asyncpg.Pool]:
    conn = await db.connect(postgres_dsn, pg_schema)
    await migrate.migrate(conn, pg_schema)
    await set_low_thresholds(conn)
    await conn.close()
    p = await db.create_pool(postgres_dsn, pg_schema, 2)
    yield p
    await p.close()


@st.composite
def events(draw: st.DrawFn, room: str) -> Event:
    kind = draw(st.sampled_from(["chat", "chat", "chat", "enter", "mod", "perm", "setting", "gift"]))
    seconds = draw(st.integers(0, 25)) + draw(st.sampled_from([0.0, 0.0, 0.5]))
    actor = draw(st.sampled_from(USERS))
    other = draw(st.sampled_from(USERS))
    eid = str(uuid.uuid4())
    if kind == "chat":
        # one text in several spellings (case, spacing, whitespace before the first 32 characters), another
        text = draw(
            st.sampled_from(
                [
                    "Buy  now",
                    "buy now",
                    "hello there",
                    "HELLO  THERE",
                    " \t" * 20 + "hello there",
                    "hello world",
                ]
            )
        )
        return Event(eid, room, "chat.message", actor, seconds, text=text)
    if kind == "enter":
        return Event(eid, room, "user.entered", actor, seconds)
    if kind == "mod":
        etype = draw(
            st.sampled_from(["moderation.warn", "moderation.mute", "moderation.kick", "moderation.ban"])
        )
        return Event(eid, room, etype, actor, seconds, target=other, data={"reason": ""})
    if kind == "perm":
        change = draw(st.sampled_from(["moderator_added", "moderator_removed", "owner_transferred"]))
        return Event(
            eid, room, "room.permissions_changed", actor, seconds, target=other, data={"change": change}
        )
    if kind == "setting":
        old, new = draw(st.sampled_from([(True, False), (False, True), (None, True)]))
        name = draw(st.sampled_from(["voice_enabled", "password_protected"]))
        return Event(
            eid,
            room,
            "room.settings_changed",
            actor,
            seconds,
            data={"changes": {name: {"old": old, "new": new}}},
        )
    return Event(eid, room, "gift.sent", actor, seconds, target=other)


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[list[Event], list[list[Event]], int | None]:
    room = f"room-{uuid.uuid4().hex[:8]}"
    originals = draw(st.lists(events(room), min_size=12, max_size=40))
    copies = originals + draw(st.lists(st.sampled_from(originals), max_size=8))  # resends, replays
    order = draw(st.permutations(copies))
    cuts = sorted(draw(st.sets(st.integers(1, max(1, len(order) - 1)), max_size=5)))
    batches = [order[a:b] for a, b in zip([0, *cuts], [*cuts, len(order)], strict=True) if a < b]
    crash = draw(st.none() | st.integers(0, len(batches) - 1))
    return originals, batches, crash


class Crash(Exception):
    """The process died before its commit."""


@PROPERTY
@given(scenario=scenarios())
async def test_alerts_are_those_of_all_the_rows_at_once(
    pool: asyncpg.Pool,
    scenario: tuple[list[Event], list[list[Event]], int | None],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    originals, batches, crash = scenario
    room = originals[0].room
    topic = f"t-{uuid.uuid4().hex[:8]}"
    partitions = PartitionManager()
    async with pool.acquire() as conn:
        await partitions.load(conn)
    writer = BatchWriter(pool, partitions, detectors=Detectors())
    dying = [False]

    async def advance_or_die(*args: Any, **kwargs: Any) -> None:
        await advance(*args, **kwargs)
        if dying[0]:
            raise Crash

    monkeypatch.setattr(offsets, "advance", advance_or_die)
    offset = 0
    for i, batch_events in enumerate(batches):
        if i == crash:
            dying[0] = True
            with pytest.raises(Crash):
                await writer.write(write_batch(batch_events, topic, offset), originals[0].at)
            dying[0] = False
        await writer.write(write_batch(batch_events, topic, offset), originals[0].at)
        offset += len(batch_events)
    async with pool.acquire() as conn:
        stored = await alerts.alert_keys(conn, room)
        queued = await conn.fetchval(
            "SELECT count(*) FROM alert_outbox WHERE message_key = convert_to($1, 'UTF8')", room
        )
    assert stored == oracle(originals)
    assert queued == len(stored)  # each stored alert queued once for the topic, none for rolled-back ones
    # and the same events written again, in one batch (a replay): nothing new
    async with pool.acquire() as conn:
        before = await conn.fetchval("SELECT count(*) FROM alerts")
    await writer.write(write_batch([replace(e) for e in originals], f"{topic}-again", 0), originals[0].at)
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM alerts") == before
