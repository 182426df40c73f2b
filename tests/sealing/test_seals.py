"""Sealed room-days against a real PostgreSQL: a clean database verifies; every kind of tampering a superuser
with the guard triggers off can do is named precisely by `verify --db`; retention, audited deletions and
legal holds are accounted for, not reported; exports verify offline with nothing but the public key.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest

from pipeline.evidence.bundle import BundleError, check, day_bundle
from pipeline.evidence.keys import SealKey
from pipeline.sealing.run import seal_closed_days
from pipeline.sealing.verify import verify_db
from pipeline.settings import Secret, Settings
from pipeline.storage import db, seals
from pipeline.storage.batch import EVENT_COLUMNS, WriteBatch
from pipeline.storage.migrate import migrate
from pipeline.storage.partitions import PartitionManager
from pipeline.storage.writer import BatchWriter

NOW = datetime.now(UTC)
TODAY = NOW.date()
DAY = TODAY - timedelta(days=2)
OTHER_DAY = TODAY - timedelta(days=3)


def rows(cls: str, day: date, room: str, n: int, *, start: int = 0) -> list[tuple[Any, ...]]:
    at = datetime.combine(day, time.min, tzinfo=UTC)
    return [
        (
            uuid.uuid4(),
            at + timedelta(seconds=60 * (start + i) + 1),
            cls,
            room,
            "chat.message",
            1,
            f"u{i % 3}",
            None,
            f"line {start + i}",
            {"text": f"line {start + i}"},
            0,
            start + i,
        )
        for i in range(n)
    ]


@pytest.fixture
async def conn(postgres_dsn: str, pg_schema: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await db.connect(postgres_dsn, pg_schema)
    await migrate(connection, pg_schema)
    try:
        yield connection
    finally:
        await connection.close()


@pytest.fixture
def settings(postgres_dsn: str, pg_schema: str) -> Settings:
    return Settings(postgres_dsn=Secret(postgres_dsn), postgres_schema=pg_schema)


@pytest.fixture
def key(tmp_path: Path) -> SealKey:
    return SealKey.generate(tmp_path / "seal.pem")


async def store(conn: asyncpg.Connection, records: list[tuple[Any, ...]]) -> None:
    manager = PartitionManager()
    await manager.load(conn)
    await manager.ensure(conn, {(r[2], r[1].date()) for r in records})
    await conn.copy_records_to_table("events", records=records, columns=EVENT_COLUMNS)


async def world(conn: asyncpg.Connection) -> dict[str, list[tuple[Any, ...]]]:
    made = {
        "r1": rows("public", DAY, "r1", 40),
        "r2": rows("private", DAY, "r2", 7),
        "r1-early": rows("public", OTHER_DAY, "r1", 5),
    }
    for records in made.values():
        await store(conn, records)
    return made


async def verify(conn: asyncpg.Connection, **kwargs: Any) -> Counter[str]:
    result = await verify_db(conn, now=NOW, late_window_seconds=3600, **kwargs)
    return Counter(f.kind for f in result.findings or [])


async def superuser(conn: asyncpg.Connection, sql: str, *args: Any) -> None:
    """What someone holding the database can do: the guard triggers off for this session."""
    async with conn.transaction():
        await conn.execute("SET LOCAL session_replication_role = replica")
        await conn.execute(sql, *args)


async def test_sealing_covers_every_closed_day_and_verifies_clean(
    conn: asyncpg.Connection, settings: Settings, key: SealKey
) -> None:
    made = await world(conn)
    report = await seal_closed_days(conn, settings, key, now=NOW)
    assert report.days == [OTHER_DAY, DAY] and report.rooms == 3 and report.events == 52
    sealed = {(s.room_id, s.day): s for s in await seals.seals(conn)}
    assert {k: s.tree_size for k, s in sealed.items()} == {
        ("r1", OTHER_DAY): 5,
        ("r1", DAY): 40,
        ("r2", DAY): 7,
    }
    assert sealed[("r1", DAY)].seq == 2 and orjson.loads(sealed[("r1", DAY)].statement)["prev"] == (
        sealed[("r1", OTHER_DAY)].statement_hash.hex()
    )
    assert (await seal_closed_days(conn, settings, key, now=NOW)).days == []  # sealed once
    assert len(await seals.heads(conn)) == 2
    found = await verify(conn)
    assert not {k for k in found if k in ("changed_row", "missing_row", "extra_row", "seal_missing")}, found
    assert sum(found.values()) == 0
    assert made  # rows of today are not sealed: the day is open


@pytest.mark.parametrize(
    ("tamper", "expected"),
    [
        ("UPDATE events SET body = 'edited' WHERE event_id = $1", {"changed_row": 1}),
        ("DELETE FROM events WHERE event_id = $1", {"missing_row": 1}),
        (
            "UPDATE events SET occurred_at = occurred_at + interval '1 minute' WHERE event_id = $1",
            {"changed_row": 1},
        ),
    ],
    ids=["changed-text", "deleted-row", "moved-within-day"],
)
async def test_each_tampering_with_a_row_is_named(
    conn: asyncpg.Connection, settings: Settings, key: SealKey, tamper: str, expected: dict[str, int]
) -> None:
    made = await world(conn)
    await seal_closed_days(conn, settings, key, now=NOW)
    victim = made["r1"][10][0]
    await superuser(conn, tamper, victim)
    found = await verify(conn)
    assert {k: found[k] for k in expected} == expected and sum(found.values()) == sum(expected.values()), (
        found
    )
    result = await verify_db(conn, now=NOW, late_window_seconds=3600)
    assert {f.event_id for f in result.problems} == {victim}


async def test_forged_rows_swapped_times_and_moved_days_are_named(
    conn: asyncpg.Connection, settings: Settings, key: SealKey
) -> None:
    made = await world(conn)
    await seal_closed_days(conn, settings, key, now=NOW)
    forged = rows("public", DAY, "r1", 1, start=900)
    await superuser(
        conn,
        f"INSERT INTO events ({', '.join(EVENT_COLUMNS)}) "
        f"VALUES ({', '.join(f'${i}' for i in range(1, 13))})",
        *forged[0],
    )
    a, b = made["r2"][1], made["r2"][2]
    await superuser(conn, "UPDATE events SET occurred_at = $2 WHERE event_id = $1", a[0], b[1])
    await superuser(conn, "UPDATE events SET occurred_at = $2 WHERE event_id = $1", b[0], a[1])
    moved = made["r1-early"][0][0]
    await superuser(
        conn, "UPDATE events SET occurred_at = occurred_at + interval '1 day' WHERE event_id = $1", moved
    )
    result = await verify_db(conn, now=NOW, late_window_seconds=3600)
    by_kind: dict[str, set[Any]] = {}
    for f in result.problems:
        by_kind.setdefault(f.kind, set()).add(f.event_id)
    assert by_kind == {
        "extra_row": {forged[0][0], moved},
        "changed_row": {a[0], b[0]},
        "missing_row": {moved},
    }


async def test_altered_seals_and_broken_chains_are_named(
    conn: asyncpg.Connection, settings: Settings, key: SealKey, tmp_path: Path
) -> None:
    await world(conn)
    await seal_closed_days(conn, settings, key, now=NOW)
    first = (await seals.seals(conn, room="r1", day=OTHER_DAY))[0]
    await superuser(conn, "UPDATE seals SET root = $2 WHERE seal_id = $1", first.seal_id, b"\x00" * 32)
    assert (await verify(conn))["seal_altered"] == 1
    await superuser(conn, "UPDATE seals SET root = $2 WHERE seal_id = $1", first.seal_id, first.root)
    await superuser(conn, "UPDATE seals SET signature = $2 WHERE seal_id = $1", first.seal_id, b"\x01" * 64)
    assert (await verify(conn))["bad_signature"] == 1
    await superuser(
        conn, "UPDATE seals SET signature = $2 WHERE seal_id = $1", first.seal_id, first.signature
    )
    # a seal removed: the room's chain breaks, and its day's head no longer matches its seals
    await superuser(conn, "DELETE FROM seal_leaves WHERE seal_id = $1", first.seal_id)
    await superuser(conn, "DELETE FROM seals WHERE seal_id = $1", first.seal_id)
    found = await verify(conn)
    assert found["broken_chain"] == 1 and found["head_mismatch"] == 1, found
    # and a key we were not given: nothing verifies with someone else's key (two seals, two daily heads)
    other = SealKey.generate(tmp_path / "other.pem")
    assert (await verify(conn, public_keys={other.key_id: other.public_raw}))["unknown_key"] == 2 + 2


async def test_a_chain_resigned_with_the_real_key_is_caught_by_the_witness(
    conn: asyncpg.Connection, settings: Settings, key: SealKey
) -> None:
    """Someone holding the database and the signing key deletes a row and re-seals the day: everything in
    the database verifies again, but the witness's copy of the daily head does not match."""
    made = await world(conn)
    await seal_closed_days(conn, settings, key, now=NOW)
    witnessed = [(h.day, h.statement_hash) for h in await seals.heads(conn)]
    await superuser(conn, "DELETE FROM events WHERE event_id = $1", made["r2"][0][0])
    for table in ("seal_head_publications", "seal_heads", "seal_leaves"):
        await superuser(conn, f"DELETE FROM {table}")
    await superuser(conn, "DELETE FROM seals")
    await seal_closed_days(conn, settings, key, now=NOW + timedelta(seconds=1))
    assert sum((await verify(conn)).values()) == 0  # the forgery is consistent in itself
    result = await verify_db(conn, now=NOW, late_window_seconds=3600, witness=witnessed)
    # both days' heads were signed again (a new tree for one day, a new time and chain for both)
    assert {(f.kind, f.day) for f in result.findings or []} == {
        ("witness_mismatch", DAY),
        ("witness_mismatch", OTHER_DAY),
    }


