"""A user's moderation history across rooms: ``GET /v1/users/{user_id}/moderation``.

Services need the moderation:read scope, staff who state a reason see every room; anyone else sees the
rooms they own or moderate (`basis` room_roles). Cursor-paged like a room's events.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from starlette.responses import Response

from pipeline.api.context import Call, JSONResponse
from pipeline.api.handlers.paging import finish_page, page_of_events, page_request
from pipeline.api.params import MODERATION_TYPE_VALUES, resolve_range
from pipeline.api.queries.moderation import moderation_history as history_rows
from pipeline.api.security.access import Grant
from pipeline.api.security.cursors import binding

__all__ = ["ROLES", "moderation_history"]

#: The user as the one moderated (target), the moderator (actor), or either (any).
ROLES = ("target", "actor", "any")
_HISTORY_SPAN = timedelta(days=30)


async def moderation_history(call: Call) -> Response:
    """GET /v1/users/{user_id}/moderation"""
    user_id = call.path("user_id")
    p = call.params
    explicit = p.explicit_range()
    role = p.choice("role", ROLES, "target")
    types = list(p.types(MODERATION_TYPE_VALUES))
    order, limit, cursor = page_request(call)
    p.done()
    s = call.settings
    asked: dict[str, Any] = {
        "role": role,
        "types": types,
        "order": order,
        "limit": limit,
        "page": cursor is not None,
    }
    call.asking(asked)
    grant: Grant = call.granted(call.state.policy.across_rooms(call.identity, call.stated_reason))
    bound = binding("moderation", user_id, role, types, order, grant.basis, call.identity.caller_key)
    async with call.connection() as conn:
        after, from_cursor = call.state.cursors.decode(cursor, bound) if cursor else (None, None)
        rng = resolve_range(explicit, from_cursor, p.now, default=_HISTORY_SPAN, max_days=s.max_range_days)
        restrict = None if grant.all_rooms else call.identity.subject
        rows = await history_rows(conn, user_id, role, rng, types, restrict, order, after, limit)
        rows, next_cursor = await finish_page(call, conn, grant, asked, rng, rows, limit, bound)
    scope = "all_rooms" if grant.all_rooms else "rooms_you_own_or_moderate"
    return JSONResponse(page_of_events(call, {"user_id": user_id}, rng, rows, next_cursor, scope=scope))
