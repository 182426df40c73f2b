"""A room's activity over the last weeks, aggregated: busy hours and days, entries and exits, top chatters,
moderation actions and gifts. ``GET /v1/rooms/{room_id}/insights?weeks=4&tz=Europe/Berlin``.

Called by the room console's insights page (and any client with read access): the same grant and the same
audit as a read of the room's events (`row_count` = events aggregated). One index range scan of the room's
weeks (`events_room_time`) gives hourly counts per type and chat messages per author; the display names of
the top chatters are looked up afterwards. Hours and days are in the asked time zone (an IANA name; default
UTC), weeks end today.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import asyncpg
from starlette.responses import Response

from pipeline.api.access import Action
from pipeline.api.context import Call, JSONResponse
from pipeline.api.errors import InvalidParameter

DEFAULT_WEEKS, MAX_WEEKS = 4, 12
TOP_CHATTERS = 10
_TZ_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_+\-]{0,30}(/[A-Za-z0-9_+\-]{1,30}){0,2}$")

# One read of the room's weeks: hourly counts per type and, from the same rows, the top chatters.
_SCAN_SQL = """
WITH counted AS (
    SELECT date_trunc('hour', occurred_at AT TIME ZONE $4) AS local_hour, event_type AS type,
           CASE WHEN event_type = 'chat.message' THEN actor_id END AS chatter, count(*) AS n,
           sum(CASE WHEN event_type = 'gift.sent' THEN (payload->>'credits')::bigint END) AS credits
      FROM events
     WHERE room_id = $1 AND occurred_at >= $2 AND occurred_at < $3
     GROUP BY GROUPING SETS ((1, 2), (3))
)
SELECT local_hour, type, NULL AS chatter, n, credits FROM counted WHERE local_hour IS NOT NULL
UNION ALL
(SELECT NULL, NULL, chatter, n, NULL FROM counted WHERE local_hour IS NULL AND chatter IS NOT NULL
  ORDER BY n DESC, chatter LIMIT $5)
"""
#: The display name a chatter used last in the range (read only for the top chatters).
_NAMES_SQL = """
SELECT a.actor_id,
       (SELECT e.payload->'actor'->>'display_name' FROM events e
         WHERE e.room_id = $1 AND e.occurred_at >= $2 AND e.occurred_at < $3
           AND e.actor_id = a.actor_id AND e.event_type = 'chat.message'
         ORDER BY e.occurred_at DESC LIMIT 1) AS display_name
  FROM unnest($4::text[]) AS a(actor_id)
"""


def _zone(raw: str | None) -> tuple[str, ZoneInfo]:
    name = raw or "UTC"
    if not _TZ_NAME.match(name):
        raise InvalidParameter(
            "tz must be an IANA time zone such as Europe/Berlin", details={"parameter": "tz"}
        )
    try:
        return name, ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidParameter(f"unknown time zone {name!r}", details={"parameter": "tz"}) from None


async def room_insights(call: Call) -> Response:
    """GET /v1/rooms/{room_id}/insights"""
    room_id = call.path("room_id")
    p = call.params
    weeks = p.integer("weeks", default=DEFAULT_WEEKS, low=1, high=MAX_WEEKS)
    tz_name, zone = _zone(p.ident("tz"))
    p.done()
    assert weeks is not None
    now = p.now
    today = now.astimezone(zone).date()
    first_day = today - timedelta(days=7 * weeks - 1)
    since = datetime.combine(first_day, time.min, tzinfo=zone).astimezone(UTC)
    asked = {"weeks": weeks, "tz": tz_name, "since": since.isoformat(), "until": now.isoformat()}
    async with call.connection() as conn:
        grant = await call.authorize_room(conn, room_id, Action.READ, asked)
        try:
            rows = await conn.fetch(_SCAN_SQL, room_id, since, now, tz_name, TOP_CHATTERS)
        except asyncpg.InvalidParameterValueError:
            raise InvalidParameter(f"unknown time zone {tz_name!r}", details={"parameter": "tz"}) from None
        hourly = [r for r in rows if r["local_hour"] is not None]
        top = [r for r in rows if r["chatter"] is not None]
        names = {
            r["actor_id"]: r["display_name"]
            for r in await conn.fetch(_NAMES_SQL, room_id, since, now, [r["chatter"] for r in top])
        }
        chatters = [
            {"actor_id": r["chatter"], "n": r["n"], "display_name": names.get(r["chatter"])} for r in top
        ]
        body = summarize(hourly, chatters, first_day, weeks)
        await call.audit(
            conn,
            call.entry(grant=grant, filters=asked, row_count=body["total"]),
        )
    return JSONResponse({"room_id": room_id, "tz": tz_name, "since": since, "until": now, **body})


def summarize(hourly: list[Any], chatters: list[Any], first_day: date, weeks: int) -> dict[str, Any]:
    """The insights document from (local hour, type, count, credits) rows and the top chatters."""
    hour_of_day = [0] * 24
    chat_by_hour = [0] * 24
    day_of_week = [0] * 7
    days = {
        first_day + timedelta(days=d): {"entered": 0, "left": 0, "chat": 0, "total": 0}
        for d in range(7 * weeks)
    }
    week_rows: list[dict[str, Any]] = [
        {"week_start": (first_day + timedelta(days=7 * w)).isoformat(), "moderation": {},
         "moderation_total": 0, "gifts": 0, "credits": 0}
        for w in range(weeks)
    ]  # fmt: skip
    total = 0
    for r in hourly:
        local: datetime = r["local_hour"]
        etype: str = r["type"]
        n = int(r["n"])
        total += n
        hour_of_day[local.hour] += n
        day_of_week[local.weekday()] += n
        day = days.get(local.date())
        if day is not None:
            day["total"] += n
            if etype == "user.entered":
                day["entered"] += n
            elif etype == "user.left":
                day["left"] += n
            elif etype == "chat.message":
                day["chat"] += n
        if etype == "chat.message":
            chat_by_hour[local.hour] += n
        w = (local.date() - first_day).days // 7
        if not 0 <= w < weeks:
            continue
        week = week_rows[w]
        if etype.startswith("moderation."):
            action = etype.split(".", 1)[1]
            week["moderation"][action] = week["moderation"].get(action, 0) + n
            week["moderation_total"] += n
        elif etype == "gift.sent":
            week["gifts"] += n
            week["credits"] += int(r["credits"] or 0)
    return {
        "weeks": weeks,
        "total": total,
        "hour_of_day": hour_of_day,
        "chat_by_hour": chat_by_hour,
        "day_of_week": day_of_week,
        "days": [{"day": d.isoformat(), **counts} for d, counts in days.items()],
        "weekly": week_rows,
        "top_chatters": [
            {"user_id": r["actor_id"], "display_name": r["display_name"], "messages": int(r["n"])}
            for r in chatters
        ],
    }
