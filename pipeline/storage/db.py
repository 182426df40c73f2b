"""Connections to PostgreSQL: one place that knows the DSN, the schema and the type codecs.

Every roomlogs connection runs with `search_path` set to the configured schema, so SQL in this package names
tables unqualified, and `jsonb` travels as bytes: orjson-encoded on the way in (binary COPY with no
re-encoding), decoded with orjson on the way out.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import orjson

from pipeline.errors import ConfigurationError, RoomlogsError, StorageUnavailableError

#: SQLSTATE classes that mean "the server is not there, or cannot serve, right now", not "your data is
#: wrong": 08 connection exception, 53 insufficient resources (disk full, out of memory, too many
#: connections), 57P operator intervention (a shutdown, "cannot connect now" while starting or in
#: recovery, the database dropped, an idle session ended). Not the rest of class 57: 57014 is a statement
#: cancelled or timed out, the statement's own problem.
OUTAGE_SQLSTATE_CLASSES = ("08", "53", "57P")


def _sqlstate_classes(prefixes: tuple[str, ...]) -> tuple[type[asyncpg.PostgresError], ...]:
    """asyncpg's exception classes (one per SQLSTATE code) whose code starts with one of `prefixes`."""
    return tuple(
        cls
        for cls in vars(asyncpg.exceptions).values()
        if isinstance(cls, type)
        and issubclass(cls, asyncpg.PostgresError)
        and str(getattr(cls, "sqlstate", "") or "").startswith(prefixes)
    )


#: What means PostgreSQL is away, by SQLSTATE class (above) rather than by a hand-kept list, plus the
#: FATALs of a session the server ended for idling inside a transaction (25P03, 25P04: a worker frozen or
#: cut off inside a transaction meets one when it comes back; see WORKER_SESSION_SETTINGS) and the
#: socket's own failures. The ingest loop pauses and retries on these. asyncpg's InterfaceError
#: ("improper use of the API": a released connection used again, two queries at once on one connection, a
#: closed pool) is a bug and is deliberately not here, so it surfaces instead of being retried forever;
#: its subclass for a lost connection, ConnectionDoesNotExistError, is class 08.
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    *_sqlstate_classes(OUTAGE_SQLSTATE_CLASSES),
    asyncpg.exceptions.IdleInTransactionSessionTimeoutError,
    asyncpg.exceptions.TransactionTimeoutError,
    ConnectionError,
    OSError,
    TimeoutError,
)
#: An outage as the callers of this module meet it: one of the above, or StorageUnavailableError (which
#: `acquire` and `connect` raise for them).
OUTAGES: tuple[type[BaseException], ...] = (StorageUnavailableError, *CONNECTION_ERRORS)
#: What opening a connection may raise besides an outage: a DSN that does not parse (asyncpg's
#: ClientConfigurationError is a ValueError), or PostgreSQL refusing it (no such database or role, a wrong
#: password, an unknown parameter). `connect_failure()` turns each into an error naming the setting.
CONNECT_FAILURES: tuple[type[BaseException], ...] = (
    *CONNECTION_ERRORS,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    ValueError,
    OverflowError,
)

DSN_SETTING = "ROOMLOGS_POSTGRES_DSN"


#: How long opening a connection may take (asyncpg's default), named in the error when it passes.
CONNECT_TIMEOUT_SECONDS = 60.0


def connect_failure(exc: BaseException, setting: str = DSN_SETTING) -> RoomlogsError:
    """The error to raise for `exc` (one of CONNECT_FAILURES) from opening a connection with `setting`.

    An outage is a StorageUnavailableError (retriable); everything a setting must fix is a
    ConfigurationError naming it. Never echoes the DSN (it may hold a password).
    """
    if isinstance(exc, ssl.SSLCertVerificationError):
        return ConfigurationError(
            f"PostgreSQL presented a certificate this client does not trust (certificate verify failed: "
            f"{exc.verify_message}): set sslrootcert in {setting} to the CA that signed it"
        )
    if isinstance(exc, TimeoutError):
        return StorageUnavailableError(
            f"cannot connect to PostgreSQL ({setting}): no answer within {CONNECT_TIMEOUT_SECONDS:g} s "
            "(the host drops the packets, or what listens at that port is not PostgreSQL)"
        )
    if isinstance(exc, CONNECTION_ERRORS):
        detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        return StorageUnavailableError(f"cannot connect to PostgreSQL ({setting}): {detail}")
    if isinstance(exc, asyncpg.PostgresError):
        return ConfigurationError(f"PostgreSQL refused the connection: {exc} (check {setting})")
    return ConfigurationError(f"{setting} is not a usable PostgreSQL DSN: {exc}")


