"""Who read a room's logs: ``GET /v1/rooms/{room_id}/access-log``, for the room's owner.

The room's rows of the access audit, newest first (who, identity type, basis, a staff member's ticket,
action, outcome, rows), cursor-paged. For the owner and for support staff with a reason; moderators are
refused. The rows come from `queries.access_log` (the API's role cannot read `access_audit` itself).
It is a read of the room: the same grant, the same audit.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from starlette.responses import Response

from pipeline.api.context import Call, JSONResponse
from pipeline.api.errors import Forbidden
from pipeline.api.queries.access_log import room_access_log
from pipeline.api.security.access import Action
from pipeline.api.security.cursors import binding

__all__ = ["ACCESS_LOG_PAGE_MAX", "access_log"]

_PAGE_DEFAULT = 50
#: Largest page of the access log.
ACCESS_LOG_PAGE_MAX = 200


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
        rows = await room_access_log(
            conn,
            room_id,
            call.identity.subject,
            call.identity.kind.value,
            grant.basis,
            grant.staff_reason,
            (before_at, before_id),
            limit + 1,
        )
        next_cursor = None
        if len(rows) > limit:
            rows = rows[:limit]
            last = rows[-1]
            position = (last["at"], uuid.UUID(int=last["audit_id"]))
            next_cursor = call.state.cursors.encode(bound, position, (last["at"], last["at"]))
        await call.audit(conn, call.entry(grant=grant, filters=asked, row_count=len(rows)))
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
