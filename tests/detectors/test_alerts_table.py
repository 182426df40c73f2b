"""The alerts table (migration 0017) against real PostgreSQL: a key is stored once, each stored alert is
queued once for the topic, the worker's role appends and never edits, the API's role reads, a day's table
exists with its day of events, and a deletion or erasure takes the alerts citing what it deleted."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, time, timedelta

import asyncpg
import orjson
import pytest
from db_roles import login_as

from pipeline.storage import alerts, db, migrate
from pipeline.storage.alerts import Alert
from pipeline.storage.batch import EVENT_COLUMNS
from pipeline.storage.partitions import PartitionManager

BASE = datetime.combine(datetime.now(UTC).date() - timedelta(days=1), time(12), tzinfo=UTC)


def chat_row(event_id: uuid.UUID, user: str, seconds: int, offset: int) -> tuple[object, ...]:
    payload = orjson.dumps({"actor": {"user_id": user}})
    at = BASE + timedelta(seconds=seconds)
    return (event_id, at, "public", "room-a", "chat.message", 1, user, None, "hi", payload, 0, offset)


def flood(ids: list[uuid.UUID], user: str = "u-1") -> Alert:
    return Alert(
        "public",
        "room-a",
        "chat_flood",
        user,
        BASE,
        BASE,
        BASE + timedelta(seconds=10),
        (user,),
        {"n": len(ids), "limit": 1},
        tuple(ids),
    )


async def test_alerts_are_appended_once_queued_once_and_read_by_the_api(
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
            await partitions.ensure(worker, [("public", BASE.date())])
            assert await admin.fetchval("SELECT to_regclass($1)", f"alerts_public_p{BASE:%Y%m%d}")
            ids = [uuid.uuid4(), uuid.uuid4()]
            rows = [chat_row(e, "u-1", i, i) for i, e in enumerate(ids)]
            await worker.copy_records_to_table("events", records=rows, columns=EVENT_COLUMNS)
            async with worker.transaction():
                stored = await alerts.insert(worker, [flood(ids)])
            assert [r["subject"] for r in stored] == ["u-1"]
            async with worker.transaction():
                assert await alerts.insert(worker, [flood(ids)]) == []  # the same key: stored once
            # a bucket starting the day before any event of the class: its table is made on the way
            early = Alert(
                "public", "room-a", "raid", "", BASE - timedelta(days=1), BASE, BASE + timedelta(seconds=1),
                (), {}, (ids[0],),
            )  # fmt: skip
            assert len(await alerts.insert(worker, [early])) == 1
            assert await admin.fetchval("SELECT count(*) FROM alert_outbox") == 2
            value = orjson.loads(await admin.fetchval("SELECT value FROM alert_outbox ORDER BY outbox_id"))
            assert value["detector"] == "chat_flood" and value["event_ids"] == [str(e) for e in ids]
            got = await alerts.room_alerts(api, "room-a", BASE - timedelta(days=2), BASE + timedelta(days=1))
            assert sorted(r["detector"] for r in got) == ["chat_flood", "raid"]
            assert stored[0]["alert_id"] in {r["alert_id"] for r in got}
            assert await alerts.alert(api, "room-a", stored[0]["alert_id"]) is not None
            assert [r["detector"] for r in await alerts.user_alerts(api, "room-a", "u-1")] == ["chat_flood"]
            counts = await alerts.day_counts(api, "room-a", BASE.date(), BASE.date())
            assert [(r["detector"], r["n"]) for r in counts] == [("chat_flood", 1), ("raid", 1)]
            for sql in ("UPDATE alerts SET subject = 'x'", "DELETE FROM alerts", "TRUNCATE alerts"):
                with pytest.raises(asyncpg.InsufficientPrivilegeError):
                    await worker.execute(sql)
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await api.execute("DELETE FROM alerts")
        finally:
            await worker.close()
            await api.close()
    finally:
        await admin.close()


async def test_an_erasure_takes_the_alerts_that_cite_the_erased_rows(
    postgres_dsn: str, pg_schema: str
) -> None:
    conn = await db.connect(postgres_dsn, pg_schema)
    try:
        await migrate.migrate(conn, pg_schema)
        partitions = PartitionManager()
        await partitions.load(conn)
        await partitions.ensure(conn, [("public", BASE.date())])
        mine, theirs = [uuid.uuid4(), uuid.uuid4()], [uuid.uuid4(), uuid.uuid4()]
        rows = [chat_row(e, "u-1", i, i) for i, e in enumerate(mine)]
        rows += [chat_row(e, "u-2", i, 10 + i) for i, e in enumerate(theirs)]
        await conn.copy_records_to_table("events", records=rows, columns=EVENT_COLUMNS)
        await alerts.insert(conn, [flood(mine, "u-1"), flood(theirs, "u-2")])
        async with conn.transaction():
            await conn.execute("SET LOCAL roomlogs.authorized_deletion = 'on'")
            await conn.execute("DELETE FROM events WHERE actor_id = 'u-1'")
        assert {k[2] for k in await alerts.alert_keys(conn)} == {"u-2"}
    finally:
        await conn.close()
