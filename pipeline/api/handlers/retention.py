"""How long a room's logs are kept: ``GET /v1/rooms/{room_id}/retention``.

The room's retention class; for each class its stored rows were written under, the oldest stored day and
when it will be purged; when maintenance last ran. The owner and staff also see the room's deletion
requests, staff whether a legal hold keeps its rows. It is a read of the room: the same grant, the same
audit.
"""

from __future__ import annotations

from datetime import UTC
from typing import Any

from starlette.responses import Response

from pipeline.api.context import Call, JSONResponse
from pipeline.api.queries import retention as retention_rows
from pipeline.api.security.access import Action
from pipeline.retention_rules import purged_on
from pipeline.storage.partitions import day_start

__all__ = ["room_retention"]


async def room_retention(call: Call) -> Response:
    """GET /v1/rooms/{room_id}/retention"""
    room_id = call.path("room_id")
    call.params.done()
    today = call.params.now.astimezone(UTC).date()
    async with call.connection() as conn:
        grant = await call.authorize_room(conn, room_id, Action.READ, {})
        room = await retention_rows.room_class(conn, room_id)
        classes = await retention_rows.retention_days(conn)
        stored: list[dict[str, Any]] = []
        for name, days in classes.items():
            oldest = await retention_rows.oldest_event(conn, room_id, name)
            if oldest is None:
                continue
            oldest_day = oldest.astimezone(UTC).date()
            purge = max(purged_on(oldest_day, days), today)
            stored.append(
                {
                    "retention_class": name,
                    "retention_days": days,
                    "oldest_day": oldest_day.isoformat(),
                    "next_purge_on": purge.isoformat(),
                    "next_purge_after": day_start(purge),
                }
            )
        state = await retention_rows.retention_state(conn, room_id)
        deletions: list[dict[str, Any]] | None = None
        if grant.basis in ("owner", "staff"):
            deletions = await retention_rows.deletion_requests(conn, room_id)
        await call.audit(conn, call.entry(grant=grant, filters={}, row_count=len(stored)))
    current_class = room["retention_class"] if room is not None else None
    return JSONResponse(
        {
            "room_id": room_id,
            "retention_class": current_class,
            "retention_days": classes.get(current_class) if current_class else None,
            "stored": stored,
            "next_purge_after": min((s["next_purge_after"] for s in stored), default=None),
            "last_maintenance_at": state["last_maintenance_at"],
            "legal_hold": state["held"] if grant.basis == "staff" else None,
            "deletion_requests": deletions,
        }
    )
