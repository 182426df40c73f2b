"""A room's alerts (unusual activity the detectors flagged): ``GET /v1/rooms/{room_id}/alerts``.

Newest first (by the start of the window that raised them), one UTC `day` or a `since`/`until` range
(default: the last `max_range_days`), optionally one `detector`, cursor-paged. Read as the room's logs are
(owner, moderators, staff with a ticket, services with rooms:read) and audited like them: an alert names
users and cites events, so it is a read of the logs.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from starlette.responses import Response

from pipeline.api.context import Call, JSONResponse
from pipeline.api.errors import InvalidParameter
from pipeline.api.params import TimeRange, resolve_range
from pipeline.api.queries.alerts import alert_json, room_alerts
from pipeline.api.security.access import Action
from pipeline.api.security.cursors import binding
from pipeline.storage.partitions import day_start

__all__ = ["ALERTS_PAGE_DEFAULT", "ALERTS_PAGE_MAX", "list_alerts"]

ALERTS_PAGE_DEFAULT = 50
ALERTS_PAGE_MAX = 500


async def list_alerts(call: Call) -> Response:
    """GET /v1/rooms/{room_id}/alerts"""
    room_id = call.path("room_id")
    p = call.params
    day = p.date("day")
    explicit = p.explicit_range()
    detector = p.ident("detector")
    limit = p.integer("limit", default=ALERTS_PAGE_DEFAULT, low=1, high=ALERTS_PAGE_MAX)
    cursor = p.cursor()
    p.done()
    assert limit is not None
    if day is not None and explicit != (None, None):
        raise InvalidParameter("give a day or a since/until range, not both", details={"parameter": "day"})
    s = call.settings
    bound = binding("alerts", room_id, detector, day, call.identity.caller_key)
    asked: dict[str, Any] = {"detector": detector, "limit": limit, "page": cursor is not None}
    if day is not None:
        asked["day"] = day.isoformat()
    async with call.connection() as conn:
        grant = await call.authorize_room(conn, room_id, Action.READ, asked)
        before, from_cursor = call.state.cursors.decode(cursor, bound) if cursor else (None, None)
        if day is not None and from_cursor is None:
            rng = TimeRange(day_start(day), day_start(day + timedelta(days=1)))
        else:
            span = timedelta(days=s.max_range_days)
            rng = resolve_range(explicit, from_cursor, p.now, default=span, max_days=s.max_range_days)
        detectors = None if detector is None else [detector]
        rows = await room_alerts(conn, room_id, rng.since, rng.until, detectors, before, limit)
        next_cursor = None
        if len(rows) > limit:
            rows = rows[:limit]
            last = rows[-1]
            position = (last["window_start"], uuid.UUID(str(last["alert_id"])))
            next_cursor = call.state.cursors.encode(bound, position, (rng.since, rng.until))
        await call.audit(
            conn, call.entry(grant=grant, filters={**asked, **rng.as_dict()}, row_count=len(rows))
        )
    call.state.metrics.rows.labels(call.route).inc(len(rows))
    return JSONResponse(
        {
            "room_id": room_id,
            "since": rng.since,
            "until": rng.until,
            "alerts": [alert_json(r) for r in rows],
            "next_cursor": next_cursor,
        }
    )
