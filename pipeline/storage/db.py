"""Connections to PostgreSQL: one place that knows the DSN, the schema and the type codecs.

Every roomlogs connection runs with `search_path` set to the configured schema, so SQL in this package names
tables unqualified, and `jsonb` travels as bytes: orjson-encoded on the way in (binary COPY with no
re-encoding), decoded with orjson on the way out.
"""

from __future__ import annotations

from typing import Any

import asyncpg
import orjson

from pipeline.errors import ConfigurationError, StorageUnavailableError

#: asyncpg/OS exceptions that mean "the server is not there right now", not "your data is wrong".
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
    asyncpg.exceptions.ConnectionFailureError,
    asyncpg.exceptions.TooManyConnectionsError,
    ConnectionError,
    OSError,
    TimeoutError,
)


def _encode_jsonb(value: Any) -> bytes:
    # Binary jsonb is a version byte followed by the JSON text.
    return b"\x01" + (value if isinstance(value, bytes) else orjson.dumps(value))


def _decode_jsonb(data: bytes) -> Any:
    return orjson.loads(data[1:])


async def init_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec(
        "jsonb", schema="pg_catalog", encoder=_encode_jsonb, decoder=_decode_jsonb, format="binary"
    )


def server_settings(schema: str) -> dict[str, str]:
    return {"search_path": f"{schema},public", "application_name": "roomlogs", "timezone": "UTC"}


async def connect(dsn: str, schema: str) -> asyncpg.Connection:
    if not dsn:
        raise ConfigurationError("no PostgreSQL DSN: set ROOMLOGS_POSTGRES_DSN (or use `roomlogs up`)")
    try:
        conn = await asyncpg.connect(dsn, server_settings=server_settings(schema))
    except CONNECTION_ERRORS as e:
        raise StorageUnavailableError(f"cannot connect to PostgreSQL: {e}") from e
    await init_connection(conn)
    return conn


async def create_pool(dsn: str, schema: str, size: int) -> asyncpg.Pool:
    if not dsn:
        raise ConfigurationError("no PostgreSQL DSN: set ROOMLOGS_POSTGRES_DSN (or use `roomlogs up`)")
    try:
        pool = await asyncpg.create_pool(
            dsn,
            min_size=1,
            max_size=size,
            server_settings=server_settings(schema),
            init=init_connection,
        )
    except CONNECTION_ERRORS as e:
        raise StorageUnavailableError(f"cannot connect to PostgreSQL: {e}") from e
    assert pool is not None
    return pool
