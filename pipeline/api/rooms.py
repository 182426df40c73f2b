"""Routes the room console needs beyond the log reads: my rooms, and an event with its context.

- ``GET /v1/me/rooms``: the rooms the caller owns or moderates (for support staff too: their own rooms;
  staff open other rooms by id, with a reason). Services have no rooms of their own.
- ``GET /v1/rooms/{room_id}/events/{event_id}/context``: the event and the events just before and after
  it in the room (a reported message in its conversation), under the same grant and audit as any read.

Each handler: parameters (400 on anything odd) -> authorization (403) -> query -> audit -> answer.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import asyncpg
from starlette.responses import Response

from pipeline.api import queries
from pipeline.api.access import Action, Grant
from pipeline.api.auth import IdentityKind
from pipeline.api.context import Call, JSONResponse
from pipeline.api.errors import Forbidden, InvalidParameter, NotFound

_MAX_ROOMS = 500
_CONTEXT_DEFAULT = 10
#: Most events an event's context shows on either side.
CONTEXT_MAX = 50
#: How far around the event its context is looked for (a conversation, not a day).
_CONTEXT_SPAN = timedelta(hours=6)
#: Activity older than this does not make a room's "last activity" (keeps the query to recent partitions).
_ACTIVITY_HORIZON = timedelta(days=31)

_MY_ROOMS_SQL = """
WITH mine AS (
    SELECT room_id, 'owner' AS role FROM rooms WHERE owner_id = $1
    UNION
    SELECT m.room_id, 'moderator' FROM room_moderators m WHERE m.user_id = $1
      AND NOT EXISTS (SELECT 1 FROM rooms r WHERE r.room_id = m.room_id AND r.owner_id = $1)
)
SELECT mine.room_id, mine.role, r.privacy, r.retention_class,
       (SELECT max(e.occurred_at) FROM events e
         WHERE e.room_id = mine.room_id AND e.occurred_at >= $2) AS last_activity
  FROM mine LEFT JOIN rooms r USING (room_id)
 ORDER BY mine.role DESC, mine.room_id
 LIMIT $3
"""


async def my_rooms(call: Call) -> Response:
    """GET /v1/me/rooms"""
    call.params.done()
    identity = call.identity
    if identity.kind is IdentityKind.SERVICE:
        raise Forbidden("services have no rooms of their own; they read with scopes")
    grant = call.granted(Grant("room_roles"))
    async with call.connection() as conn:
        since = call.params.now - _ACTIVITY_HORIZON
        rows = await conn.fetch(_MY_ROOMS_SQL, identity.subject, since, _MAX_ROOMS)
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
                }
                for r in rows
            ],
        }
    )


async def event_context(call: Call) -> Response:
    """GET /v1/rooms/{room_id}/events/{event_id}/context"""
    room_id = call.path("room_id")
    event_id = _event_id(call)
    p = call.params
    before = p.integer("before", default=_CONTEXT_DEFAULT, low=0, high=CONTEXT_MAX)
    after = p.integer("after", default=_CONTEXT_DEFAULT, low=0, high=CONTEXT_MAX)
    p.done()
    assert before is not None and after is not None
    asked: dict[str, Any] = {"event_id": str(event_id), "before": before, "after": after}
    async with call.connection() as conn:
        grant = await call.authorize_room(conn, room_id, Action.READ, asked)
        event = await queries.one_event(conn, room_id, event_id)
        earlier: list[asyncpg.Record] = []
        later: list[asyncpg.Record] = []
        if event is not None:
            earlier = await _around(conn, room_id, event, "<", before)
            later = await _around(conn, room_id, event, ">", after)
        rows = (0 if event is None else 1) + len(earlier) + len(later)
        await call.audit(
            conn,
            call.entry(grant=grant, filters=asked, row_count=rows),
        )
    if event is None:
        raise NotFound("no such event in this room")
    call.state.metrics.rows.labels(call.route).inc(rows)
    return JSONResponse(
        {
            "room_id": room_id,
            "event": queries.event_json(event),
            "before": [queries.event_json(r) for r in reversed(earlier)],
            "after": [queries.event_json(r) for r in later],
        }
    )


async def _around(
    conn: asyncpg.Connection, room_id: str, event: asyncpg.Record, side: str, limit: int
) -> list[asyncpg.Record]:
    """Up to `limit` events of the room just before (`<`) or after (`>`) `event`, nearest first."""
    if limit == 0:
        return []
    moment, event_id = event["occurred_at"], event["event_id"]
    if side == "<":
        bound, direction = "occurred_at >= $4 AND occurred_at <= $2", "DESC"
        edge = moment - _CONTEXT_SPAN
    else:
        bound, direction = "occurred_at <= $4 AND occurred_at >= $2", "ASC"
        edge = moment + _CONTEXT_SPAN
    sql = (
        f"SELECT {queries.COLUMNS} FROM events WHERE room_id = $1 AND {bound} "
        f"AND (occurred_at, event_id) {side} ($2, $3) "
        f"ORDER BY occurred_at {direction}, event_id {direction} LIMIT $5"
    )
    return list(await conn.fetch(sql, room_id, moment, event_id, edge, limit))


def _event_id(call: Call) -> uuid.UUID:
    raw = str(call.request.path_params["event_id"])
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise InvalidParameter("event_id must be a UUID", details={"parameter": "event_id"}) from None
