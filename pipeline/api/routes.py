"""Read routes: a room's events, one event, a room's days, a user's moderation history.

Each handler: parameters (400 on anything odd) -> authorization (403) -> query -> audit -> answer.
A refusal is raised; the gate answers it and audits it.
"""

from __future__ import annotations

import uuid
from datetime import date, timedelta
from typing import Any

from starlette.responses import Response

from pipeline.api import queries
from pipeline.api.access import Action, Grant, binding
from pipeline.api.context import Call, JSONResponse
from pipeline.api.daycounts import day_counts
from pipeline.api.errors import InvalidParameter, NotFound, RangeTooLarge
from pipeline.api.params import MODERATION_TYPE_VALUES, resolve_range

ORDERS = ("desc", "asc")
ROLES = ("target", "actor", "any")
_DEFAULT_SPAN = timedelta(days=1)
_HISTORY_SPAN = timedelta(days=30)
_DAYS_SPAN = 30


def _page(call: Call) -> tuple[str, int, str | None]:
    p = call.params
    order = p.choice("order", ORDERS, "desc")
    limit = p.integer(
        "limit", default=call.settings.default_page_size, low=1, high=call.settings.max_page_size
    )
    assert limit is not None
    return order, limit, p.cursor()


async def list_events(call: Call) -> Response:
    """GET /v1/rooms/{room_id}/events"""
    room_id = call.path("room_id")
    p = call.params
    explicit = p.explicit_range()
    filters = p.filters()
    order, limit, cursor = _page(call)
    p.done()
    s = call.settings
    bound = binding("events", room_id, filters.as_dict(), order, call.identity.caller_key)
    asked: dict[str, Any] = {**filters.as_dict(), "order": order, "limit": limit, "page": cursor is not None}
    async with call.connection() as conn:
        grant = await call.authorize_room(conn, room_id, Action.READ, asked)
        after, from_cursor = call.state.cursors.decode(cursor, bound) if cursor else (None, None)
        rng = resolve_range(
            explicit, from_cursor, call.params.now, default=_DEFAULT_SPAN, max_days=s.max_range_days
        )
        rows = await queries.room_events(conn, room_id, rng, filters, order, after, limit)
        rows, next_cursor = _next_page(call, rows, limit, bound, (rng.since, rng.until))
        await call.audit(
            conn,
            call.entry(grant=grant, filters={**asked, **rng.as_dict()}, row_count=len(rows)),
        )
    call.state.metrics.rows.labels(call.route).inc(len(rows))
    return JSONResponse(
        {
            "room_id": room_id,
            "since": rng.since,
            "until": rng.until,
            "events": [queries.event_json(r) for r in rows],
            "next_cursor": next_cursor,
        }
    )


def _next_page(call: Call, rows: list[Any], limit: int, bound: str, rng: Any) -> tuple[list[Any], str | None]:
    if len(rows) <= limit:
        return rows, None
    rows = rows[:limit]
    last = rows[-1]
    return rows, call.state.cursors.encode(bound, (last["occurred_at"], last["event_id"]), rng)


async def get_event(call: Call) -> Response:
    """GET /v1/rooms/{room_id}/events/{event_id}"""
    room_id = call.path("room_id")
    raw_id = str(call.request.path_params["event_id"])
    try:
        event_id = uuid.UUID(raw_id)
    except ValueError:
        raise InvalidParameter("event_id must be a UUID", details={"parameter": "event_id"}) from None
    call.params.done()
    asked = {"event_id": str(event_id)}
    async with call.connection() as conn:
        grant = await call.authorize_room(conn, room_id, Action.READ, asked)
        row = await queries.one_event(conn, room_id, event_id)
        if row is None:
            raise NotFound("no such event in this room")
        await call.audit(conn, call.entry(grant=grant, filters=asked, row_count=1))
    call.state.metrics.rows.labels(call.route).inc()
    return JSONResponse(queries.event_json(row))


async def room_days(call: Call) -> Response:
    """GET /v1/rooms/{room_id}/days"""
    room_id = call.path("room_id")
    p = call.params
    today = p.now.date()
    first = p.date("from")
    last = p.date("to")
    p.done()
    if last is None:
        last = today if first is None else min(today, first + timedelta(days=_DAYS_SPAN - 1))
    if first is None:
        first = last - timedelta(days=_DAYS_SPAN - 1)
    if first > last:
        raise InvalidParameter("from must not be after to", details={"parameter": "from"})
    max_days = call.settings.max_days_range_days
    if (last - first).days + 1 > max_days:
        raise RangeTooLarge(f"at most {max_days} days at once", details={"max_days": max_days})
    asked = {"from": first.isoformat(), "to": last.isoformat()}
    async with call.connection() as conn:
        grant = await call.authorize_room(conn, room_id, Action.READ, asked)
        rows = await day_counts(call.state, conn, room_id, first, last, today)
        days: dict[date, dict[str, Any]] = {}
        for r in rows:
            day = days.setdefault(r["day"], {"day": r["day"].isoformat(), "total": 0, "by_type": {}})
            day["by_type"][r["type"]] = r["n"]
            day["total"] += r["n"]
        await call.audit(conn, call.entry(grant=grant, filters=asked, row_count=len(days)))
    return JSONResponse(
        {"room_id": room_id, "from": asked["from"], "to": asked["to"], "days": list(days.values())}
    )


async def moderation_history(call: Call) -> Response:
    """GET /v1/users/{user_id}/moderation"""
    user_id = call.path("user_id")
    p = call.params
    explicit = p.explicit_range()
    role = p.choice("role", ROLES, "target")
    types = list(p.types(MODERATION_TYPE_VALUES))
    order, limit, cursor = _page(call)
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
        rows = await queries.moderation_history(
            conn, user_id, role, rng, types, restrict, order, after, limit
        )
        rows, next_cursor = _next_page(call, rows, limit, bound, (rng.since, rng.until))
        await call.audit(
            conn,
            call.entry(grant=grant, filters={**asked, **rng.as_dict()}, row_count=len(rows)),
        )
    call.state.metrics.rows.labels(call.route).inc(len(rows))
    return JSONResponse(
        {
            "user_id": user_id,
            "since": rng.since,
            "until": rng.until,
            "scope": "all_rooms" if grant.all_rooms else "rooms_you_own_or_moderate",
            "events": [queries.event_json(r) for r in rows],
            "next_cursor": next_cursor,
        }
    )
