"""The access audit: one append-only row per read, refusal, stream and deletion.

Called by the route handlers after a read and before its answer leaves: if the audit row cannot be
written, the caller gets an error instead of the data (no unrecorded read). Streams (export, live tail)
write a `started` row before the first byte and a `finished` or `aborted` row with the row count at the end.
The API's database role may only INSERT here; triggers refuse UPDATE, DELETE and TRUNCATE for everyone.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import orjson

from pipeline.api.access import Grant
from pipeline.api.auth import Identity

_INSERT = """INSERT INTO access_audit
    (request_id, subject, identity_type, basis, staff_reason, action, room_id, user_id, filters, row_count,
     outcome, detail)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"""


@dataclass(slots=True)
class AuditEntry:
    request_id: uuid.UUID
    identity: Identity
    action: str
    grant: Grant | None = None
    room_id: str | None = None
    user_id: str | None = None
    filters: dict[str, Any] = field(default_factory=dict)
    row_count: int | None = None
    outcome: str = "ok"
    detail: str | None = None

    def args(self) -> tuple[Any, ...]:
        g = self.grant
        return (
            self.request_id,
            self.identity.subject,
            self.identity.kind.value,
            g.basis if g else None,
            g.staff_reason if g else None,
            self.action,
            self.room_id,
            self.user_id,
            orjson.dumps(self.filters, option=orjson.OPT_UTC_Z),
            self.row_count,
            self.outcome,
            self.detail[:500] if self.detail else None,
        )


async def record(conn: asyncpg.Connection, entry: AuditEntry) -> None:
    """Append one audit row (filters travel as JSON bytes through the connection's jsonb codec)."""
    await conn.execute(_INSERT, *entry.args())
