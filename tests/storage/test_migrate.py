"""Migrations: recorded, idempotent, safe from several processes, and history is not rewritten."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from pipeline.errors import ConfigurationError
from pipeline.storage import db, migrate


async def test_migrate_applies_everything_once_and_is_a_no_op_after(
    postgres_dsn: str, pg_schema: str
) -> None:
    conn = await db.connect(postgres_dsn, pg_schema)
    try:
        first = await migrate.migrate(conn, pg_schema)
        again = await migrate.migrate(conn, pg_schema)
        recorded = await conn.fetch("SELECT version, checksum FROM schema_migrations ORDER BY version")
    finally:
        await conn.close()
    assert [m.version for m in first] == [m.version for m in migrate.available()]
    assert again == []
    assert [(r["version"], r["checksum"]) for r in recorded] == [(m.version, m.checksum) for m in first]


async def test_two_processes_migrating_at_once_both_succeed(postgres_dsn: str, pg_schema: str) -> None:
    conns = [await db.connect(postgres_dsn, pg_schema) for _ in range(2)]
    try:
        results = await asyncio.gather(*(migrate.migrate(c, pg_schema) for c in conns))
    finally:
        for c in conns:
            await c.close()
    assert sorted(len(r) for r in results) == [0, len(migrate.available())]


async def test_an_edited_applied_migration_is_refused(
    postgres_dsn: str, pg_schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    conn = await db.connect(postgres_dsn, pg_schema)
    try:
        await migrate.migrate(conn, pg_schema)
        original = migrate.available()
        edited = [dataclasses.replace(original[0], sql=original[0].sql + "\n-- edited"), *original[1:]]
        monkeypatch.setattr(migrate, "available", lambda: edited)
        with pytest.raises(ConfigurationError, match="changed after it was applied"):
            await migrate.migrate(conn, pg_schema)
    finally:
        await conn.close()
