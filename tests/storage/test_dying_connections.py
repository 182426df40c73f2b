"""A connection the server ends (shutdown, pg_terminate_backend) is an outage; misuse of a live one is a bug.

Found by the fault harness (postgres-stop): PostgreSQL's fast shutdown sends each session a FATAL message
and then closes the socket. asyncpg reads the message first; a statement issued in between fails with
"cannot switch to state N; another operation is in progress" on a connection that still looks open. That
must pause ingest like any outage, not crash the worker as a bug would.
"""

from __future__ import annotations

import asyncio
import socket

import asyncpg
import pytest

from pipeline.errors import StorageUnavailableError
from pipeline.storage import db

CUT_SHORT = "cannot switch to state 21; another operation (2) is in progress"


async def test_an_error_on_a_connection_the_server_ended_is_an_outage(postgres_dsn: str) -> None:
    pool = await db.create_pool(postgres_dsn, "public", 2)
    try:
        async with pool.acquire() as killer, pool.acquire() as conn:
            pid = await conn.fetchval("SELECT pg_backend_pid()")
            # the race, made certain: the session is ended while the client has not read its socket yet
            transport = conn._transport
            transport.pause_reading()
            await killer.execute("SELECT pg_terminate_backend($1, 10000)", pid)
            error = asyncpg.exceptions._base.InternalClientError(CUT_SHORT)
            assert not db.lost(error, conn), "the connection still looks open"
            transport.resume_reading()
            assert await db.gone(error, conn), "once the client reads the end, it is an outage"
        # and through db.acquire, as the writer uses it: the error becomes StorageUnavailableError
        async with pool.acquire() as killer:
            with pytest.raises(StorageUnavailableError):
                async with db.acquire(pool) as conn, conn.transaction():
                    pid = await conn.fetchval("SELECT pg_backend_pid()")
                    await killer.execute("SELECT pg_terminate_backend($1, 10000)", pid)
                    raise asyncpg.exceptions._base.InternalClientError(CUT_SHORT)
    finally:
        await pool.close()


async def test_the_same_error_on_a_live_connection_is_a_bug(postgres_dsn: str) -> None:
    pool = await db.create_pool(postgres_dsn, "public", 2)
    try:
        started = asyncio.get_running_loop().time()
        try:
            async with db.acquire(pool) as conn:
                await conn.fetchval("SELECT 1")
                raise asyncpg.exceptions._base.InternalClientError(CUT_SHORT)
        except asyncpg.exceptions._base.InternalClientError:
            pass
        else:
            raise AssertionError("misuse of a live connection must not be taken for an outage")
        # it was given the settle time to die, and did not
        assert asyncio.get_running_loop().time() - started >= db.DYING_CONNECTION_SETTLE_SECONDS
        async with pool.acquire() as conn:
            assert await conn.fetchval("SELECT 1") == 1  # and the pool is fine
    finally:
        await pool.close()


async def test_a_transaction_the_server_ended_for_idling_is_an_outage(postgres_dsn: str) -> None:
    """A worker frozen or cut off inside a transaction comes back to a session the server has ended
    (idle_in_transaction_session_timeout, WORKER_SESSION_SETTINGS): it waits that out, it is not a bug."""
    pool = await db.create_pool(
        postgres_dsn, "public", 1, session_settings={"idle_in_transaction_session_timeout": "200ms"}
    )
    try:
        with pytest.raises(StorageUnavailableError):
            async with db.acquire(pool) as conn, conn.transaction():
                await conn.fetchval("SELECT 1")
                await asyncio.sleep(1.0)  # frozen, as far as the server can tell
                await conn.fetchval("SELECT 2")
        async with db.acquire(pool) as conn:
            assert await conn.fetchval("SELECT 3") == 3  # the pool replaced the connection
    finally:
        await pool.close()


async def test_connections_notice_a_server_gone_silent(postgres_dsn: str) -> None:
    """Client-side keepalive: without it a connection waiting for an answer from a server that vanished
    (a cut link that healed after the server ended the session) waits forever, and so does the worker."""
    pool = await db.create_pool(postgres_dsn, "public", 1)
    try:
        async with pool.acquire() as conn:
            sock = conn._transport.get_extra_info("socket")
            if sock.family not in (socket.AF_INET, socket.AF_INET6):
                pytest.skip("the test server is reached over a Unix socket")
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
            for name, value in db.CLIENT_KEEPALIVE:
                assert sock.getsockopt(socket.IPPROTO_TCP, getattr(socket, name)) == value, name
    finally:
        await pool.close()


async def test_a_failed_release_with_the_server_up_is_a_bug(postgres_dsn: str) -> None:
    """Releasing meets a FATAL message only when the server is going away; with PostgreSQL answering, the
    same error is improper use of asyncpg and surfaces (the postgres-stop fault covers the outage side)."""

    failures = [asyncpg.exceptions._base.InternalClientError(CUT_SHORT)]

    async def failing_reset(conn: asyncpg.Connection) -> None:
        if failures:  # the first release only: the probe's own release works
            raise failures.pop()

    pool = await asyncpg.create_pool(postgres_dsn, min_size=1, max_size=2, reset=failing_reset)
    try:
        with pytest.raises(asyncpg.exceptions._base.InternalClientError):
            async with db.acquire(pool) as conn:
                assert await conn.fetchval("SELECT 1") == 1
    finally:
        await pool.close()


async def test_a_server_that_accepts_but_never_answers_is_named_as_such(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`roomlogs migrate` against a port that accepts connections and says nothing (a wrong service, a proxy
    with no backend) waited a minute, then said only `TimeoutError`."""
    monkeypatch.setattr(db, "CONNECT_TIMEOUT_SECONDS", 1.0)
    with socket.create_server(("127.0.0.1", 0)) as silent:
        port = silent.getsockname()[1]
        with pytest.raises(StorageUnavailableError) as caught:
            await db.connect(f"postgresql://roomlogs@127.0.0.1:{port}/roomlogs", "roomlogs")
    assert "ROOMLOGS_POSTGRES_DSN" in str(caught.value)
    assert "no answer within 1 s" in str(caught.value) and "not PostgreSQL" in str(caught.value)
