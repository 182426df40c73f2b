"""Live tail of a room as Server-Sent Events, for the people watching it (owner, moderators, staff).

The stream polls PostgreSQL every `tail_poll_seconds` for events of the room ingested since the last
poll, and re-checks the caller's access on every poll: a moderator removed from the room gets an
`event: revoked` and the stream ends. It also ends after `tail_max_seconds` (`event: end`; reconnect to
go on) and when the API shuts down.

Events are ordered by when they were ingested. An ingest transaction stamps its rows when it starts and
they appear when it commits, so each poll looks back `LOOKBACK` before the newest ingestion it has seen
and skips the event ids it already sent. Events that arrive more than `tail_late_window_seconds` after
they occurred are stored but not tailed.

SSE frames: ``event: event`` with the event as JSON (``id:`` is the event id); ``event: alert`` with an
alert of the room stored since the stream started (`tail_alerts.AlertFeed`; no ``id:``); ``event: revoked``;
``event: end``; ``: keepalive`` comments every `tail_heartbeat_seconds` of silence.

Resuming: a reconnecting EventSource sends ``Last-Event-ID``; when that event of the room is found (among
events of the last `tail_late_window_seconds` + `tail_max_seconds`), the stream starts from its ingestion
instead of now, so nothing ingested meanwhile is missed. Delivery is at least once: events ingested in the
`LOOKBACK` before it may come again (the same ids; the console shows each once). A console session that
signs out or expires ends the stream like a withdrawn right (`event: revoked`).

The audit row of a stream's end says how it ended: `finished` with `client_closed` when the reader left
(closing the page or the live view is the normal end of a tail, not a failure), `max_duration`,
`shutdown`, `access_revoked` or `session_ended`; only a stream cut off by an error is `aborted`.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timedelta

import anyio
import asyncpg
from starlette.responses import Response, StreamingResponse

from pipeline.api.context import Call, dumps
from pipeline.api.errors import Forbidden
from pipeline.api.handlers.tail_alerts import AlertFeed
from pipeline.api.queries.tail import database_now, ingested_at, tail_batch
from pipeline.api.security import sessions
from pipeline.api.security.access import Action, Grant

log = logging.getLogger("roomlogs.api.tail")

LOOKBACK = timedelta(seconds=10)
_PAGE = 1_000
_MAX_PAGES_PER_POLL = 20
_NIL = uuid.UUID(int=0)


async def tail_room(call: Call) -> Response:
    """GET /v1/rooms/{room_id}/tail"""
    room_id = call.path("room_id")
    call.params.done()
    last_id = _last_event_id(call)
    asked = {"resume_after": str(last_id)} if last_id else {}
    async with call.opening_stream() as conn:
        grant = await call.authorize_room(conn, room_id, Action.TAIL, asked)
        started_at = await database_now(conn)
        if last_id is not None:
            started_at = await _resume_point(call, conn, room_id, last_id) or started_at
        await call.audit(conn, call.entry(grant=grant, filters=asked, outcome="started"))
    return StreamingResponse(
        _frames(call, grant, room_id, started_at),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


def _last_event_id(call: Call) -> uuid.UUID | None:
    raw = call.request.headers.get("last-event-id")
    if not raw:
        return None
    try:
        return uuid.UUID(raw.strip())
    except ValueError:
        return None  # not an id this API sent: start from now, as for a first connection


async def _resume_point(
    call: Call, conn: asyncpg.Connection, room_id: str, event_id: uuid.UUID
) -> datetime | None:
    """When the stream's last delivered event was ingested (None: not an event of this room we tail)."""
    s = call.settings
    horizon = timedelta(seconds=s.tail_late_window_seconds + s.tail_max_seconds)
    return await ingested_at(conn, room_id, event_id, horizon)


async def _frames(call: Call, grant: Grant, room_id: str, started_at: datetime) -> AsyncIterator[bytes]:
    state = call.state
    s = state.settings
    sent = 0
    # a tail has no natural end: the reader closing it (the ASGI server cancels this generator) is normal
    outcome, detail = "finished", "client_closed"
    seen: dict[uuid.UUID, datetime] = {}
    newest = started_at
    deadline = time.monotonic() + s.tail_max_seconds
    quiet_since = time.monotonic()
    late = timedelta(seconds=s.tail_late_window_seconds)
    alerts = AlertFeed(room_id, started_at, late)
    session = sessions.current_session(call.request)
    try:
        yield f"retry: 3000\n: tail of {len(room_id)}-character room id started\n\n".encode()
        while True:
            if state.closing or time.monotonic() >= deadline:
                reason = "shutdown" if state.closing else "max_duration"
                yield _frame("end", {"reason": reason})
                outcome, detail = "finished", reason
                break
            pool = state.pool
            if pool is None:
                outcome, detail = "finished", "shutdown"
                break
            async with pool.acquire() as conn:
                try:
                    await state.policy.room(conn, call.identity, room_id, Action.TAIL, call.stated_reason)
                except Forbidden as e:
                    yield _frame("revoked", {"code": e.code, "message": "access to this room was withdrawn"})
                    outcome, detail = "finished", "access_revoked"
                    break
                if session is not None and not await sessions.session_is_live(conn, session):
                    yield _frame("revoked", {"code": "session_expired", "message": "the session has ended"})
                    outcome, detail = "finished", "session_ended"
                    break
                fresh = []
                after = (newest - LOOKBACK, _NIL)
                for _ in range(_MAX_PAGES_PER_POLL):
                    rows = await tail_batch(conn, room_id, newest - late, after, _PAGE)
                    for r in rows:
                        if r["event_id"] not in seen:
                            seen[r["event_id"]] = r["ingested_at"]
                            fresh.append(r)
                    if len(rows) < _PAGE:
                        break
                    after = (rows[-1]["ingested_at"], rows[-1]["event_id"])
                alert_frames = await alerts.poll(conn)
            if fresh:
                newest = max(newest, max(r["ingested_at"] for r in fresh))
                yield b"".join(_event_frame(r) for r in fresh)
                sent += len(fresh)
                quiet_since = time.monotonic()
                horizon = newest - LOOKBACK
                for event_id in [e for e, at in seen.items() if at < horizon]:
                    del seen[event_id]
            if alert_frames:
                yield alert_frames
                quiet_since = time.monotonic()
            elif not fresh and time.monotonic() - quiet_since >= s.tail_heartbeat_seconds:
                yield b": keepalive\n\n"
                quiet_since = time.monotonic()
            await anyio.sleep(s.tail_poll_seconds)
    except Exception as e:
        outcome, detail = "aborted", type(e).__name__[:64]
        raise
    finally:
        with anyio.CancelScope(shield=True):
            delivered = sent + alerts.sent
            await state.record_apart(
                call.entry(grant=grant, row_count=delivered, outcome=outcome, detail=detail)
            )
        state.streams.release(call.identity.caller_key)
        state.metrics.rows.labels(call.route).inc(delivered)


def _frame(event: str, data: object) -> bytes:
    return b"event: " + event.encode() + b"\ndata: " + dumps(data) + b"\n\n"


def _event_frame(record: object) -> bytes:
    row = dict(record.items())  # type: ignore[attr-defined]
    return b"id: " + str(row["event_id"]).encode() + b"\nevent: event\ndata: " + dumps(row) + b"\n\n"