async def test_retention_audited_deletions_and_legal_holds_are_accounted_for(
    conn: asyncpg.Connection, settings: Settings, key: SealKey
) -> None:
    made = await world(conn)
    await seal_closed_days(conn, settings, key, now=NOW)
    # an audited deletion: what the deletion functions do (0010), in one transaction with its request
    request_id = uuid.uuid4()
    async with conn.transaction():
        await conn.execute("SELECT set_config('roomlogs.authorized_deletion', 'on', true)")
        await conn.execute("DELETE FROM events WHERE room_id = 'r2'")
        await conn.execute(
            """INSERT INTO deletion_requests (request_id, kind, room_id, requested_by, identity_type, basis,
                                              reason, rows_deleted)
               VALUES ($1, 'room_logs', 'r2', 'owner-2', 'user', 'owner', 'test', 7)""",
            request_id,
        )
    found = await verify(conn)
    assert found == Counter({"deleted_by_request": 7}), found
    result = await verify_db(conn, now=NOW, late_window_seconds=3600)
    assert {f.detail for f in result.findings or []} == {f"deleted by request {request_id}"}
    # retention drops the public day: accounted for, per row, with the ledger entry
    from pipeline.retention import maintain

    await conn.execute("UPDATE retention_classes SET retention_days = 1 WHERE name = 'public'")
    await maintain(conn, settings, now=NOW)
    found = await verify(conn)
    assert found == Counter({"deleted_by_request": 7, "dropped_by_retention": 45}), found
    assert made


