"""Rollups (migration 0016) against real PostgreSQL: whatever the batch writer is handed, in any order, with
any duplication and batching, rows PostgreSQL refuses inside a savepoint, a transaction that dies before its
commit, and authorized deletions covering all or part of an actor's day, the rollup tables hold exactly what
a GROUP BY over the stored rows gives. Also: the worker's role writes them through the triggers and can
neither read nor write them itself; a day whose partition was made some other way gets its rollup tables;
the migration rolls up rows stored before it."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, time, timedelta
from typing import Any

import asyncpg
import orjson
import pytest
from db_roles import login_as
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rollup_support import assert_rollups_match_rows

from pipeline.storage import db, migrate, offsets
from pipeline.storage.batch import EVENT_COLUMNS, WriteBatch
from pipeline.storage.offsets import advance
from pipeline.storage.partitions import PartitionManager
from pipeline.storage.writer import BatchWriter

#: yesterday noon (UTC), so that drawn minutes cross hours, and a day only where they say so
BASE = datetime.combine(datetime.now(UTC).date() - timedelta(days=1), time(12), tzinfo=UTC)
TYPES = (
    "chat.message",
    "chat.message",
    "user.entered",
    "gift.sent",
    "moderation.warn",
    "room.settings_changed",
)
PROPERTY = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@dataclass(frozen=True)
class Event:
    event_id: str
    room: str
    cls: str
    etype: str
    actor: str | None
    name: str | None
    minutes_ago: int
    credits: int
    text: str
    #: PostgreSQL refuses the row (jsonb has no NUL character): the writer isolates it in a savepoint
    refused: bool = False

    def row(self, offset: int) -> tuple[Any, ...]:
        payload: dict[str, Any] = {}
        if self.actor is not None:
            payload["actor"] = {"user_id": self.actor, **({"display_name": self.name} if self.name else {})}
        if self.etype == "gift.sent":
            payload["credits"] = self.credits
        if self.refused:
            payload["note"] = "\x00"
        return (
            self.event_id,
            BASE - timedelta(minutes=self.minutes_ago),
            self.cls,
            self.room,
            self.etype,
            1,
            self.actor,
            None,
            self.text,
            orjson.dumps(payload),
            0,
            offset,
        )


@st.composite
def events(draw: st.DrawFn) -> Event:
    etype = draw(st.sampled_from(TYPES))
    return Event(
        str(uuid.uuid4()),
        draw(st.sampled_from(["room-a", "room-b"])),
        draw(st.sampled_from(["public"] * 5 + ["private"])),  # a room that changed class meanwhile
        etype,
        None if etype == "room.settings_changed" else draw(st.sampled_from(["u-1", "u-2"])),
        draw(st.sampled_from(["Ann", "Bo", None])),
        draw(st.sampled_from([0, 1, 59, 61, 119, 60 * 24 - 1, 60 * 24 + 1, 60 * 30])),  # hours and days apart
        draw(st.integers(0, 50)),
        "text",
    )


@dataclass(frozen=True)
class Deletion:
    #: room_logs | user_chat_erasure
    kind: str
    room: str
    user: str
    #: rows that happened at or before this many minutes ago are covered (part of an actor's day, or all)
    minutes_ago: int


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[list[list[Event]], int | None, Deletion | None]:
    """Batches of copies (originals, identical resends, copies with other text), any order and cuts; the
    batch whose transaction dies before its commit (it is delivered again); an authorized deletion."""
    originals = draw(st.lists(events(), min_size=1, max_size=16))
    refused = [replace(e, refused=True) for e in draw(st.lists(events(), max_size=2))]
    copies = originals + refused
    copies += draw(st.lists(st.sampled_from(originals), max_size=8))  # resends, replays
    copies += [
        replace(o, text="edited", refused=False)
        for o in draw(st.lists(st.sampled_from(originals), max_size=3))
    ]
    order = draw(st.permutations(copies))
    cuts = sorted(draw(st.sets(st.integers(1, max(1, len(order) - 1)), max_size=4)))
    batches = [order[a:b] for a, b in zip([0, *cuts], [*cuts, len(order)], strict=True) if a < b]
    crash = draw(st.none() | st.integers(0, len(batches) - 1))
    deletion = draw(
        st.none()
        | st.builds(
            Deletion,
            st.sampled_from(["room_logs", "user_chat_erasure"]),
            st.sampled_from(["room-a", "room-b"]),
            st.sampled_from(["u-1", "u-2"]),
            st.sampled_from([-5, 60, 60, 60 * 24]),  # -5: everything; otherwise what happened by then
        )
    )
    return batches, crash, deletion


@pytest.fixture
async def pool(postgres_dsn: str, pg_schema: str) -> AsyncIterator[asyncpg.Pool]:
    conn = await db.connect(postgres_dsn, pg_schema)
    await migrate.migrate(conn, pg_schema)
    await conn.close()
    p = await db.create_pool(postgres_dsn, pg_schema, 2)
    yield p
    await p.close()


class Crash(Exception):
    """The process died before its commit."""


def write_batch(events_: list[Event], topic: str, first: int) -> WriteBatch:
    """A WriteBatch as the ingest stage builds it: one row per event id, further copies as variants."""
    batch = WriteBatch(
        topic=topic, consumer_group="g", first_offsets={0: first}, next_offsets={0: first + len(events_)}
    )
    seen: set[str] = set()
    for i, e in enumerate(events_):
        row = e.row(first + i)
        (batch.variants if e.event_id in seen else batch.rows).append(row)
        seen.add(e.event_id)
        batch.event_days.add((e.cls, row[1].date()))
    return batch


async def delete(conn: asyncpg.Connection, d: Deletion) -> int:
    """An authorized deletion through the function that re-applies one read back from the deletions topic:
    it covers the rows that happened by `until`, so it may take part of an actor's day."""
    until = BASE - timedelta(minutes=d.minutes_ago)
    message = orjson.dumps(
        {
            "v": 1,
            "request_id": str(uuid.uuid4()),
            "requested_at": until.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "kind": d.kind,
            "room_id": d.room if d.kind == "room_logs" else None,
            "user_id": d.user if d.kind == "user_chat_erasure" else None,
            "requested_by": "staff-1",
            "identity_type": "staff",
            "basis": "staff",
            "reason": "case-1",
            "rows_deleted": 0,
            "held_rooms": [],
        }
    ).decode()
    seal = await conn.fetchval("SELECT deletion_seal($1)", message)
    row = await conn.fetchrow("SELECT * FROM reapply_deletion_request($1, $2)", message, seal)
    assert row["outcome"] == "reapplied"
    return int(row["deleted_now"])