def _encode_jsonb(value: Any) -> bytes:
    # Binary jsonb is a version byte followed by the JSON text.
    return b"\x01" + (value if isinstance(value, bytes) else orjson.dumps(value))


def _decode_jsonb(data: bytes) -> Any:
    return orjson.loads(data[1:])


#: Client side of the same bound as WORKER_SESSION_SETTINGS: (socket option, value). A connection whose
#: server is gone without a word (a cut link, a vanished host, a session the server ended while the link
#: was down) fails in about 11 s instead of waiting for an answer forever.
CLIENT_KEEPALIVE = (
    ("TCP_KEEPIDLE", 5),
    ("TCP_KEEPINTVL", 2),
    ("TCP_KEEPCNT", 3),
    ("TCP_USER_TIMEOUT", 10_000),
)


async def init_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec(
        "jsonb", schema="pg_catalog", encoder=_encode_jsonb, decoder=_decode_jsonb, format="binary"
    )
    _keep_alive(conn)


def _keep_alive(conn: asyncpg.Connection) -> None:
    transport = getattr(conn, "_transport", None)  # asyncpg keeps its asyncio transport there
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return  # a Unix socket: the server's host is ours
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for name, value in CLIENT_KEEPALIVE:
        option = getattr(socket, name, None)
        if option is not None:  # Linux has them all
            sock.setsockopt(socket.IPPROTO_TCP, option, value)


def server_settings(schema: str) -> dict[str, str]:
    return {"search_path": f"{schema},public", "application_name": "roomlogs", "timezone": "UTC"}


async def connect(dsn: str, schema: str, *, setting: str = DSN_SETTING) -> asyncpg.Connection:
    """One connection; a RoomlogsError naming `setting` (the variable the DSN came from) when it fails."""
    if not dsn:
        raise ConfigurationError(f"no PostgreSQL DSN: set {setting} (or use `roomlogs up`)")
    try:
        conn = await asyncpg.connect(
            dsn, server_settings=server_settings(schema), timeout=CONNECT_TIMEOUT_SECONDS
        )
    except CONNECT_FAILURES as e:
        raise connect_failure(e, setting) from e
    await init_connection(conn)
    return conn


#: Sessions of a worker. A worker frozen or cut off inside a transaction holds its offsets' row locks and
#: stalls the worker that takes its partitions over until the server ends that transaction:
#: - idle in it (between statements): ended after `idle_in_transaction_session_timeout`;
#: - in the middle of a statement (a COPY waiting for the rest of its rows) on a link that is cut: the
#:   server's keepalives find the peer gone after 5 s of silence and 3 unanswered probes 2 s apart
#:   (about 11 s; Linux's default is over two hours), `tcp_user_timeout` when it was sending.
#: A frozen process on a live host still answers keepalives (its kernel does): only the idle bound helps.
WORKER_SESSION_SETTINGS = {
    "idle_in_transaction_session_timeout": "10s",
    "tcp_keepalives_idle": "5",
    "tcp_keepalives_interval": "2",
    "tcp_keepalives_count": "3",
    "tcp_user_timeout": "10000",
}


async def create_pool(
    dsn: str, schema: str, size: int, *, session_settings: dict[str, str] | None = None
) -> asyncpg.Pool:
    """A pool whose connections run in `schema`, with `session_settings` (e.g. WORKER_SESSION_SETTINGS)."""
    if not dsn:
        raise ConfigurationError(f"no PostgreSQL DSN: set {DSN_SETTING} (or use `roomlogs up`)")
    try:
        pool = await asyncpg.create_pool(
            dsn,
            min_size=1,
            max_size=size,
            server_settings={**server_settings(schema), **(session_settings or {})},
            init=init_connection,
        )
    except CONNECT_FAILURES as e:
        raise connect_failure(e) from e
    assert pool is not None
    return pool


