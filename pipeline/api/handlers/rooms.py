"""The caller's rooms: ``GET /v1/me/rooms``, the rooms the caller owns or moderates.

For support staff too: their own rooms (staff open other rooms by id, with a reason). Services have no
rooms of their own. The console's start page; each room says how many alerts its last `ALERTS_SPAN` raised.
"""

from __future__ import annotations

from datetime import timedelta

from starlette.responses import Response

from pipeline.api.context import Call, JSONResponse
from pipeline.api.errors import Forbidden
from pipeline.api.queries.alerts import recent_counts
from pipeline.api.queries.rooms import my_rooms as my_room_rows
from pipeline.api.security.access import Grant
from pipeline.api.security.auth import IdentityKind

__all__ = ["ALERTS_SPAN", "my_rooms"]

_MAX_ROOMS = 500
#: Activity older than this does not make a room's "last activity" (keeps the query to recent partitions).
_ACTIVITY_HORIZON = timedelta(days=31)
#: A room's `alerts`: those whose window started in this last span (the console's badge on the room).
ALERTS_SPAN = timedelta(days=7)


async def my_rooms(call: Call) -> Response:
    """GET /v1/me/rooms"""
    call.params.done()
    identity = call.identity
    if identity.kind is IdentityKind.SERVICE:
        raise Forbidden("services have no rooms of their own; they read with scopes")
    grant = call.granted(Grant("room_roles"))
    async with call.connection() as conn:
        since = call.params.now - _ACTIVITY_HORIZON
        rows = await my_room_rows(conn, identity.subject, since, _MAX_ROOMS)
        alerts = await recent_counts(conn, [r["room_id"] for r in rows], call.params.now - ALERTS_SPAN)
        await call.audit(conn, call.entry(grant=grant, filters={}, row_count=len(rows)))
    return JSONResponse(
        {
            "subject": identity.subject,
            "rooms": [
                {
                    "room_id": r["room_id"],
                    "role": r["role"],
                    "privacy": r["privacy"],
                    "retention_class": r["retention_class"],
                    "last_activity": r["last_activity"],
                    "alerts": alerts.get(r["room_id"], 0),
                }
                for r in rows
            ],
        }
    )
