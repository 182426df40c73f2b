"""The chat detectors' one read (pipeline/detectors/chat.py), against real PostgreSQL:
- the spam wave's text key is computed in Python for the batch and in SQL for the rows stored before it:
  the two agree on any text (case, whitespace, any script);
- flood and spam wave with different windows and thresholds per room (a room's override, one detector off
  in one room) still give, whatever the batching, exactly the alerts of evaluating every window over all
  the rows at once; also with bursts minutes apart arriving in any order, late rows reaching before what
  the workers' memory keeps."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import pytest
from detector_support import BASE, Event, write_batch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.detectors import Detectors
from pipeline.detectors import params as P
from pipeline.detectors.recent import INSTALL_STEP_ROWS, SAMPLE_MARGIN, SAMPLE_STEP, RecentChat, select
from pipeline.detectors.rules import Stored, alerts_of, normalized_text_sql, text_key, text_key_length
from pipeline.errors import StorageUnavailableError
from pipeline.storage import alerts, db, detector_settings, migrate, offsets
from pipeline.storage.partitions import PartitionManager
from pipeline.storage.writer import BatchWriter

PROPERTY = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
#: chat text as people type it: letters of several scripts, ASCII and other whitespace, emoji
#: a dotless i, a title-case letter and a ligature, among others: letters Unicode case-folds, ASCII does not
_OTHERS = ["\u0131", "\u01c5", "\ufb03", "\u0130", "\u1e9e"]
TEXTS = st.text(
    alphabet=st.sampled_from([*"aAzZ \t\n\x0b\x0c\r\x1c\xa0\u2003éÉßЖж😀.!", *_OTHERS]), max_size=40
)
#: per room: the class's thresholds (room-a) and a room override (room-b: longer windows, no flood)
CLASS_PARAMS = {
    P.CHAT_FLOOD: {"window_seconds": 4, "max_messages": 2},
    P.SPAM_WAVE: {"window_seconds": 12, "min_users": 2, "min_text_chars": 3},
}
ROOM_B_SPAM = {"window_seconds": 20, "min_users": 3, "min_text_chars": 0}


@given(text=st.text(max_size=200))
def test_the_fast_key_is_the_key(text: str) -> None:
    key, norm = text_key(text)
    assert text_key_length(text) == (key, len(norm))


@pytest.fixture
async def conn(postgres_dsn: str, pg_schema: str) -> AsyncIterator[asyncpg.Connection]:
    c = await db.connect(postgres_dsn, pg_schema)
    yield c
    await c.close()


@PROPERTY
@given(text=TEXTS | st.text(max_size=60).filter(lambda t: "\x00" not in t))
async def test_sql_and_python_key_texts_alike(conn: asyncpg.Connection, text: str) -> None:
    sql = normalized_text_sql.replace("e.body", "$1::text")
    got = await conn.fetchrow(f"SELECT md5({sql}) AS k, length({sql}) AS n", text)
    assert (got["k"], got["n"]) == text_key_length(text)


@pytest.fixture
async def pool(postgres_dsn: str, pg_schema: str) -> AsyncIterator[asyncpg.Pool]:
    c = await db.connect(postgres_dsn, pg_schema)
    await migrate.migrate(c, pg_schema)
    for name, params in CLASS_PARAMS.items():
        await detector_settings.set_override(
            c, "class", "public", name, enabled=True, params=params, changed_by="test", reason="small"
        )
    await c.close()
    p = await db.create_pool(postgres_dsn, pg_schema, 2)
    yield p
    await p.close()


def _params(name: str, room: str) -> P.Effective:
    params = {**P.builtin(name, "public"), **CLASS_PARAMS[name]}
    if room.endswith("-b") and name == P.SPAM_WAVE:
        params.update(ROOM_B_SPAM)
    return P.Effective(not (room.endswith("-b") and name == P.CHAT_FLOOD), params)


def _oracle(events: list[Event]) -> set[tuple[str, str, str, datetime]]:
    """The alert keys of every window over all of `events` (one copy each) at once, per room's params."""
    keys: set[tuple[str, str, str, datetime]] = set()
    for name in (P.CHAT_FLOOD, P.SPAM_WAVE):
        groups: dict[tuple[str, str], list[Stored]] = defaultdict(list)
        for e in {e.event_id: e for e in events}.values():
            if name == P.CHAT_FLOOD:
                subject, extra = e.actor or "", None
            else:
                subject, length = text_key_length(e.text or "")
                extra = str(length)
            groups[(e.room, subject)].append(
                Stored(e.room, e.cls, subject, e.at, uuid.UUID(e.event_id), e.actor, None, extra, None)
            )
        for (room, subject), rows in groups.items():
            eff = _params(name, room)
            if not eff.enabled:
                continue
            rows.sort(key=lambda s: (s.occurred_at, s.event_id))
            ids = {str(s.event_id) for s in rows}
            keys |= {a.key for a in alerts_of(name, room, subject, rows, eff, ids, {})}
    return keys


