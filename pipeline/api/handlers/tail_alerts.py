"""The alerts a live tail carries: the room's alerts stored since the stream started, as ``event: alert``.

Polled by `tail._frames` on each of its polls, on the same connection, after access was re-checked: the
alerts of a room are read as its events are. An alert is stored by the worker in the transaction of the
batch whose events raised it (pipeline.storage.alerts) and stamped `raised_at` when that transaction
started, so like the events each poll looks back `LOOKBACK` before the newest it has seen and skips the
ids it already sent.

An alert frame has no ``id:`` line: a reconnecting EventSource sends the id of the last *event*, and the
tail resumes from it (alerts raised from then on come again; the console shows each alert once).
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

import asyncpg

from pipeline.api.context import dumps
from pipeline.api.queries.alerts import alert_json, raised_since

__all__ = ["AlertFeed"]

LOOKBACK = timedelta(seconds=10)
#: How long before its stream started (less the late window) an alert's window may start: alerts of late
#: events and of windows that began before the stream (a raid over an hour) still come.
WINDOW_REACH = timedelta(days=1)
_PAGE = 100
_NIL = uuid.UUID(int=0)


class AlertFeed:
    """One stream's alerts: `poll` returns the frames of the alerts stored since the last poll."""

    def __init__(self, room_id: str, started_at: datetime, late: timedelta) -> None:
        self.room_id = room_id
        self.newest = started_at
        self.window_since = started_at - late - WINDOW_REACH
        self.seen: dict[uuid.UUID, datetime] = {}
        self.sent = 0

    async def poll(self, conn: asyncpg.Connection) -> bytes:
        """The frames (maybe none) of the room's alerts stored since the previous poll."""
        fresh = []
        after = (self.newest - LOOKBACK, _NIL)
        while True:
            rows = await raised_since(conn, self.room_id, self.window_since, after, _PAGE)
            for r in rows:
                alert_id = uuid.UUID(str(r["alert_id"]))
                if alert_id not in self.seen:
                    self.seen[alert_id] = r["raised_at"]
                    fresh.append(r)
            if len(rows) < _PAGE:
                break
            after = (rows[-1]["raised_at"], uuid.UUID(str(rows[-1]["alert_id"])))
        if not fresh:
            return b""
        self.newest = max(self.newest, max(r["raised_at"] for r in fresh))
        horizon = self.newest - LOOKBACK
        for alert_id in [a for a, at in self.seen.items() if at < horizon]:
            del self.seen[alert_id]
        self.sent += len(fresh)
        return b"".join(b"event: alert\ndata: " + dumps(alert_json(r)) + b"\n\n" for r in fresh)