@PROPERTY
@given(scenario=scenarios())
async def test_rollups_are_a_group_by_over_the_stored_rows(
    pool: asyncpg.Pool,
    scenario: tuple[list[list[Event]], int | None, Deletion | None],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    batches, crash, deletion = scenario
    topic = f"t-{uuid.uuid4().hex[:8]}"
    partitions = PartitionManager()
    async with pool.acquire() as conn:
        await partitions.load(conn)
    writer = BatchWriter(pool, partitions)
    dying: list[bool] = [False]

    async def advance_or_die(*args: Any, **kwargs: Any) -> None:
        await advance(*args, **kwargs)
        if dying[0]:
            raise Crash

    monkeypatch.setattr(offsets, "advance", advance_or_die)
    offset = 0
    for i, events_ in enumerate(batches):
        batch = write_batch(events_, topic, offset)
        if i == crash:
            dying[0] = True
            with pytest.raises(Crash):
                await writer.write(batch, BASE)
            dying[0] = False
            batch = write_batch(events_, topic, offset)  # delivered again after the restart
        await writer.write(batch, BASE)
        offset += len(events_)
    async with pool.acquire() as conn:
        await assert_rollups_match_rows(conn)
        if deletion is not None:
            await delete(conn, deletion)
            await assert_rollups_match_rows(conn)


async def test_a_deletion_of_part_of_an_actors_day_leaves_exactly_the_rest(pool: asyncpg.Pool) -> None:
    """The rows at 61 and 119 minutes ago go, those at 59 and 1 stay: the actor's day keeps 2 messages,
    its later hour only, and the display name of its last message (a partial deletion, re-read)."""
    partitions = PartitionManager()
    async with pool.acquire() as conn:
        await partitions.load(conn)
    stored = [
        Event(str(uuid.uuid4()), "room-a", "public", "chat.message", "u-1", name, minutes, 0, "t")
        for name, minutes in [("Ann", 119), ("Annie", 61), ("Ann B", 59), ("Ann C", 1)]
    ]
    batch = write_batch(stored, "t", 0)
    await BatchWriter(pool, partitions).write(batch, BASE)
    async with pool.acquire() as conn:
        erasures = (
            Deletion("user_chat_erasure", "room-a", "u-1", 60),
            Deletion("user_chat_erasure", "", "u-1", 30),
        )
        for d in erasures:
            before = await conn.fetchrow("SELECT events, hours, display_name FROM room_day_actors")
            await delete(conn, d)
            await assert_rollups_match_rows(conn)
        assert before is not None and before["display_name"] == "Ann C"
        left = await conn.fetchrow("SELECT events, display_name FROM room_day_actors")
        assert left is not None and (left["events"], left["display_name"]) == (1, "Ann C")


async def test_the_worker_role_writes_rollups_only_through_the_triggers(
    postgres_dsn: str, pg_schema: str
) -> None:
    admin = await db.connect(postgres_dsn, pg_schema)
    try:
        await migrate.migrate(admin, pg_schema)
        worker = await db.connect(await login_as(postgres_dsn, f"{pg_schema}_worker"), pg_schema)
        api = await db.connect(await login_as(postgres_dsn, f"{pg_schema}_api"), pg_schema)
        try:
            partitions = PartitionManager()
            await partitions.load(worker)
            event = Event(str(uuid.uuid4()), "room-a", "public", "gift.sent", "u-1", "Ann", 5, 7, "t")
            await partitions.ensure(worker, [("public", event.row(0)[1].date())])
            await worker.copy_records_to_table("events", records=[event.row(0)], columns=EVENT_COLUMNS)
            assert await api.fetchval("SELECT credits FROM room_hours") == 7
            assert await api.fetchval("SELECT display_name FROM room_day_actors") == "Ann"
            for sql in ("SELECT 1 FROM room_hours", "DELETE FROM room_day_actors", "TRUNCATE room_hours"):
                with pytest.raises(asyncpg.InsufficientPrivilegeError):
                    await worker.execute(sql)
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await api.execute("DELETE FROM room_hours")
        finally:
            await worker.close()
            await api.close()
        await assert_rollups_match_rows(admin)
    finally:
        await admin.close()


async def test_an_actors_last_name_and_event_are_the_last_by_time_within_one_statement(
    pool: asyncpg.Pool,
) -> None:
    """Several events of one actor-day stored by one statement, out of time order, one tie in time: the
    rollup keeps the name and id of the last by time, then by event id (what the console shows)."""
    ids = sorted(str(uuid.uuid4()) for _ in range(4))
    rows = [
        Event(ids[0], "room-a", "public", "chat.message", "u-1", "Ann", 30, 0, "t"),
        Event(ids[1], "room-a", "public", "chat.message", "u-1", "Bo", 10, 0, "t"),  # tied with ids[3]
        Event(ids[2], "room-a", "public", "chat.message", "u-1", "Cy", 20, 0, "t"),
        Event(ids[3], "room-a", "public", "chat.message", "u-1", "Di", 10, 0, "t"),  # the last: larger id
    ]
    async with pool.acquire() as conn:
        partitions = PartitionManager()
        await partitions.load(conn)
    await BatchWriter(pool, partitions).write(write_batch(rows, f"t-{uuid.uuid4().hex[:8]}", 0), BASE)
    async with pool.acquire() as conn:
        got = await conn.fetchrow(
            "SELECT events, last_event_id::text AS id, display_name FROM room_day_actors"
        )
        await assert_rollups_match_rows(conn)
    assert got is not None and (got["events"], got["id"], got["display_name"]) == (4, ids[3], "Di")


async def test_a_day_made_without_its_rollup_tables_gets_them_with_its_first_rows(
    postgres_dsn: str, pg_schema: str
) -> None:
    conn = await db.connect(postgres_dsn, pg_schema)
    try:
        await migrate.migrate(conn, pg_schema)
        await conn.execute("SELECT create_log_partition('events', 'public', NULL)")
        # a catch-all partition someone attached by hand: rows of any day land there
        await conn.execute("CREATE TABLE events_public_default PARTITION OF events_public DEFAULT")
        event = Event(
            str(uuid.uuid4()), "room-a", "public", "chat.message", "u-1", "Ann", 60 * 24 * 400, 0, "t"
        )
        await conn.copy_records_to_table("events", records=[event.row(0)], columns=EVENT_COLUMNS)
        day = event.row(0)[1].date()
        for table in ("room_hours", "room_day_actors"):
            assert await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", f"{table}_public_p{day:%Y%m%d}")
        await assert_rollups_match_rows(conn)
    finally:
        await conn.close()


async def test_the_migration_rolls_up_the_rows_stored_before_it(
    postgres_dsn: str, pg_schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    everything = migrate.available()
    [rollups] = [m for m in everything if m.name == "rollups"]
    before = [m for m in everything if m.version < rollups.version]  # later ones build on it
    conn = await db.connect(postgres_dsn, pg_schema)
    try:
        monkeypatch.setattr(migrate, "available", lambda: before)
        await migrate.migrate(conn, pg_schema)
        partitions = PartitionManager()
        await partitions.load(conn)
        stored = [
            Event(str(uuid.uuid4()), room, cls, etype, "u-1", name, minutes, 3, "t")
            for room, cls, etype, name, minutes in [
                ("room-a", "public", "chat.message", "Ann", 1),
                ("room-a", "public", "chat.message", "Annie", 0),
                ("room-a", "private", "gift.sent", None, 61),
                ("room-b", "public", "user.entered", "Bo", 60 * 25),
            ]
        ]
        rows = [e.row(i) for i, e in enumerate(stored)]
        await partitions.ensure(conn, {(r[2], r[1].date()) for r in rows})
        await conn.copy_records_to_table("events", records=rows, columns=EVENT_COLUMNS)
        notices: list[str] = []
        conn.add_log_listener(lambda _conn, message: notices.append(message.message))
        monkeypatch.setattr(migrate, "available", lambda: everything)
        assert (await migrate.migrate(conn, pg_schema))[0].name == "rollups"
        assert await conn.fetchval("SELECT sum(events) FROM room_hours") == len(stored)
        await assert_rollups_match_rows(conn)
        assert any("days of events rolled up" in n for n in notices)
    finally:
        await conn.close()
