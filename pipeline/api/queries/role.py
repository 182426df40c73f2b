"""What the API's own database role may do, checked once at start-up (`app.open_pool`).

The role must read the logs and append audit rows, and (unless `allow_privileged_db_role`) must not be
able to edit or delete either: then a bug or a stolen API host cannot rewrite what was read or recorded.
"""

from __future__ import annotations

from typing import Any

import asyncpg

from pipeline.errors import ConfigurationError

__all__ = ["check_role"]


async def check_role(conn: asyncpg.Connection, schema: str, *, allow_privileged: bool) -> None:
    """ConfigurationError unless 0003 is applied and the role can only read logs and append audit rows."""
    facts: Any = await conn.fetchrow(
        """SELECT current_user AS role,
                  (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) AS superuser,
                  to_regclass('access_audit') IS NOT NULL AS migrated""",
    )
    if not facts["migrated"]:
        raise ConfigurationError(
            f"schema {schema!r} has no access_audit table: run `roomlogs migrate` first "
            "(or check ROOMLOGS_POSTGRES_SCHEMA and the database in ROOMLOGS_API_POSTGRES_DSN)"
        )
    powers = await conn.fetchrow(
        """SELECT has_table_privilege('events', 'UPDATE') OR has_table_privilege('events', 'DELETE')
                  OR has_table_privilege('events', 'TRUNCATE') AS edit_logs,
                  has_table_privilege('access_audit', 'UPDATE')
                  OR has_table_privilege('access_audit', 'DELETE')
                  OR has_table_privilege('access_audit', 'TRUNCATE') AS edit_audit,
                  has_table_privilege('events', 'SELECT') AS read_logs,
                  has_table_privilege('access_audit', 'INSERT') AS append_audit"""
    )
    assert powers is not None
    if not (powers["read_logs"] and powers["append_audit"]):
        raise ConfigurationError(
            f"role {facts['role']!r} cannot read events or append to access_audit: set "
            f"ROOMLOGS_API_POSTGRES_DSN to connect as {schema}_api"
        )
    if (facts["superuser"] or powers["edit_logs"] or powers["edit_audit"]) and not allow_privileged:
        raise ConfigurationError(
            f"role {facts['role']!r} may edit or delete logs or audit rows: set ROOMLOGS_API_POSTGRES_DSN to "
            f"connect as {schema}_api (or ROOMLOGS_API_ALLOW_PRIVILEGED_DB_ROLE=true for local development)"
        )