#: with `spread`: bursts minutes apart and one across the hour, arriving in any order (with a small memory:
#: late rows reach before what it keeps)
SPREAD_BURSTS = [0, 0, 150, 300, 3590]


@st.composite
def chat(draw: st.DrawFn, rooms: tuple[str, str], spread: bool = False) -> Event:
    room = draw(st.sampled_from(rooms))
    seconds = draw(st.integers(0, 40)) + draw(st.sampled_from([0.0, 0.25]))
    if spread:
        seconds += draw(st.sampled_from(SPREAD_BURSTS))
    actor = draw(st.sampled_from(["u-1", "u-2", "u-3", "u-4"]))
    text = draw(
        st.sampled_from(["Buy now", "buy  NOW", "hi", "HI", "Grüße an alle", "grüße an  alle", "ok ok"])
    )
    return Event(str(uuid.uuid4()), room, "chat.message", actor, seconds, text=text)


@st.composite
def batched(draw: st.DrawFn, spread: bool = False) -> tuple[list[Event], list[list[Event]]]:
    tag = uuid.uuid4().hex[:8]
    rooms = (f"r-{tag}-a", f"r-{tag}-b")
    originals = draw(st.lists(chat(rooms, spread), min_size=8, max_size=40 if not spread else 60))
    copies = originals + draw(st.lists(st.sampled_from(originals), max_size=6))
    order = draw(st.permutations(copies))
    cuts = sorted(draw(st.sets(st.integers(1, max(1, len(order) - 1)), max_size=6)))
    return originals, [order[a:b] for a, b in zip([0, *cuts], [*cuts, len(order)], strict=True) if a < b]


async def _stored_alerts(pool: asyncpg.Pool, events: list[Event]) -> set[tuple[str, str, str, datetime]]:
    """The keys of the alerts stored for the rooms of `events`."""
    async with pool.acquire() as c:
        stored: set[tuple[str, str, str, datetime]] = set()
        for room in {e.room for e in events}:
            stored |= await alerts.alert_keys(c, room)
    return stored


async def _override_room_b(pool: asyncpg.Pool, events: list[Event]) -> None:
    """Room b's own settings (ROOM_B_SPAM, no flood), as `_params` has them."""
    room_b = events[0].room.rsplit("-", 1)[0] + "-b"
    async with pool.acquire() as c:
        await detector_settings.set_override(
            c, "room", room_b, P.SPAM_WAVE, enabled=True, params=ROOM_B_SPAM, changed_by="t", reason="t"
        )
        await detector_settings.set_override(
            c, "room", room_b, P.CHAT_FLOOD, enabled=False, params={}, changed_by="t", reason="t"
        )


#: the workers' memory bound: the default, or so small that its floor moves every batch
MEMORY_ROWS = st.sampled_from([300_000, 12])