class _PausedInTransaction:
    """Detectors (the writer's hook inside a batch's transaction, after its rows are stored) that hold the
    transaction open until told to go on."""

    def __init__(self) -> None:
        self.inside, self.go = asyncio.Event(), asyncio.Event()

    async def detect(
        self, conn: asyncpg.Connection, rows: Sequence[tuple[Any, ...]], deletion_seq: int | None = None
    ) -> list[asyncpg.Record]:
        self.inside.set()
        await self.go.wait()
        return []

    def settle(self, committed: bool) -> None:
        pass

    def figures(self) -> tuple[dict[str, int], int | None]:
        return {}, None


async def test_a_batch_in_flight_when_sealing_first_starts_is_waited_for_and_sealed(
    conn: asyncpg.Connection, settings: Settings, key: SealKey, postgres_dsn: str, pg_schema: str
) -> None:
    """The very first sealing run registers its key as it starts. A batch already storing rows of a closed,
    unsealed day found no key, so nothing told it sealing was on; the run must still wait for it and seal
    its rows with the day, or they would be stored outside the seal (verify --db: tampering)."""
    await store(conn, rows("public", DAY, "r1", 5))  # a closed day, no key yet
    pool = await db.create_pool(postgres_dsn, pg_schema, 2)
    try:
        partitions = PartitionManager()
        async with pool.acquire() as c:
            await partitions.load(c)
        hook = _PausedInTransaction()
        writer = BatchWriter(pool, partitions, late_window_seconds=3600, detectors=hook)
        late = rows("public", DAY, "r1", 3, start=100)
        batch = WriteBatch(
            topic="t", consumer_group="g", rows=late, first_offsets={0: 100}, next_offsets={0: 103},
            event_days={("public", DAY)},
        )  # fmt: skip
        writing = asyncio.ensure_future(writer.write(batch, NOW))
        try:
            await asyncio.wait_for(hook.inside.wait(), 30)  # its rows stored, its transaction open
            sealing = asyncio.ensure_future(seal_closed_days(conn, settings, key, now=NOW))
            await asyncio.sleep(1.0)
            waited = not sealing.done()
        finally:
            hook.go.set()  # (on any failure too: an open transaction would hold the pool's close)
            outcome = await writing
        report = await sealing
    finally:
        await pool.close()
    assert waited, "the sealing run did not wait for the batch in flight"
    assert (outcome.stored, outcome.day_sealed) == (3, [])
    assert DAY in report.days and report.events == 8  # the batch's rows are sealed with their day
    assert await verify(conn) == Counter()


