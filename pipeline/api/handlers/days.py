"""A room's days with activity and the count of each event type: ``GET /v1/rooms/{room_id}/days``, the
console's calendar. Counts come from the rollups (`queries.days.day_counts`), exact and current on every
request. Each day also says whether it is sealed
(when, with which key, how many events: its evidence can be downloaded) and when it closes (a day is
sealed by the first sealing run after that); seals are read afresh on every request. `alerts`: the day's
alerts per detector (by the start of their window; the console's badges).
"""

from __future__ import annotations

from datetime import timedelta

from starlette.responses import Response

from pipeline.api.context import Call, JSONResponse
from pipeline.api.errors import InvalidParameter, RangeTooLarge
from pipeline.api.handlers.evidence import closes_at
from pipeline.api.queries.alerts import day_counts as alert_counts
from pipeline.api.queries.days import day_counts
from pipeline.api.queries.evidence import seal_states
from pipeline.api.security.access import Action

__all__ = ["room_days"]

#: Days shown when the request names no range.
_DAYS_SPAN = 30


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
        counts = await day_counts(conn, room_id, first, last)
        sealed = await seal_states(conn, room_id, first, last)
        alerts = await alert_counts(conn, room_id, first, last)
        window = call.settings.seal_late_window_seconds
        days = [
            {
                "day": day.isoformat(),
                "total": sum(by_type.values()),
                "by_type": dict(sorted(by_type.items())),
                "seal": None
                if (seal := sealed.get(day)) is None
                else {"sealed_at": seal["sealed_at"], "key_id": seal["key_id"], "events": seal["tree_size"]},
                "closes_at": closes_at(day, window),
                "alerts": dict(sorted(alerts.get(day, {}).items())),
            }
            for day, by_type in sorted(counts.items())
            if by_type
        ]
        await call.audit(conn, call.entry(grant=grant, filters=asked, row_count=len(days)))
    return JSONResponse({"room_id": room_id, "from": asked["from"], "to": asked["to"], "days": days})