@PROPERTY
@given(scenario=st.booleans().flatmap(batched), memory=MEMORY_ROWS)
async def test_per_room_windows_give_the_alerts_of_all_rows_at_once(
    pool: asyncpg.Pool, scenario: tuple[list[Event], list[list[Event]]], memory: int
) -> None:
    originals, batches = scenario
    await _override_room_b(pool, originals)
    partitions = PartitionManager()
    async with pool.acquire() as c:
        await partitions.load(c)
    only = (P.CHAT_FLOOD, P.SPAM_WAVE)
    writer = BatchWriter(pool, partitions, detectors=Detectors(only=only, memory_rows=memory))
    topic, offset = f"t-{uuid.uuid4().hex[:8]}", 0
    for batch_events in batches:
        await writer.write(write_batch(batch_events, topic, offset), originals[0].at)
        offset += len(batch_events)
    assert await _stored_alerts(pool, originals) == _oracle(originals)


_WAITING_FOR_DETECTION = """
SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND wait_event = 'advisory'"""


async def test_two_writers_of_one_room_at_once_miss_no_window(
    pool: asyncpg.Pool, postgres_dsn: str, pg_schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two transactions store rows of one spam wave at the same time (two workers; a producer that spreads
    a room over partitions), in two UTC hours, so no rollup row makes one wait for the other: the second
    to detect waits for the first's commit and raises the wave."""
    room = f"r-{uuid.uuid4().hex[:8]}-a"
    # 12:59:58 and 13:00:01 UTC, one wave (two users, the same text, 3 s apart)
    first = Event(str(uuid.uuid4()), room, "chat.message", "u-1", 3598.0, text="Buy now")
    second = Event(str(uuid.uuid4()), room, "chat.message", "u-2", 3601.0, text="buy  NOW")
    partitions = PartitionManager()
    async with pool.acquire() as c:
        await partitions.load(c)
    writers = [BatchWriter(pool, partitions, detectors=Detectors()) for _ in range(2)]
    in_commit, release = asyncio.Event(), asyncio.Event()
    real_advance = offsets.advance

    async def advance(conn: asyncpg.Connection, group: str, topic: str, *args: Any, **kwargs: Any) -> None:
        await real_advance(conn, group, topic, *args, **kwargs)
        if topic.endswith("-held"):  # the first writer: detected, not yet committed
            in_commit.set()
            await release.wait()

    monkeypatch.setattr(offsets, "advance", advance)
    tag = uuid.uuid4().hex[:8]
    held = asyncio.create_task(writers[0].write(write_batch([first], f"t-{tag}-held", 0), first.at))
    await asyncio.wait_for(in_commit.wait(), 30)
    other = asyncio.create_task(
        writers[1].write(write_batch([second], f"t-{tag}", 0, partition=1), second.at)
    )
    # the second writer stores its row, then waits for the first's commit before it reads (or, were it
    # not to wait, finishes without the first's row); the pool's two connections are the writers'
    watch = await db.connect(postgres_dsn, pg_schema)
    try:
        for _ in range(600):  # 30 s at most
            if await watch.fetchval(_WAITING_FOR_DETECTION) or other.done():
                break
            await asyncio.sleep(0.05)
    finally:
        await watch.close()
    release.set()
    await asyncio.gather(held, other)
    async with pool.acquire() as c:
        stored = await alerts.alert_keys(c, room)
    assert stored == _oracle([first, second])
    assert {k[1] for k in stored} == {P.SPAM_WAVE}


@PROPERTY
@given(
    scenario=st.booleans().flatmap(batched),
    who=st.lists(st.integers(0, 2), min_size=40, max_size=40),
    memory=MEMORY_ROWS,
)
async def test_workers_taking_turns_and_restarting_give_the_alerts_of_all_rows_at_once(
    pool: asyncpg.Pool, scenario: tuple[list[Event], list[list[Event]]], who: list[int], memory: int
) -> None:
    """Each worker remembers recent room-hours (pipeline/detectors/recent.py) and trusts them only when
    the rollups prove them complete: batches of the same rooms written by two workers in turn, and by a
    worker started afresh (remembering nothing, the rooms' hours already holding rows), still give
    exactly the alerts of every window over all the rows at once."""
    originals, batches = scenario
    await _override_room_b(pool, originals)
    partitions = PartitionManager()
    async with pool.acquire() as c:
        await partitions.load(c)
    only = (P.CHAT_FLOOD, P.SPAM_WAVE)
    writers = [
        BatchWriter(pool, partitions, detectors=Detectors(only=only, memory_rows=memory)) for _ in range(2)
    ]
    topic, offset = f"t-{uuid.uuid4().hex[:8]}", 0
    for i, batch_events in enumerate(batches):
        if who[i] == 2:  # a restart: the first worker's memory is gone
            writers[0] = BatchWriter(pool, partitions, detectors=Detectors(only=only, memory_rows=memory))
        writer = writers[who[i] % 2]
        await writer.write(write_batch(batch_events, topic, offset), originals[0].at)
        offset += len(batch_events)
    assert await _stored_alerts(pool, originals) == _oracle(originals)


async def test_what_the_worker_remembers_and_when_it_reads_instead(
    pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What roomlogs_detector_rooms_total{how} and roomlogs_detector_memory_rows show an operator: a new
    hour is bounded from memory; a worker that did not write all of an hour reads it, then remembers it
    (filled from storage) and reads no more; the first worker, now behind, reads again; and a write that
    fails (the database may not be the one remembered: restored, failed over) makes it forget all."""
    room = f"r-{uuid.uuid4().hex[:8]}-a"
    users = [f"u-{i}" for i in range(8)]

    def chat(n: int, at: float) -> list[Event]:  # n quiet messages: 8 users, all different texts
        return [
            Event(str(uuid.uuid4()), room, "chat.message", users[i % 8], at + i * 0.5, text=f"line {at} {i}")
            for i in range(n)
        ]

    partitions = PartitionManager()
    async with pool.acquire() as c:
        await partitions.load(c)
    memory = {"first": Detectors(), "second": Detectors()}
    first, second = (BatchWriter(pool, partitions, detectors=memory[name]) for name in ("first", "second"))
    topic = f"t-{uuid.uuid4().hex[:8]}"
    steps = [
        (first, "first", chat(5, 60), 0),
        (second, "second", chat(4, 70), 5),
        (second, "second", chat(3, 80), 9),
        (first, "first", chat(2, 90), 12),
    ]
    seen = []
    held = {"first": 0, "second": 0}
    for writer, name, events, offset in steps:
        outcome = await writer.write(write_batch(events, topic, offset), events[0].at)
        assert outcome.alerts == []
        # the gauge shows what the memory held when the batch was evaluated; its own rows are added
        # after the commit, while the next batch is written (awaited here to see them)
        assert outcome.detect_memory_rows == held[name]
        await memory[name].caught_up()
        held[name] = memory[name].recent.rows  # type: ignore[union-attr]
        seen.append((outcome.detect_rooms, held[name]))
    assert seen == [
        ({"memory": 1, "storage": 0}, 5),  # a new hour: nothing earlier, nothing to read
        ({"memory": 0, "storage": 1}, 9),  # rows this worker never saw: read, then filled (5 + its 4)
        ({"memory": 1, "storage": 0}, 12),  # proven complete: nothing read
        ({"memory": 0, "storage": 1}, 14),  # the first worker is behind by 7 rows: read and filled again
    ]
    real_advance = offsets.advance

    async def fail(*args: Any, **kwargs: Any) -> None:
        raise ConnectionResetError("the database went away mid-commit")

    monkeypatch.setattr(offsets, "advance", fail)
    with pytest.raises(StorageUnavailableError):
        await first.write(write_batch(chat(1, 100), topic, 14), events[0].at)
    monkeypatch.setattr(offsets, "advance", real_advance)
    assert memory["first"].recent.rows == 0  # type: ignore[union-attr]
    again = chat(1, 110)
    outcome = await first.write(write_batch(again, topic, 14), again[0].at)
    await memory["first"].caught_up()
    # forgot everything: the hour is read and filled again (14 rows before, this batch's 1)
    assert (outcome.detect_rooms, outcome.detect_memory_rows) == ({"memory": 0, "storage": 1}, 0)
    assert memory["first"].recent.rows == 15  # type: ignore[union-attr]


def test_the_memory_stays_within_its_rows() -> None:
    """ROOMLOGS_DETECTOR_MEMORY_ROWS bounds what a worker remembers: past it, the oldest times go (an hour
    wholly before them with them) and a dropped hour is never trusted again until filled: its room is read
    from storage."""
    recent = RecentChat(max_rows=10)
    hour = BASE.replace(minute=0, second=0, microsecond=0)
    recent.begin(0)
    for room, hours_back in (("old", 1), ("a", 0), ("b", 0)):
        key = (room, hour - timedelta(hours=hours_back))
        assert recent.check(key, stored=6, batch=6) is not None  # a new hour: trusted empty
        for i in range(6):
            recent.stage_row(room, key[1], key[1] + timedelta(seconds=i), f"u-{i}", f"k-{i}")
    recent.settle(True)
    assert recent.rows <= 10
    assert ("old", hour - timedelta(hours=1)) not in recent.hours  # the oldest hour went first
    recent.begin(0)
    kept = [room for room in ("a", "b") if (room, hour) in recent.hours]
    dropped = [room for room in ("a", "b", "old") if room not in kept]
    for room in kept:
        assert recent.check((room, hour), stored=7, batch=1) is not None
    for room in dropped:
        h = hour - timedelta(hours=1) if room == "old" else hour
        assert recent.check((room, h), stored=7, batch=1) is None


def test_past_its_bound_the_memory_lets_the_oldest_times_go_and_reads_before_them() -> None:
    """An hour of a busy server is more than a worker can remember: past ROOMLOGS_DETECTOR_MEMORY_ROWS the
    oldest times go (the floor moves until a quarter of the bound is free), each hour keeping its count,
    which still proves it complete; a range reaching before the floor is not bounded from memory (its room
    is read), and an hour wholly before it is forgotten and not filled again."""
    recent = RecentChat(max_rows=200)
    hour = BASE.replace(minute=0, second=0, microsecond=0)
    key, before = ("r", hour), ("r", hour - timedelta(hours=1))
    recent.begin(0)
    assert recent.check(before, stored=3, batch=3) is not None
    for i in range(3):
        recent.stage_row("r", before[1], before[1] + timedelta(minutes=50, seconds=i), "u-0", "k-0")
    assert recent.check(key, stored=600, batch=600) is not None
    for i in range(600):  # a row a second for ten minutes: 12:00:00 .. 12:09:59
        recent.stage_row("r", hour, hour + timedelta(seconds=i), f"u-{i % 7}", f"k-{i % 5}")
    recent.settle(True)
    floor = hour + timedelta(seconds=450)  # the 150th newest time: 200 x TRIM_TO_SHARE
    entry = recent.hours[key]
    assert before not in recent.hours  # wholly before the floor
    assert (recent.floor, entry.rows, entry.floor, entry.kept, recent.rows) == (floor, 600, floor, 150, 150)
    assert entry.covers(floor) and not entry.covers(floor - timedelta(microseconds=1))
    end = hour + timedelta(hours=1)
    assert entry.actor_rows("u-0", floor, end) == sum(1 for i in range(450, 600) if i % 7 == 0)
    assert entry.key_rows("k-3", floor, end) == sum(1 for i in range(450, 600) if i % 5 == 3)
    recent.begin(0)  # the next batch: the count still proves the hour complete
    assert recent.check(key, stored=601, batch=1) is entry
    assert not recent.wants_fill(before)  # an hour wholly before the floor is not worth filling
    assert recent.fill_floor() == floor  # an hour filled is read from the floor on


@pytest.mark.parametrize(
    "shape", ["random", "sorted runs", "descending", "few distinct", "one value", "sample misses the least"]
)
def test_the_floor_is_chosen_as_sorting_every_time_held_would_choose_it(shape: str) -> None:
    """Moving the floor picks the target-th newest time held without sorting them all (`select`): the
    time, and how many are older, are exactly what a full sort gives, for every position and for the
    shapes a memory holds (chatters' sorted lists one after another, repeated instants); where its sample
    brackets the wrong values it falls back to the full sort rather than answer wrong."""
    rng = random.Random(shape)
    n = 8 * SAMPLE_STEP * SAMPLE_MARGIN + 5_001  # past the size where the sample is used
    if shape == "random":
        seconds = [rng.random() * 3600 for _ in range(n)]
    elif shape == "sorted runs":
        seconds = [s for _ in range(n // 7) for s in sorted(rng.random() * 3600 for _ in range(7))]
    elif shape == "descending":
        seconds = sorted((rng.random() * 3600 for _ in range(n)), reverse=True)
    elif shape == "few distinct":
        seconds = [float(rng.randrange(5)) for _ in range(n)]
    elif shape == "one value":
        seconds = [7.0] * n
    else:  # every sampled position holds the newest time: the bracket lies above the small k's
        seconds = [3600.0 if i % SAMPLE_STEP == 0 else rng.random() * 3000 for i in range(n)]
    times = [BASE + timedelta(seconds=s) for s in seconds]
    ordered = sorted(times)
    for k in [0, 1, 17, len(times) // 4, len(times) // 2, len(times) - 300, len(times) - 1]:
        assert select(times, k) == (ordered[k], ordered.index(ordered[k])), k


def test_rows_of_one_instant_beyond_the_bound_go_too() -> None:
    """A producer stamping whole seconds puts many rows at one time: past the bound, they all go."""
    recent = RecentChat(max_rows=10)
    hour = BASE.replace(minute=0, second=0, microsecond=0)
    recent.begin(0)
    assert recent.check(("r", hour), stored=30, batch=30) is not None
    for i in range(30):
        recent.stage_row("r", hour, hour + timedelta(seconds=5), f"u-{i}", f"k-{i}")
    recent.settle(True)
    assert recent.rows == 0 and recent.hours[("r", hour)].rows == 30


async def test_a_late_row_past_what_the_memory_kept_is_read_and_raises_its_alert(pool: asyncpg.Pool) -> None:
    """A worker whose memory let the oldest times go (past its bound) still raises the alert a late row
    completes: the room's range reaches before the floor, so it is read from storage, not bounded from
    what is left (which would count none of the earlier messages)."""
    room = f"r-{uuid.uuid4().hex[:8]}-a"
    partitions = PartitionManager()
    async with pool.acquire() as c:
        await partitions.load(c)
    writer = BatchWriter(pool, partitions, detectors=Detectors(only=(P.CHAT_FLOOD,), memory_rows=12))
    topic = f"t-{uuid.uuid4().hex[:8]}"

    def says(actor: str, seconds: float) -> Event:
        return Event(str(uuid.uuid4()), room, "chat.message", actor, seconds, text=f"{actor} at {seconds}")

    early = [says("u-1", 0), says("u-1", 1)]  # two messages in 4 s: one short of a flood (CLASS_PARAMS)
    later = [says(f"u-{i + 2}", 300 + i) for i in range(20)]  # 20 rows: the floor moves past t=1
    late = [says("u-1", 2)]  # the third message of u-1 within 4 s, arriving last
    seen = []
    for events, offset in ((early, 0), (later, 2), (late, 22)):
        outcome = await writer.write(write_batch(events, topic, offset), events[0].at)
        seen.append((outcome.detect_rooms, outcome.alerts))
    assert seen[1] == ({"memory": 1, "storage": 0}, [])  # bounded from memory, nothing read
    assert seen[2] == ({"memory": 0, "storage": 1}, [P.CHAT_FLOOD])  # before the floor: read, and raised
    assert await _stored_alerts(pool, early + later + late) == _oracle(early + later + late)


def test_an_old_hour_arriving_late_is_bounded_too() -> None:
    """After the floor moved, an hour made later from older rows (a backfill: trusted empty, so holding
    all its times) still counts against the bound: past it, its times go as well."""
    recent = RecentChat(max_rows=10)
    hour = BASE.replace(minute=0, second=0, microsecond=0)
    for start, n in ((hour, 20), (hour - timedelta(hours=1), 20)):
        recent.begin(0)
        assert recent.check(("r", start), stored=n, batch=n) is not None
        for i in range(n):
            recent.stage_row("r", start, start + timedelta(minutes=30, seconds=i), f"u-{i}", f"k-{i}")
        recent.settle(True)
        assert recent.rows <= 10


async def test_a_commit_is_remembered_after_the_commit_and_a_failure_stops_it() -> None:
    """A committed batch's rows are added to the memory by a task that pauses every few thousand rows (so
    the next batch's statements run meanwhile); `caught_up` waits for all of them. A write that fails
    while they are being added stops the task and forgets everything: no row of it is added afterwards."""
    rows = 3 * INSTALL_STEP_ROWS + 1
    hour = BASE.replace(minute=0, second=0, microsecond=0)

    def staged(detectors: Detectors) -> RecentChat:
        recent = detectors.recent
        assert recent is not None
        recent.begin(0)
        assert recent.check(("r", hour), stored=rows, batch=rows) is not None
        for i in range(rows):
            recent.stage_row("r", hour, hour + timedelta(microseconds=i), f"u-{i % 50}", f"k-{i % 9}")
        return recent

    done = Detectors(memory_rows=10 * rows)
    recent = staged(done)
    done.settle(True)
    await done.caught_up()
    assert recent.rows == rows and recent.hours[("r", hour)].kept == rows

    failed = Detectors(memory_rows=10 * rows)
    recent = staged(failed)
    failed.settle(True)
    await asyncio.sleep(0)
    await asyncio.sleep(0)  # the task has added some of the rows and paused
    assert 0 < recent.rows < rows
    failed.settle(False)
    for _ in range(10):
        await asyncio.sleep(0)
    await failed.caught_up()
    assert (recent.rows, recent.hours, recent.newest_at) == (0, {}, None)


async def test_a_batch_is_evaluated_under_the_parameters_in_force_when_it_is_stored(
    pool: asyncpg.Pool,
) -> None:
    """The detectors' Python part of a batch starts before its statements run, with the parameters cached
    then; when the refresh inside the transaction finds them changed (an operator just enabled a detector
    for a room), the batch is evaluated under the new ones, not the cached."""
    room = f"r-{uuid.uuid4().hex[:8]}-a"
    async with pool.acquire() as c:
        await detector_settings.set_override(
            c, "room", room, P.CHAT_FLOOD, enabled=False, params={}, changed_by="t", reason="off"
        )
    partitions = PartitionManager()
    async with pool.acquire() as c:
        await partitions.load(c)
    detectors = Detectors(only=(P.CHAT_FLOOD,), settings_ttl_seconds=0)
    writer = BatchWriter(pool, partitions, detectors=detectors)
    topic = f"t-{uuid.uuid4().hex[:8]}"
    quiet = [Event(str(uuid.uuid4()), room, "chat.message", "u-0", 0, text="hello")]
    await writer.write(write_batch(quiet, topic, 0), quiet[0].at)  # the room's flood detector: off
    async with pool.acquire() as c:
        await detector_settings.set_override(
            c, "room", room, P.CHAT_FLOOD, enabled=True, params={}, changed_by="t", reason="on again"
        )
    burst = [
        Event(str(uuid.uuid4()), room, "chat.message", "u-1", 60 + i * 0.2, text=f"x{i}") for i in range(3)
    ]
    outcome = await writer.write(write_batch(burst, topic, 1), burst[0].at)
    assert outcome.alerts == [P.CHAT_FLOOD]