async def test_exports_verify_offline_and_every_tampering_fails_with_a_reason(
    conn: asyncpg.Connection, settings: Settings, key: SealKey, tmp_path: Path
) -> None:
    made = await world(conn)
    await seal_closed_days(conn, settings, key, now=NOW)
    seal = (await seals.seals(conn, room="r1", day=DAY))[0]
    stored = [
        {**dict(r), "event_id": str(r["event_id"])}
        for r in await conn.fetch(
            """SELECT event_id, occurred_at, room_id, event_type AS type, schema_version, actor_id,
                      target_id, body, payload
                 FROM events WHERE room_id = 'r1' AND occurred_at >= $1 AND occurred_at < $2
                ORDER BY occurred_at, event_id""",
            datetime.combine(DAY, time.min, tzinfo=UTC),
            datetime.combine(DAY + timedelta(days=1), time.min, tzinfo=UTC),
        )
    ]
    exported = orjson.loads(orjson.dumps(stored))  # what a client receives: JSON all the way

    def bundle(events: list[dict[str, Any]], *, of: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        day = day_bundle(
            statement=seal.statement, signature=seal.signature, key_id=seal.key_id,
            day_events=of or exported, exported=events,
        )  # fmt: skip
        return {"format": "roomlogs-evidence/1", "days": [orjson.loads(orjson.dumps(day))]}

    keys = {key.key_id: key.public_raw}
    whole = check(bundle(exported), keys)
    assert whole[0].say().startswith(f"these 40 events are exactly room r1's events of {DAY}")
    some = check(bundle(exported[3:15]), keys)
    assert some[0].say().startswith(f"these 12 events are among room r1's 40 events of {DAY}")

    tampered = bundle(exported)
    tampered["days"][0]["events"][5]["body"] = "edited"
    with pytest.raises(BundleError, match="do not give the sealed tree head"):
        check(tampered, keys)
    truncated = bundle(exported)
    truncated["days"][0]["events"].pop()
    with pytest.raises(BundleError, match="39 events, the seal says 40"):
        check(truncated, keys)
    reordered = bundle(exported[3:15])
    events = reordered["days"][0]["events"]
    events[0], events[1] = events[1], events[0]
    with pytest.raises(BundleError, match="out of its sealed order"):
        check(reordered, keys)
    changed = bundle(exported[3:15])
    changed["days"][0]["events"][2]["body"] = "edited"
    with pytest.raises(BundleError, match="not in the sealed tree"):
        check(changed, keys)
    other = SealKey.generate(tmp_path / "other.pem")
    rekeyed = bundle(exported)
    import base64

    rekeyed["days"][0]["seal"]["signature"] = base64.b64encode(other.sign(seal.statement)).decode()
    with pytest.raises(BundleError, match="signature does not verify"):
        check(rekeyed, keys)
    with pytest.raises(BundleError, match="no public key given"):
        check(bundle(exported), {other.key_id: other.public_raw})
    assert made

    # Damaged or tampered anywhere, with anything: refused with a reason, never another exception (which
    # `roomlogs verify FILE` printed as a traceback). Every node of a bundle of 5 events, each replaced by
    # each of these values in turn, then the bundle's bytes cut or not JSON at all.
    odd: list[Any] = [None, "x", "[1]", "zz", -1, 2**70, 1.5, [], [1], {}, {"a": 1}, True]
    small = bundle(exported[:5])
    tried = refused = 0
    for path in _paths(small):
        for value in odd:
            damaged = orjson.loads(orjson.dumps(small))
            _set(damaged, path, value)
            tried += 1
            try:
                check(damaged, keys)
            except BundleError as e:
                refused += 1
                assert str(e), path
    raw = orjson.dumps(small)
    for damaged_bytes in (raw[: len(raw) // 2], b"<html>502 Bad Gateway</html>", b"", raw + b"x"):
        with pytest.raises(BundleError):
            check(damaged_bytes, keys)
    assert tried > 500 and refused > tried * 0.9, (tried, refused)  # a few odd values are harmless


def _paths(node: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every node's path in a JSON document (the root's excluded)."""
    children = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    found: list[tuple[Any, ...]] = []
    for key, child in children:
        found += [(*path, key), *_paths(child, (*path, key))]
    return found


def _set(doc: Any, path: tuple[Any, ...], value: Any) -> None:
    for key in path[:-1]:
        doc = doc[key]
    doc[path[-1]] = value
