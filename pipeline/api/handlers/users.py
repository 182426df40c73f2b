"""A user's record in a room, as a room's owner, moderators and support staff see it (a user card).

- ``GET /v1/rooms/{room_id}/users/{user_id}``: over the UTC days `from`..`to` (default: the last
  `RECORD_DAYS`), what the user did (events per type: messages, entries, gifts...), what was done to them
  (warnings, mutes, kicks, bans received, per type), when they were first and last seen, on how many days,
  their last display name, and the newest alerts of the room that name them (of any day still kept);
- ``GET /v1/rooms/{room_id}/users/{user_id}/events``: their events, cursor-paged like a room's events:
  `role=actor` (default) what they did, `role=target` what was done to them.

Same grant as reading the room's logs (`Action.READ`), and every read is audited with the user's id. A
user with no rows in the room gets an empty record, never a 404: whether a user was ever in a room is
itself a read of its logs.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from starlette.responses import Response

from pipeline.api.context import Call, JSONResponse
from pipeline.api.errors import InvalidParameter, RangeTooLarge
from pipeline.api.handlers.paging import finish_page, page_of_events, page_request
from pipeline.api.params import EVENT_TYPES, resolve_range
from pipeline.api.queries import users
from pipeline.api.queries.alerts import alert_json, user_alerts
from pipeline.api.security.access import Action
from pipeline.api.security.cursors import binding
from pipeline.storage.partitions import day_start

__all__ = ["RECORD_ALERTS", "RECORD_DAYS", "ROLES", "user_events", "user_record"]

#: Days a record covers when the request names none.
RECORD_DAYS = 90
#: Alerts naming the user a record lists: the newest, of any day the room's retention keeps.
RECORD_ALERTS = 20
#: The user as the one acting (actor) or the one acted on (target).
ROLES = ("actor", "target")


async def user_record(call: Call) -> Response:
    """GET /v1/rooms/{room_id}/users/{user_id}"""
    room_id = call.path("room_id")
    user_id = call.path("user_id")
    p = call.params
    first, last = _days(call, p.date("from"), p.date("to"))
    p.done()
    asked = {"from": first.isoformat(), "to": last.isoformat()}
    since, until = day_start(first), day_start(last + timedelta(days=1))
    async with call.connection() as conn:
        grant = await call.authorize_room(conn, room_id, Action.READ, asked)
        did = await users.actor_days(conn, room_id, user_id, first, last, list(EVENT_TYPES))
        got = await users.received(conn, room_id, user_id, since, until)
        alerts = await user_alerts(conn, room_id, user_id, RECORD_ALERTS + 1)
        rows = len(did) + len(got) + min(len(alerts), RECORD_ALERTS)
        await call.audit(conn, call.entry(grant=grant, filters=asked, row_count=rows))
    call.state.metrics.rows.labels(call.route).inc(rows)
    actions: dict[str, int] = {}
    for r in did:
        actions[r["type"]] = actions.get(r["type"], 0) + int(r["n"])
    latest = max(did, key=lambda r: r["last_at"], default=None)
    moments = [r["first_at"] for r in (*did, *got)] + [r["last_at"] for r in (*did, *got)]
    return JSONResponse(
        {
            "room_id": room_id,
            "user_id": user_id,
            **asked,
            "display_name": None if latest is None else latest["display_name"],
            "first_seen": min(moments, default=None),
            "last_seen": max(moments, default=None),
            "days_active": len({r["day"] for r in did}),
            "actions": dict(sorted(actions.items())),
            "received": {r["type"]: int(r["n"]) for r in got},
            "alerts": [alert_json(r) for r in alerts[:RECORD_ALERTS]],
            "more_alerts": len(alerts) > RECORD_ALERTS,
        }
    )


async def user_events(call: Call) -> Response:
    """GET /v1/rooms/{room_id}/users/{user_id}/events"""
    room_id = call.path("room_id")
    user_id = call.path("user_id")
    p = call.params
    explicit = p.explicit_range()
    role = p.choice("role", ROLES, "actor")
    types = list(p.types() or EVENT_TYPES)
    order, limit, cursor = page_request(call)
    p.done()
    s = call.settings
    bound = binding("user_events", room_id, user_id, role, types, order, call.identity.caller_key)
    asked: dict[str, Any] = {
        "role": role,
        "types": types,
        "order": order,
        "limit": limit,
        "page": cursor is not None,
    }
    async with call.connection() as conn:
        grant = await call.authorize_room(conn, room_id, Action.READ, asked)
        after, from_cursor = call.state.cursors.decode(cursor, bound) if cursor else (None, None)
        span = timedelta(days=s.max_range_days)
        rng = resolve_range(explicit, from_cursor, p.now, default=span, max_days=s.max_range_days)
        read = users.actor_events if role == "actor" else users.target_events
        rows = await read(conn, room_id, user_id, rng, types, order, after, limit)
        rows, next_cursor = await finish_page(call, conn, grant, asked, rng, rows, limit, bound)
    about = {"room_id": room_id, "user_id": user_id, "role": role}
    return JSONResponse(page_of_events(call, about, rng, rows, next_cursor))


def _days(call: Call, first: date | None, last: date | None) -> tuple[date, date]:
    """The record's UTC days: `from`..`to`, by default the last `RECORD_DAYS` (at most the days a request
    may cover) up to today."""
    today = call.params.now.date()
    max_days = call.settings.max_days_range_days
    span = min(RECORD_DAYS, max_days)
    if last is None:
        last = today if first is None else min(today, first + timedelta(days=span - 1))
    if first is None:
        first = last - timedelta(days=span - 1)
    if first > last:
        raise InvalidParameter("from must not be after to", details={"parameter": "from"})
    if (last - first).days + 1 > max_days:
        raise RangeTooLarge(f"at most {max_days} days at once", details={"max_days": max_days})
    return first, last
