"""Transparency for a room's owner: who read the room's logs, and how long the logs are kept.

- ``GET /v1/rooms/{room_id}/access-log``: the room's rows of the access audit, newest first (who, identity
  type, basis, a staff member's ticket, action, outcome, rows), cursor-paged. For the owner and for support
  staff with a reason; moderators are refused. The API role cannot read `access_audit`; the rows come from
  `api_room_access_log` (migration 0007), which re-checks the basis and returns this room's rows only.
- ``GET /v1/rooms/{room_id}/retention``: the room's retention class, for each class its stored rows were
  written under the oldest stored day and when it will be purged, and when maintenance last ran; the
  owner and staff also see the room's deletion requests, staff whether a legal hold keeps its rows.

Both are reads of the room: the same grant, the same audit.
"""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any

from starlette.responses import Response

from pipeline.api.access import Action, binding
from pipeline.api.context import Call, JSONResponse
from pipeline.api.errors import Forbidden
from pipeline.storage.classes import retention_days
from pipeline.storage.partitions import day_start

_PAGE_DEFAULT = 50
#: Largest page of the access log.
ACCESS_LOG_PAGE_MAX = 200
_ACCESS_LOG_SQL = """SELECT audit_id, at, subject, identity_type, basis, staff_reason, action, outcome,
                            row_count, detail
                       FROM api_room_access_log($1, $2, $3, $4, $5, $6, $7, $8)"""


def purge_day(day: date, retention_days: int) -> date:
    """The first day on which the partition of `day` is past retention (the inverse of `horizon`)."""
    return day + timedelta(days=retention_days + 1)


async def access_log(call: Call) -> Response:
    """GET /v1/rooms/{room_id}/access-log"""
    room_id = call.path("room_id")
    p = call.params
    limit = p.integer("limit", default=_PAGE_DEFAULT, low=1, high=ACCESS_LOG_PAGE_MAX)
    cursor = p.cursor()
    p.done()
    assert limit is not None
    asked: dict[str, Any] = {"limit": limit, "page": cursor is not None}
    bound = binding("access-log", room_id, call.identity.caller_key)
    async with call.connection() as conn:
        grant = await call.authorize_room(conn, room_id, Action.READ, asked)
        if grant.basis not in ("owner", "staff"):
            raise Forbidden(
                "only the room's owner (or support staff with a reason) may see who read its logs"
            )
        before_at: datetime | None = None
        before_id: int | None = None
        if cursor:
            (before_at, marker), _ = call.state.cursors.decode(cursor, bound)
            before_id = marker.int
        rows = await conn.fetch(
            _ACCESS_LOG_SQL,
            room_id,
            call.identity.subject,
            call.identity.kind.value,
            grant.basis,
            grant.staff_reason,
            before_at,
            before_id,
            limit + 1,
        )
        next_cursor = None
        if len(rows) > limit:
            rows = rows[:limit]
            last = rows[-1]
            position = (last["at"], uuid.UUID(int=last["audit_id"]))
            next_cursor = call.state.cursors.encode(bound, position, (last["at"], last["at"]))
        await call.audit(
            conn,
            call.entry(grant=grant, filters=asked, row_count=len(rows)),
        )
    return JSONResponse(
        {
            "room_id": room_id,
            "entries": [
                {
                    "at": r["at"],
                    "subject": r["subject"],
                    "identity_type": r["identity_type"],
                    "basis": r["basis"],
                    "staff_reason": r["staff_reason"],
                    "action": r["action"],
                    "outcome": r["outcome"],
                    "row_count": r["row_count"],
                    "detail": r["detail"],
                }
                for r in rows
            ],
            "next_cursor": next_cursor,
        }
    )


async def room_retention(call: Call) -> Response:
    """GET /v1/rooms/{room_id}/retention"""
    room_id = call.path("room_id")
    call.params.done()
    today = call.params.now.astimezone(UTC).date()
    async with call.connection() as conn:
        grant = await call.authorize_room(conn, room_id, Action.READ, {})
        room = await conn.fetchrow("SELECT privacy, retention_class FROM rooms WHERE room_id = $1", room_id)
        classes = await retention_days(conn)
        stored: list[dict[str, Any]] = []
        for name, days in classes.items():
            oldest = await conn.fetchval(
                "SELECT min(occurred_at) FROM events WHERE room_id = $1 AND retention_class = $2",
                room_id,
                name,
            )
            if oldest is None:
                continue
            oldest_day = oldest.astimezone(UTC).date()
            purge = max(purge_day(oldest_day, days), today)
            stored.append(
                {
                    "retention_class": name,
                    "retention_days": days,
                    "oldest_day": oldest_day.isoformat(),
                    "next_purge_on": purge.isoformat(),
                    "next_purge_after": day_start(purge),
                }
            )
        state = await conn.fetchrow(
            "SELECT held, last_maintenance_at FROM api_room_retention_state($1)", room_id
        )
        assert state is not None
        deletions: list[dict[str, Any]] | None = None
        if grant.basis in ("owner", "staff"):
            deletions = [
                dict(r.items())
                for r in await conn.fetch(
                    """SELECT requested_at, requested_by, identity_type, basis, reason, rows_deleted
                         FROM deletion_requests WHERE room_id = $1 ORDER BY requested_at DESC LIMIT 50""",
                    room_id,
                )
            ]
        await call.audit(
            conn,
            call.entry(grant=grant, filters={}, row_count=len(stored)),
        )
    current_class = room["retention_class"] if room is not None else None
    return JSONResponse(
        {
            "room_id": room_id,
            "retention_class": current_class,
            "retention_days": classes.get(current_class) if current_class else None,
            "stored": stored,
            "next_purge_after": min((s["next_purge_after"] for s in stored), default=None),
            "last_maintenance_at": state["last_maintenance_at"],
            "legal_hold": state["held"] if grant.basis == "staff" else None,
            "deletion_requests": deletions,
        }
    )
