"""A room's activity over the last weeks, aggregated: busy hours and days, entries and exits, top chatters,
moderation actions and gifts. ``GET /v1/rooms/{room_id}/insights?weeks=4&tz=Europe/Berlin``.

Called by the room console's insights page (and any client with read access): the same grant and the same
audit as a read of the room's events (`row_count` = events aggregated). Built from per-UTC-day summaries
(`pipeline.api.queries.insights`: events per hour and type, gift credits, each day's top chatters),
read from the rollups on every request. Hours and days are in the asked time zone (an IANA name; default
UTC; a UTC hour counts in the local hour it starts in), weeks end today.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from starlette.responses import Response

from pipeline.api.context import Call, JSONResponse
from pipeline.api.errors import InvalidParameter
from pipeline.api.queries.insights import DaySummary, day_summaries
from pipeline.api.security.access import Action
from pipeline.storage.partitions import day_start

DEFAULT_WEEKS, MAX_WEEKS = 4, 12
TOP_CHATTERS = 10
_TZ_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_+\-]{0,30}(/[A-Za-z0-9_+\-]{1,30}){0,2}$")


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
        summaries = await day_summaries(
            conn, room_id, since.astimezone(UTC).date(), now.astimezone(UTC).date()
        )
        hourly, chatters = local_hours(summaries, zone, since, now)
        body = summarize(hourly, chatters, first_day, weeks)
        await call.audit(conn, call.entry(grant=grant, filters=asked, row_count=body["total"]))
    return JSONResponse({"room_id": room_id, "tz": tz_name, "since": since, "until": now, **body})


def local_hours(
    summaries: dict[date, DaySummary], zone: ZoneInfo, since: datetime, until: datetime
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(local hour, type, count, credits) rows of the UTC hours in since..until, and the top chatters.

    A UTC hour is counted in the local hour it starts in (exact wherever the offset is whole hours)."""
    hourly: list[dict[str, Any]] = []
    chat: dict[str, int] = {}
    names: dict[str, tuple[date, str | None]] = {}
    for day, summary in summaries.items():
        start = day_start(day)
        for (hour, etype), n in summary.hourly.items():
            bucket = start + timedelta(hours=hour)
            if since <= bucket + timedelta(minutes=59, seconds=59) and bucket < until:
                local = bucket.astimezone(zone).replace(tzinfo=None)
                credits = summary.credits.get(hour, 0) if etype == "gift.sent" else 0
                hourly.append({"local_hour": local, "type": etype, "n": n, "credits": credits})
        for actor, (n, name) in summary.chatters.items():
            chat[actor] = chat.get(actor, 0) + n
            if actor not in names or names[actor][0] < day:
                names[actor] = (day, name)
    top = sorted(chat.items(), key=lambda kv: (-kv[1], kv[0]))[:TOP_CHATTERS]
    return hourly, [{"actor_id": a, "n": n, "display_name": names[a][1]} for a, n in top]


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
