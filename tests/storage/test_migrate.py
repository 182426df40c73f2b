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
        said: list[str] = []  # what `roomlogs migrate` would print as progress
        again = await migrate.migrate(conn, pg_schema, progress=said.append)
        await asyncio.sleep(0.1)  # (asyncpg hands NOTICEs to listeners in a later loop iteration)
        recorded = await conn.fetch("SELECT version, checksum FROM schema_migrations ORDER BY version")
    finally:
        await conn.close()
    assert [m.version for m in first] == [m.version for m in migrate.available()]
    assert again == []
    assert said == [], "an up-to-date schema says so in one line, with no 'already exists, skipping'"
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


async def test_a_migration_numbered_below_one_applied_before_it_existed_is_still_required(
    postgres_dsn: str, pg_schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two branches each add a migration; the higher number was applied first. Workers must not start
    until the lower one is applied too, and `migrate` applies it."""
    everything = migrate.available()
    late = migrate.Migration(9998, "late", "CREATE TABLE late_branch (x integer)")
    newest = migrate.Migration(9999, "newest", "CREATE TABLE newest_branch (x integer)")
    conn = await db.connect(postgres_dsn, pg_schema)
    try:
        monkeypatch.setattr(migrate, "available", lambda: [*everything, newest])
        await migrate.migrate(conn, pg_schema)
        monkeypatch.setattr(migrate, "available", lambda: [*everything, late, newest])
        with pytest.raises(migrate.SchemaNotReadyError, match="without 9998"):
            await migrate.check_schema(conn, pg_schema)
        assert [m.name for m in await migrate.migrate(conn, pg_schema)] == ["late"]
        await migrate.check_schema(conn, pg_schema)
    finally:
        await conn.close()
