"""The access audit: one append-only row per read, stream, deletion, refusal and error.

Two writers, both before the answer leaves:

- the route handlers record what they did: a read, a deletion, the start and the end of a stream. If that
  row cannot be written the caller gets an error instead of the data (no unrecorded read);
- `pipeline.api.security.gate` records every refusal and error of every /v1 request, from the request's
  `Exchange` (who asked, what for, about which room or user), which the gate and the handler fill in as
  they learn it. 429s go through `security.floods` so that a flood of them costs a bounded number of rows.

Every row carries the server's `request_id` (also the key of a deletion request); a client's own
`X-Request-Id` is kept only as `client_request_id`, a label that is never a key.
The API's database role may only INSERT here (`pipeline.api.queries.audit`); triggers refuse UPDATE,
DELETE and TRUNCATE for everyone.
"""

from __future__ import annotations

import dataclasses
import uuid
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import orjson

from pipeline.api.errors import ApiError
from pipeline.api.queries.audit import append
from pipeline.api.security.access import Grant
from pipeline.api.security.auth import Identity

#: `subject` and `identity_type` of a row whose caller proved no identity (a 401, an unmatched token).
ANONYMOUS = "anonymous"
#: `action` of a request that matched no route.
UNMATCHED = "unmatched"


@dataclass(slots=True)
class AuditEntry:
    request_id: uuid.UUID
    identity: Identity | None
    action: str
    grant: Grant | None = None
    room_id: str | None = None
    user_id: str | None = None
    filters: dict[str, Any] = field(default_factory=dict)
    row_count: int | None = None
    outcome: str = "ok"
    #: the error code of a refusal, or how a stream ended
    detail: str | None = None
    http_status: int | None = None
    client_request_id: str | None = None
    #: how many requests this row stands for (more than 1 only for tallied 429s)
    occurrences: int = 1

    @property
    def caller(self) -> tuple[str, str]:
        """(subject, identity type) as recorded."""
        if self.identity is None:
            return ANONYMOUS, ANONYMOUS
        return self.identity.subject, self.identity.kind.value

    def replace(self, **changes: Any) -> AuditEntry:
        return dataclasses.replace(self, **changes)

    def row(self) -> dict[str, Any]:
        """The access_audit row (`queries.audit.COLUMNS`)."""
        g = self.grant
        subject, identity_type = self.caller
        return {
            "request_id": self.request_id,
            "subject": subject,
            "identity_type": identity_type,
            "basis": g.basis if g else None,
            "staff_reason": g.staff_reason if g else None,
            "action": self.action,
            "room_id": self.room_id,
            "user_id": self.user_id,
            "filters": orjson.dumps(self.filters, option=orjson.OPT_UTC_Z),
            "row_count": self.row_count,
            "outcome": self.outcome,
            "detail": self.detail[:500] if self.detail else None,
            "http_status": self.http_status,
            "client_request_id": self.client_request_id,
            "occurrences": self.occurrences,
        }


@dataclass(slots=True)
class Exchange:
    """What is known about one /v1 request so far. The gate creates it (request ids, route, caller), the
    handler adds what it learns (filters, grant); the gate audits a refusal from it."""

    request_id: uuid.UUID
    client_request_id: str | None = None
    #: the route template (a metrics label), None when no route matched
    route: str | None = None
    action: str = UNMATCHED
    identity: Identity | None = None
    #: the `sub` a refused token claimed: recorded in the row's filters, never as its subject
    unverified_subject: str | None = None
    grant: Grant | None = None
    room_id: str | None = None
    user_id: str | None = None
    filters: dict[str, Any] = field(default_factory=dict)

    def entry(self, *, http_status: int = 200, **fields: Any) -> AuditEntry:
        """A row about this request (room, user and action default to the exchange's)."""
        base: dict[str, Any] = {"room_id": self.room_id, "user_id": self.user_id, "action": self.action}
        return AuditEntry(
            request_id=self.request_id,
            identity=self.identity,
            client_request_id=self.client_request_id,
            http_status=http_status,
            **{**base, **fields},
        )

    def refusal(self, error: ApiError) -> AuditEntry:
        """The row recording that this request was answered with `error`."""
        filters = dict(self.filters)
        if self.identity is None and self.unverified_subject is not None:
            filters["unverified_subject"] = self.unverified_subject
        return self.entry(
            http_status=error.status,
            grant=self.grant,
            filters=filters,
            outcome=error.outcome,
            detail=error.code,
        )


async def record(conn: asyncpg.Connection, entry: AuditEntry) -> None:
    """Append one audit row (filters travel as JSON bytes through the connection's jsonb codec)."""
    await append(conn, entry.row())
