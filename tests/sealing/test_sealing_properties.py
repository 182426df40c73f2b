"""Sealing stays exact whatever happens around it (hypothesis, against the real PostgreSQL).

A history is a random sequence of what a deployment does over a week: events stored into the open days,
the clock moving on with a maintenance run (sealing and retention, in either order; short retention, so
days are dropped), audited deletions of a room's logs, legal holds placed and released. After every step
`verify --db` finds no problem: each
sealed row is stored as sealed, or accounted for by a deletion request, a retention drop or a hold; no
closed day with rows lacks a seal; the chains and heads hold. Each example runs in a fresh schema (a day's
head spans every room of the day, so histories must not share days).
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from test_seals import rows, store

from pipeline.evidence.keys import SealKey
from pipeline.retention import maintain
from pipeline.retention.holds import place_hold, release_hold
from pipeline.retention_rules import closed_before
from pipeline.sealing.run import seal_closed_days
from pipeline.sealing.verify import verify_db
from pipeline.settings import Secret, Settings
from pipeline.storage import db
from pipeline.storage.migrate import migrate

#: the rooms of a history and their retention classes
ROOMS = {"r0": "public", "r1": "private", "r2": "public"}
LATE_WINDOW_SECONDS = 3600
#: where every history starts: eight days ago at 20:00 UTC (it may move up to about six days on; the
#: sealing run never seals past the real clock)
START = datetime.combine(datetime.now(UTC).date() - timedelta(days=8), datetime.min.time(), tzinfo=UTC) + (
    timedelta(hours=20)
)

room = st.sampled_from(sorted(ROOMS))
ingest = st.tuples(st.just("ingest"), room, st.integers(1, 6), st.sampled_from([0, 1]))
#: the clock moves on and maintenance runs: sealing and retention, in either order
advance = st.tuples(st.just("advance"), st.integers(6, 48), st.booleans())
step = st.one_of(
    ingest,
    advance,
    ingest,
    advance,
    st.tuples(st.just("delete"), room),
    st.tuples(st.just("hold"), room),
    st.tuples(st.just("release"), room),
)


@dataclass
class History:
    conn: asyncpg.Connection
    settings: Settings
    key: SealKey
    now: datetime = START
    holds: dict[str, int] = field(default_factory=dict)
    offset: int = 0
    #: the clock of the last sealing run: days closed by then must have their seal
    sealed_as_of: datetime | None = None

    async def do(self, what: tuple[object, ...]) -> None:
        kind = what[0]
        if kind == "ingest":
            _, name, n, days_back = what
            assert isinstance(name, str) and isinstance(n, int) and isinstance(days_back, int)
            day = self.now.date() - timedelta(days=days_back)
            if day < closed_before(self.now, LATE_WINDOW_SECONDS):
                return  # stored around the writer: only into open days (a sealed day refuses new rows)
            await store(self.conn, rows(ROOMS[name], day, name, n, start=self.offset % 1000))
            self.offset += n
        elif kind == "advance":
            _, hours, seal_first = what
            assert isinstance(hours, int)
            self.now = min(self.now + timedelta(hours=hours), datetime.now(UTC))
            for run in ("seal", "retention") if seal_first else ("retention", "seal"):
                await self.do((run,))
        elif kind == "seal":
            await seal_closed_days(self.conn, self.settings, self.key, now=self.now)
            self.sealed_as_of = self.now
        elif kind == "delete":
            name = what[1]
            if name in self.holds:
                return  # a held room's logs are kept: the deletion functions refuse
            async with self.conn.transaction():
                await self.conn.execute("SELECT set_config('roomlogs.authorized_deletion', 'on', true)")
                gone = await self.conn.execute("DELETE FROM events WHERE room_id = $1", name)
                await self.conn.execute(
                    """INSERT INTO deletion_requests (request_id, kind, room_id, requested_by, identity_type,
                                                      basis, reason, rows_deleted)
                       VALUES ($1, 'room_logs', $2, 'owner', 'user', 'owner', 'property test', $3)""",
                    uuid.uuid4(),
                    name,
                    int(gone.split()[-1]),
                )
        elif kind == "retention":
            await maintain(self.conn, self.settings, now=self.now)
        elif kind == "hold":
            name = what[1]
            if name not in self.holds:
                hold = await place_hold(
                    self.conn, str(name), reason="dispute", requested_by="support", now=self.now
                )
                self.holds[str(name)] = hold.hold_id
        elif kind == "release":
            name = what[1]
            if name in self.holds:
                await release_hold(self.conn, self.holds.pop(str(name)), released_by="support", now=self.now)

    async def problems(self) -> list[str]:
        result = await verify_db(self.conn, now=self.now, late_window_seconds=LATE_WINDOW_SECONDS)
        for kind in {f.kind for f in result.findings or [] if not f.problem}:
            event(f"sealed rows {kind}")  # what the histories reach (--hypothesis-show-statistics)
        # a day that closed after the last sealing run waits for the next one (an alert, not a fault)
        sealed_before = closed_before(self.sealed_as_of, LATE_WINDOW_SECONDS) if self.sealed_as_of else None
        return [
            f"{f.kind} {f.room_id} {f.day} {f.detail}"
            for f in result.findings or []
            if f.problem
            and not (
                f.kind == "seal_missing" and (sealed_before is None or (f.day and f.day >= sealed_before))
            )
        ]


def _waits(day: date | None, sealed_before: date | None) -> bool:
    return sealed_before is None or day is None or day >= sealed_before


@pytest.fixture
async def server_dsn(postgres_dsn: str) -> str:
    return postgres_dsn


async def fresh_schema(dsn: str) -> tuple[asyncpg.Connection, str]:
    name = f"t_{uuid.uuid4().hex[:12]}"
    conn = await db.connect(dsn, name)
    await migrate(conn, name)
    # short retention, so that a week's history drops days (busy_public is not used)
    await conn.execute("UPDATE retention_classes SET retention_days = 2 WHERE name = 'public'")
    await conn.execute("UPDATE retention_classes SET retention_days = 4 WHERE name = 'private'")
    return conn, name


async def drop_schema(dsn: str, name: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
        for role in (f"{name}_api", f"{name}_worker"):
            if await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", role):
                await conn.execute(f'DROP OWNED BY "{role}"')
                await conn.execute(f'DROP ROLE "{role}"')
    finally:
        await conn.close()


#: 20 in the suite (about 25-40 s); ROOMLOGS_TEST_SEALING_EXAMPLES=120 runs clean in 5 minutes
EXAMPLES = int(os.environ.get("ROOMLOGS_TEST_SEALING_EXAMPLES", "20"))


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(history=st.lists(step, min_size=10, max_size=40))
# every path at least once: sealed rows deleted by request, dropped by retention, kept by a hold and then
# dropped once it is released, and a day that closes between a deletion and its sealing
@example(
    history=[
        ("ingest", "r0", 5, 0), ("ingest", "r1", 4, 0), ("ingest", "r2", 3, 0), ("advance", 30, True),
        ("hold", "r1"), ("delete", "r0"), ("ingest", "r2", 2, 0), ("advance", 40, False), ("delete", "r2"),
        ("advance", 40, True), ("advance", 40, False), ("release", "r1"), ("advance", 40, True),
        ("advance", 40, False), ("advance", 40, True),
    ]
)  # fmt: skip
async def test_every_history_verifies_clean(
    history: list[tuple[object, ...]], server_dsn: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    key = SealKey.generate(Path(tmp_path_factory.mktemp("key")) / "seal.pem")
    conn, name = await fresh_schema(server_dsn)
    try:
        h = History(conn, Settings(postgres_dsn=Secret(server_dsn), postgres_schema=name), key)
        done: list[tuple[object, ...]] = []
        for what in [*history, ("advance", 30, True)]:
            await h.do(what)
            done.append(what)
            found = await h.problems()
            assert not found, f"after {done} at {h.now:%Y-%m-%d %H:%M}: {found}"
        # the history ends with every closed day sealed, or nothing of it is left to seal
        assert not await h.problems()
    finally:
        await conn.close()
        await drop_schema(server_dsn, name)
