"""The seal key file replaced by another key: sealing goes on with it (a rotation, README: Keys and
rotation), says so once at WARNING naming both keys, and everything verifies, each seal with its own key;
verifying with only the public key meant (`verify --db --key`) names every seal the other key made."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import asyncpg
import pytest
from test_seals import DAY, NOW, rows, store

from pipeline.evidence.keys import SealKey
from pipeline.sealing.run import seal_closed_days
from pipeline.sealing.verify import verify_db
from pipeline.settings import Secret, Settings
from pipeline.storage import db
from pipeline.storage.migrate import migrate


@pytest.fixture
async def conn(postgres_dsn: str, pg_schema: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await db.connect(postgres_dsn, pg_schema)
    await migrate(connection, pg_schema)
    try:
        yield connection
    finally:
        await connection.close()


async def test_another_key_file_is_a_rotation_said_out_loud(
    conn: asyncpg.Connection,
    postgres_dsn: str,
    pg_schema: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = Settings(postgres_dsn=Secret(postgres_dsn), postgres_schema=pg_schema)
    meant, other = SealKey.generate(tmp_path / "meant.pem"), SealKey.generate(tmp_path / "other.pem")
    await store(conn, rows("public", DAY - timedelta(days=1), "r1", 4))
    await seal_closed_days(conn, settings, meant, now=NOW)
    await store(conn, rows("public", DAY, "r1", 3))
    with caplog.at_level(logging.WARNING, logger="roomlogs.sealing"):
        await seal_closed_days(conn, settings, other, now=NOW)
        await seal_closed_days(conn, settings, other, now=NOW)
    said = [r.getMessage() for r in caplog.records if "new to this schema" in r.getMessage()]
    assert len(said) == 1 and other.key_id in said[0] and meant.key_id in said[0], said
    assert (await verify_db(conn, now=NOW, late_window_seconds=3600)).problems == []
    only_meant = await verify_db(
        conn, now=NOW, late_window_seconds=3600, public_keys={meant.key_id: meant.public_raw}
    )
    kinds = Counter(f.kind for f in only_meant.problems)
    # the seal and the daily head the other key signed: by a key not given, not a bad signature (a tester
    # read "head_bad_signature" for a head signed correctly by the new key)
    assert kinds == Counter({"unknown_key": 2}), kinds
    assert any(f.kind == "unknown_key" and "daily head" in f.detail for f in only_meant.problems)
