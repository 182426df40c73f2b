"""Who read a room's logs: ``GET /v1/rooms/{room_id}/access-log``, for the room's owner.

The room's rows of the access audit, newest first (who, identity type, basis, a staff member's ticket,
action, outcome, rows), cursor-paged, filtered by `subject` (who), `action` (what), `outcome`, and
`exclude_own=true` (without the caller's own reads: the console folds them away by default). For the owner
and for support staff with a reason; moderators are refused. The rows come from `queries.access_log`
(the API's role cannot read `access_audit` itself). It is a read of the room: the same grant, the same audit.
"""

from __future__ import annotations

import re
import uuid
from datetime import datetime
from typing import Any

from starlette.responses import Response

from pipeline.api.context import Call, JSONResponse
from pipeline.api.errors import Forbidden
from pipeline.api.queries.access_log import AccessLogFilter, room_access_log
from pipeline.api.security.access import Action
from pipeline.api.security.cursors import binding

__all__ = ["ACCESS_LOG_PAGE_MAX", "AUDIT_OUTCOMES", "access_log"]

_PAGE_DEFAULT = 50
#: Largest page of the access log.
ACCESS_LOG_PAGE_MAX = 200
#: access_audit.outcome's values (migration 0005's CHECK)
AUDIT_OUTCOMES = ("ok", "denied", "rejected", "rate_limited", "error", "started", "finished", "aborted")
#: the shape of an audit action (the route table's names: events.list, access_log.read, ...)
_ACTION = re.compile(r"[a-z][a-z_]{0,30}(\.[a-z_]{1,30})?")


async def access_log(call: Call) -> Response:
    """GET /v1/rooms/{room_id}/access-log"""
    room_id = call.path("room_id")
    p = call.params
    limit = p.integer("limit", default=_PAGE_DEFAULT, low=1, high=ACCESS_LOG_PAGE_MAX)
    cursor = p.cursor()
    subject = p.ident("subject")
    action = p.matching("action", _ACTION, "an audit action such as events.list")
    outcome = p.choice("outcome", AUDIT_OUTCOMES, "") or None
    exclude_own = p.choice("exclude_own", ("true", "false"), "false") == "true"
    p.done()
    assert limit is not None
    where = AccessLogFilter(subject, action, outcome, call.identity.subject if exclude_own else None)
    asked: dict[str, Any] = {"limit": limit, "page": cursor is not None}
    asked.update({k: v for k, v in (("subject", subject), ("action", action), ("outcome", outcome)) if v})
    if exclude_own:
        asked["exclude_own"] = True
    bound = binding("access-log", room_id, call.identity.caller_key, subject, action, outcome, exclude_own)
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
            where,
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