#: What asyncpg raises, besides connection errors, when the server goes away under an operation: leaving
#: a transaction on a dead connection ("the underlying connection is closed"), or resetting a connection
#: whose operation was cut short ("cannot switch to state N; another operation is in progress"). On a live
#: connection the same errors mean improper use of asyncpg: a bug.
CUT_SHORT_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.InterfaceError,
    asyncpg.exceptions._base.InternalClientError,
)


def lost(exc: BaseException, conn: asyncpg.Connection | None) -> bool:
    """Whether `exc`, raised while using `conn`, means the server went away (an outage, not a bug): a
    connection error, one of CUT_SHORT_ERRORS on a dead connection, or one raised while handling a
    connection error (releasing a connection whose query died with the server)."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, (*CONNECTION_ERRORS, StorageUnavailableError)):
            return True
        cause = cause.__cause__ or cause.__context__
    if not isinstance(exc, CUT_SHORT_ERRORS) or conn is None:
        return False
    try:
        return bool(conn.is_closed())
    except asyncpg.InterfaceError:
        return True  # the pool took the connection back from us because it died


#: How long a connection that failed with one of CUT_SHORT_ERRORS may take to be seen closed.
DYING_CONNECTION_SETTLE_SECONDS = 1.0


async def gone(exc: BaseException, conn: asyncpg.Connection | None) -> bool:
    """`lost()`, after giving a dying connection time to be seen closed.

    A server shutting down sends each session a FATAL message, then closes the socket. asyncpg reads the
    message first: a statement issued in between fails with "another operation is in progress" on a
    connection that still looks open, and only a moment later is it closed. A live connection stays open
    for the whole `DYING_CONNECTION_SETTLE_SECONDS`: then the error is a bug.
    """
    if lost(exc, conn):
        return True
    if conn is None or not isinstance(exc, CUT_SHORT_ERRORS):
        return False
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DYING_CONNECTION_SETTLE_SECONDS
    while loop.time() < deadline:
        await asyncio.sleep(0.02)
        if lost(exc, conn):
            return True
    return False


@contextlib.asynccontextmanager
async def acquire(pool: asyncpg.Pool) -> AsyncIterator[asyncpg.Connection]:
    """`pool.acquire()` for code that waits out outages: losing the server while the connection is in use,
    or while it is being released, raises StorageUnavailableError; an asyncpg error on a live connection
    (a bug) goes through unchanged."""
    held: asyncpg.Connection | None = None
    try:
        async with pool.acquire() as conn:
            held = conn
            try:
                yield conn
            except CUT_SHORT_ERRORS as e:
                if await gone(e, conn):
                    raise StorageUnavailableError(f"PostgreSQL went away: {type(e).__name__}: {e}") from e
                raise
    except CONNECTION_ERRORS as e:
        raise StorageUnavailableError(f"PostgreSQL unavailable: {type(e).__name__}: {e}") from e
    except CUT_SHORT_ERRORS as e:  # raised by the release (asyncpg has closed that connection since)
        if held is not None and (lost(e, None) or not await _reachable(pool)):
            raise StorageUnavailableError(f"PostgreSQL went away: {type(e).__name__}: {e}") from e
        raise


async def _reachable(pool: asyncpg.Pool) -> bool:
    """Whether PostgreSQL answers now. Asked when releasing a connection failed with one of CUT_SHORT_ERRORS
    after the work on it succeeded: a server shutting down sends its FATAL message while the connection is
    idle, and the reset that releasing sends meets it; the connection is closed by then, so whether the
    server is still there tells an outage from a bug."""
    try:
        async with pool.acquire(timeout=DYING_CONNECTION_SETTLE_SECONDS * 5) as conn:
            await conn.fetchval("SELECT 1")
    except (*CONNECTION_ERRORS, *CUT_SHORT_ERRORS):
        return False
    return True
