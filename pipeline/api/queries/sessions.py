"""Console sessions' SQL (`console_sessions`, migration 0007; `api_open_session` and
`api_set_session_reason`, migration 0010).

Called by `security.sessions` to authenticate a request by its cookie, and by the session routes
(``/v1/session``). PostgreSQL keeps only a session id's SHA-256; opening a session and stating its reason
go through functions that verify the caller's token or cookie themselves.
"""

from __future__ import annotations

from datetime import datetime

import asyncpg

__all__ = [
    "end_session",
    "forget_expired",
    "live_session",
    "open_oidc_session",
    "open_session",
    "session_is_live",
    "set_session_reason",
]

_LIVE = "session_hash = $1 AND ended_at IS NULL AND expires_at > clock_timestamp()"


async def live_session(conn: asyncpg.Connection, session_hash: bytes) -> asyncpg.Record | None:
    """(subject, identity_type, staff_reason, expires_at) of the session, if signed in and not expired."""
    return await conn.fetchrow(
        f"SELECT subject, identity_type, staff_reason, expires_at FROM console_sessions WHERE {_LIVE}",
        session_hash,
    )


async def session_is_live(conn: asyncpg.Connection, session_hash: bytes) -> bool:
    return bool(
        await conn.fetchval(f"SELECT EXISTS (SELECT 1 FROM console_sessions WHERE {_LIVE})", session_hash)
    )


async def forget_expired(conn: asyncpg.Connection) -> None:
    """Delete the sessions that expired more than a day ago."""
    await conn.execute("DELETE FROM console_sessions WHERE expires_at < clock_timestamp() - interval '1 day'")


async def open_session(
    conn: asyncpg.Connection, token: str, session_hash: bytes, ttl_seconds: int
) -> datetime:
    """Open a session for the bearer `token` (the database verifies it); when it expires."""
    expires_at: datetime = await conn.fetchval(
        "SELECT api_open_session($1, $2, $3)", token, session_hash, ttl_seconds
    )
    return expires_at


async def end_session(conn: asyncpg.Connection, session_hash: bytes) -> None:
    await conn.execute(
        "UPDATE console_sessions SET ended_at = clock_timestamp() WHERE session_hash = $1 "
        "AND ended_at IS NULL",
        session_hash,
    )


async def end_all_sessions(conn: asyncpg.Connection) -> int:
    """Sign every live console session out and refuse sign-ins with tokens issued before now (migration
    0023; `roomlogs api end-sessions`, as the schema's owner): after a restore from a backup (sessions
    signed out since are live again there, tokens used since unused again) or a token key that leaked.
    How many sessions were ended."""
    async with conn.transaction():
        done: str = await conn.execute(
            "UPDATE console_sessions SET ended_at = clock_timestamp() "
            "WHERE ended_at IS NULL AND expires_at > clock_timestamp()"
        )
        await conn.execute(
            """INSERT INTO sign_in_floor (not_before) VALUES (clock_timestamp())
               ON CONFLICT (singleton) DO UPDATE SET not_before = EXCLUDED.not_before"""
        )
    return int(done.split()[-1])


async def set_session_reason(conn: asyncpg.Connection, cookie: str, reason: str | None) -> None:
    """The case a staff member's session reads for (InvalidAuthorizationSpecificationError: the session
    has ended)."""
    await conn.execute("SELECT api_set_session_reason($1, $2)", cookie, reason)


async def open_oidc_session(
    conn: asyncpg.Connection, id_token: str, session_hash: bytes, ttl_seconds: int
) -> datetime:
    """Open a session for a single sign-on ID token (the database verifies it, migration 0019)."""
    expires_at: datetime = await conn.fetchval(
        "SELECT api_open_oidc_session($1, $2, $3)", id_token, session_hash, ttl_seconds
    )
    return expires_at
