"""Room state is a function of the room's events and their event times, not of their arrival order.

Property (hypothesis, against the real PostgreSQL): take a room's permission and settings events, deliver
them in any order, any number of times, cut into batches anywhere, as Kafka may (producer retries, a room
server resending after a restart, a consumer replay, a late event from another producer): the owner, the
moderators (what the API reads to grant access) and the retention class come out exactly as applying each
event once, in event-time order, does.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from pipeline.ingest.rooms import RoomDirectory
from pipeline.retention_rules import ClassRule
from pipeline.storage import db
from pipeline.storage.batch import RoomChange
from pipeline.storage.migrate import migrate
from pipeline.storage.rooms import apply_room_changes

T0 = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
USERS = ("u-ana", "u-bo", "u-cy")
RULE = ClassRule(default_class="public", busy_min_occupancy=50)
PROPERTY = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@dataclass(frozen=True)
class Event:
    kind: str  # owner_transferred | moderator_added | moderator_removed | settings
    user: str | None
    seconds: int  # event time, seconds after T0 (collisions on purpose)
    event_id: str
    privacy: str | None = None
    max_occupancy: int | None = None

    @property
    def occurred_at(self) -> datetime:
        return T0 + timedelta(seconds=self.seconds)

    def change(self, room: str, offset: int) -> RoomChange:
        return RoomChange(
            0,
            offset,
            room,
            self.kind,
            self.occurred_at,
            self.event_id,
            "public",
            privacy=self.privacy,
            max_occupancy=self.max_occupancy,
            user_id=self.user,
        )


def event_ids() -> st.SearchStrategy[str]:
    return st.uuids().map(str)


permission = st.builds(
    Event,
    kind=st.sampled_from(["owner_transferred", "moderator_added", "moderator_removed"]),
    user=st.sampled_from(USERS),
    seconds=st.integers(0, 6),
    event_id=event_ids(),
)
setting = st.builds(
    Event,
    kind=st.just("settings"),
    user=st.none(),
    seconds=st.integers(0, 6),
    event_id=event_ids(),
    privacy=st.sampled_from([None, "public", "private"]),
    max_occupancy=st.sampled_from([None, 10, 500]),
).filter(lambda e: e.privacy is not None or e.max_occupancy is not None)


@st.composite
def deliveries(draw: st.DrawFn) -> tuple[list[Event], list[list[Event]]]:
    """A room's events, and how Kafka delivered them: any order, some more than once, cut into batches."""
    events = draw(st.lists(permission | setting, min_size=1, max_size=12, unique_by=lambda e: e.event_id))
    arrivals = draw(st.permutations(events))
    extra = draw(st.lists(st.sampled_from(events), max_size=8))  # resends and replays
    for e in extra:
        arrivals.insert(draw(st.integers(0, len(arrivals))), e)
    cuts = sorted(draw(st.sets(st.integers(1, max(1, len(arrivals) - 1)), max_size=4)))
    batches = [arrivals[a:b] for a, b in zip([0, *cuts], [*cuts, len(arrivals)], strict=True) if a < b]
    return events, batches


def in_event_time_order(events: list[Event]) -> tuple[str | None, set[str], str]:
    """The reference: every event once, in event-time order (a removal before a grant at the same time,
    then event id), applied one after the other."""
    rank = {"moderator_removed": 1}
    owner: str | None = None
    moderators: set[str] = set()
    privacy: str | None = None
    size: int | None = None
    for e in sorted(events, key=lambda e: (e.seconds, rank.get(e.kind, 0), e.event_id)):
        if e.kind == "owner_transferred":
            owner = e.user
        elif e.kind == "moderator_added":
            moderators.add(e.user or "")
        elif e.kind == "moderator_removed":
            moderators.discard(e.user or "")
        else:
            privacy = e.privacy if e.privacy is not None else privacy
            size = e.max_occupancy if e.max_occupancy is not None else size
    return owner, moderators, RULE(privacy, size)


@pytest.fixture
async def conn(postgres_dsn: str, pg_schema: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await db.connect(postgres_dsn, pg_schema)
    await migrate(connection, pg_schema)
    yield connection
    await connection.close()


async def state_of(conn: asyncpg.Connection, room: str) -> tuple[str | None, set[str], str]:
    owner, cls = await conn.fetchrow("SELECT owner_id, retention_class FROM rooms WHERE room_id = $1", room)
    mods = {
        r["user_id"] for r in await conn.fetch("SELECT user_id FROM room_moderators WHERE room_id = $1", room)
    }
    return owner, mods, cls


LATE_GRANT = [
    Event("moderator_added", "u-ana", 1, "00000000-0000-4000-8000-000000000001"),
    Event("moderator_removed", "u-ana", 2, "00000000-0000-4000-8000-000000000002"),
]
SAME_INSTANT = [
    Event("moderator_removed", "u-bo", 3, "00000000-0000-4000-8000-000000000001"),
    Event("moderator_added", "u-bo", 3, "ffffffff-0000-4000-8000-000000000002"),
]
OLD_OWNER_LATE = [
    Event("owner_transferred", "u-cy", 5, "00000000-0000-4000-8000-000000000001"),
    Event("owner_transferred", "u-ana", 2, "00000000-0000-4000-8000-000000000002"),
    Event("settings", None, 4, "00000000-0000-4000-8000-000000000003", privacy="private"),
    Event("settings", None, 1, "00000000-0000-4000-8000-000000000004", privacy="public", max_occupancy=500),
]


@PROPERTY
@given(case=deliveries())
# a grant dated before a removal, arriving after it (a late event) and again (a replay)
@example(case=(LATE_GRANT, [[LATE_GRANT[1]], [LATE_GRANT[0]], [LATE_GRANT[0], LATE_GRANT[1]]]))
# a grant and a removal at the same instant: the removal wins, whatever the ids or the order
@example(case=(SAME_INSTANT, [[SAME_INSTANT[0]], [SAME_INSTANT[1]]]))
# an older owner and older settings arriving after newer ones, in the same batch
@example(case=(OLD_OWNER_LATE, [OLD_OWNER_LATE]))
async def test_room_state_is_the_event_time_result_whatever_the_delivery(
    conn: asyncpg.Connection, case: tuple[list[Event], list[list[Event]]]
) -> None:
    events, batches = case
    room = f"room-{uuid.uuid4().hex[:10]}"
    cache = RoomDirectory(default_class="public", busy_min_occupancy=50)  # the worker's in-memory copy
    offset = 0
    for batch in batches:
        if cache.unknown({room}):
            await cache.load(conn, {room})
        changes = []
        for e in batch:
            changes.append(e.change(room, offset))
            offset += 1
            if e.kind == "settings":
                cache.apply_settings(room, e.privacy, e.max_occupancy, (e.occurred_at, e.event_id))
        async with conn.transaction():  # one transaction per batch, as the writer does
            await apply_room_changes(conn, changes, RULE)
    expected = in_event_time_order(events)
    assert await state_of(conn, room) == expected
    assert cache.class_of(room) == expected[2]
    fresh = RoomDirectory(default_class="public", busy_min_occupancy=50)  # a restarted worker's copy
    await fresh.load(conn, {room})
    assert fresh.class_of(room) == expected[2]
