"""The database roles the migrations make (`<schema>_api`, `<schema>_worker`): DSNs to connect as them."""

from __future__ import annotations

import uuid
from urllib.parse import urlsplit, urlunsplit

import asyncpg


def role_dsn(dsn: str, role: str, password: str) -> str:
    """`dsn` with another user and password."""
    parts = urlsplit(dsn)
    netloc = f"{role}:{password}@{parts.hostname or '127.0.0.1'}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


async def login_as(admin_dsn: str, role: str) -> str:
    """Give `role` a fresh password (as the admin) and return a DSN connecting as it."""
    password = uuid.uuid4().hex
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f"ALTER ROLE \"{role}\" PASSWORD '{password}'")
    finally:
        await conn.close()
    return role_dsn(admin_dsn, role, password)
