"""Versioned SQL migrations, recorded in the database, safe to run twice and from several processes at once.

Files are `migrations/NNNN_name.sql`, applied in order, each in its own transaction. An applied file whose
text later changed is refused (a migration is history, not a living document). `check_schema` says whether
a schema has every migration this code has (the worker at start, every operator command before it runs).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from typing import Any

import asyncpg

from pipeline.errors import ConfigurationError, StorageUnavailableError
from pipeline.settings import Settings
from pipeline.storage import db

_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
_LOCK_NAMESPACE = 0x726C6D67  # "rlmg"


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def available() -> list[Migration]:
    found = []
    for entry in resources.files("pipeline.storage").joinpath("migrations").iterdir():
        m = _FILE.match(entry.name)
        if m:
            found.append(Migration(int(m.group(1)), m.group(2), entry.read_text(encoding="utf-8")))
    found.sort(key=lambda mig: mig.version)
    versions = [mig.version for mig in found]
    if len(set(versions)) != len(versions):
        raise ConfigurationError(f"two migrations share a version number: {versions}")
    return found


async def migrate(
    conn: asyncpg.Connection, schema: str, *, progress: Callable[[str], None] | None = None
) -> list[Migration]:
    """Apply pending migrations to `schema`; return the ones applied now (empty when up to date).

    `progress` is handed what a long migration says as it goes (its NOTICEs: 0016 after each day it rolls
    up), for `roomlogs migrate` to print; only while a migration runs, not the "already exists, skipping"
    of the bookkeeping every run does."""
    applied_now: list[Migration] = []

    def notice(_conn: object, message: Any) -> None:
        if progress is not None:
            progress(str(message.message))

    # hashtext() gives a stable int per schema so different schemas migrate independently.
    await conn.execute("SELECT pg_advisory_lock($1, hashtext($2))", _LOCK_NAMESPACE, schema)
    try:
        await check_can_migrate(conn, schema)
        await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
        await conn.execute(f'SET search_path TO "{schema}", public')
        await conn.execute(
            """CREATE TABLE IF NOT EXISTS schema_migrations (
                   version integer PRIMARY KEY,
                   name text NOT NULL,
                   checksum text NOT NULL,
                   applied_at timestamptz NOT NULL DEFAULT now())"""
        )
        done = {
            r["version"]: r for r in await conn.fetch("SELECT version, name, checksum FROM schema_migrations")
        }
        for mig in available():
            row = done.get(mig.version)
            if row is not None:
                if row["checksum"] != mig.checksum:
                    raise ConfigurationError(
                        f"migration {mig.version:04d}_{mig.name} changed after it was applied to schema "
                        f"{schema!r}; add a new migration instead of editing an applied one"
                    )
                continue
            conn.add_log_listener(notice)
            try:
                async with conn.transaction():
                    try:
                        await conn.execute(mig.sql)
                    except asyncpg.InsufficientPrivilegeError as e:
                        raise ConfigurationError(
                            f"migration {mig.version:04d}_{mig.name} of schema {schema!r} was refused: {e} "
                            "(the migrations before it are applied; README, Database roles: what the owner "
                            "role needs)"
                        ) from None
                    except (asyncpg.DuplicateObjectError, asyncpg.DuplicateTableError) as e:
                        raise ConfigurationError(
                            f"migration {mig.version:04d}_{mig.name} of schema {schema!r} failed: {e}: the "
                            "schema holds objects roomlogs did not record making (a restore that stopped "
                            "half-way, or another application's schema): restore it whole, or set "
                            "ROOMLOGS_POSTGRES_SCHEMA to a schema of roomlogs' own"
                        ) from None
                    await conn.execute(
                        "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                        mig.version,
                        mig.name,
                        mig.checksum,
                    )
            finally:
                conn.remove_log_listener(notice)
            applied_now.append(mig)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1, hashtext($2))", _LOCK_NAMESPACE, schema)
    return applied_now


#: The oldest PostgreSQL the migrations and the pipeline are tested on (15 by hand, 18 in CI).
MIN_SERVER_VERSION_NUM = 150000
#: Migrations that make a role of their own, named after the schema: (version, role suffix).
_ROLES_MADE = ((3, "_api"), (8, "_worker"))


async def check_can_migrate(conn: asyncpg.Connection, schema: str) -> None:
    """ConfigurationError naming what to grant when this connection's role could not apply the pending
    migrations of `schema`: checked before the first one, not found half-way through.

    - PostgreSQL 15 or newer;
    - CREATE on the database, while the schema does not exist yet (the migrations make it) or migration
      0015 is pending (it adds the trusted extensions pg_trgm and btree_gin);
    - CREATEROLE, while migration 0003 or 0008 is pending and the role it makes (`<schema>_api`,
      `<schema>_worker`) does not exist yet (a DBA may create them first, LOGIN, instead)."""
    roles = [schema + suffix for _, suffix in _ROLES_MADE]
    row = await conn.fetchrow(
        """SELECT current_setting('server_version_num')::int AS version,
                  current_setting('server_version') AS shown, current_user AS who,
                  current_database() AS db, r.rolsuper AS superuser, r.rolcreaterole AS createrole,
                  has_database_privilege(current_database(), 'CREATE') AS create_in_db,
                  to_regnamespace($1) IS NOT NULL AS schema_exists,
                  coalesce((SELECT array_agg(rolname::text) FROM pg_roles WHERE rolname = ANY($2::text[])),
                           '{}') AS roles_there
             FROM pg_roles r WHERE r.rolname = current_user""",
        schema,
        roles,
    )
    assert row is not None
    if row["version"] < MIN_SERVER_VERSION_NUM:
        raise ConfigurationError(
            f"PostgreSQL {row['shown']} at ROOMLOGS_POSTGRES_DSN: roomlogs needs PostgreSQL 15 or newer"
        )
    if row["superuser"]:
        return
    done: set[int] = set()
    if row["schema_exists"] and await conn.fetchval(
        "SELECT to_regclass(format('%I.schema_migrations', $1::text)) IS NOT NULL", schema
    ):
        done = {r[0] for r in await conn.fetch(f'SELECT version FROM "{schema}".schema_migrations')}
    pending = {m.version for m in available()} - done
    if not pending:
        return
    needs: list[str] = []
    if not row["create_in_db"] and (not row["schema_exists"] or 15 in pending):
        needs.append(
            f'CREATE on database {row["db"]} (GRANT CREATE ON DATABASE "{row["db"]}" TO "{row["who"]}")'
        )
    missing = [
        schema + suffix
        for version, suffix in _ROLES_MADE
        if version in pending and schema + suffix not in row["roles_there"]
    ]
    if missing and not row["createrole"]:
        needs.append(
            f'CREATEROLE (ALTER ROLE "{row["who"]}" CREATEROLE), or roles {", ".join(missing)} made first '
            "(LOGIN)"
        )
    if needs:
        raise ConfigurationError(
            f"role {row['who']!r} cannot apply the migrations of schema {schema!r}: it needs "
            + " and ".join(needs)
            + "; nothing was applied (README, Database roles)"
        )


class SchemaNotReadyError(ConfigurationError):
    """The schema is not migrated to what this code expects."""


#: How many other roomlogs schemas a "no such schema" message lists.
_SCHEMAS_LISTED = 5


async def check_schema(conn: Any, schema: str) -> None:
    """SchemaNotReadyError naming ROOMLOGS_POSTGRES_SCHEMA unless `schema` has every migration this code has
    (each of them: `migrate` applies one numbered below the newest applied, if it came later).

    A schema that does not exist, or has no roomlogs tables, is most often a mistyped setting: the error
    lists the schemas of this database that do have them, and says that `roomlogs migrate` would create
    it. One that is behind says to run `roomlogs migrate`.
    """
    table = await conn.fetchval("SELECT to_regclass(format('%I.schema_migrations', $1::text))", schema)
    applied = (
        {r["version"] for r in await conn.fetch(f'SELECT version FROM "{schema}".schema_migrations')}
        if table
        else set()
    )
    if not applied:
        exists = await conn.fetchval("SELECT to_regnamespace(format('%I', $1::text)) IS NOT NULL", schema)
        what = "has no roomlogs tables" if exists else "does not exist in this database"
        others = await _other_schemas(conn, schema)
        raise SchemaNotReadyError(
            f"ROOMLOGS_POSTGRES_SCHEMA={schema!r}: that schema {what} ({others}): "
            "set ROOMLOGS_POSTGRES_SCHEMA to the schema you migrated, or run `roomlogs migrate` to create it"
        )
    # every one, not only the newest: a migration numbered below one applied before it existed (two branches
    # merged) is missing all the same
    missing = sorted({m.version for m in available()} - applied)
    if missing:
        raise SchemaNotReadyError(
            f"PostgreSQL schema {schema!r} is at migration {max(applied)} without "
            f"{', '.join(f'{v:04d}' for v in missing)}, which this code needs: "
            "run `roomlogs migrate` first (or check ROOMLOGS_POSTGRES_SCHEMA)"
        )


async def _other_schemas(conn: Any, schema: str) -> str:
    """The other schemas of this database that hold roomlogs tables, in words."""
    rows = await conn.fetch(
        """SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE c.relname = 'schema_migrations' AND c.relkind = 'r' AND n.nspname <> $1 ORDER BY 1""",
        schema,
    )
    names = [r["nspname"] for r in rows]
    if not names:
        return "no schema here has roomlogs tables"
    listed = ", ".join(names[:_SCHEMAS_LISTED])
    if len(names) > _SCHEMAS_LISTED:
        listed += f" and {len(names) - _SCHEMAS_LISTED} more"
    return f"schemas with roomlogs tables here: {listed}"


async def check_schema_of(settings: Settings) -> None:
    """`check_schema` on a connection of its own. `main()` calls it before every command that works in an
    existing schema (`status`, `dead-letters`, `retention`, ...), so a wrong ROOMLOGS_POSTGRES_SCHEMA ends
    any of them with one line naming it. An outage is left to the command: it reports it, or waits it out
    (`retention enforce --loop`), as it would without this check."""
    try:
        conn = await db.connect(settings.postgres_dsn.get(), settings.postgres_schema)
    except StorageUnavailableError:
        return
    try:
        await check_schema(conn, settings.postgres_schema)
    finally:
        await conn.close()
