"""The access audit's one statement: append a row. The API's role may only INSERT into `access_audit`;
triggers refuse UPDATE, DELETE and TRUNCATE for everyone (migration 0003).

Called by `security.audit.record` (a handler's read, a stream's start and end, a deletion in its own
transaction) and `ApiState.record_apart` (refusals and errors, on a connection of their own).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import asyncpg

__all__ = ["COLUMNS", "append"]

#: The columns a row gives, in the order the INSERT takes them.
COLUMNS = (
    "request_id",
    "subject",
    "identity_type",
    "basis",
    "staff_reason",
    "action",
    "room_id",
    "user_id",
    "filters",
    "row_count",
    "outcome",
    "detail",
    "http_status",
    "client_request_id",
    "occurrences",
)
_INSERT = (
    f"INSERT INTO access_audit ({', '.join(COLUMNS)}) "
    f"VALUES ({', '.join(f'${i}' for i in range(1, len(COLUMNS) + 1))})"
)


async def append(conn: asyncpg.Connection, row: Mapping[str, Any]) -> None:
    """Append one row: a value for each of `COLUMNS` (filters as JSON bytes, through the jsonb codec)."""
    await conn.execute(_INSERT, *(row[column] for column in COLUMNS))
