"""The query API's route table: every /v1 route, its method, its handler and its audit action.

The one list of what the API serves: `pipeline.api.app.create_app` mounts it behind the gate, and
`pipeline.api.openapi` describes it (paths, methods and path parameters come from here, each route's
description is found by its action), so a route cannot be served undocumented or documented unserved.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from starlette.responses import Response

from pipeline.api.context import Call
from pipeline.api.handlers import (
    access_log,
    alerts,
    days,
    deletion,
    events,
    evidence,
    export,
    insights,
    moderation,
    oidc,
    retention,
    rooms,
    sessions,
    tail,
    users,
)

__all__ = ["ROUTES", "Handler", "RouteSpec"]

Handler = Callable[[Call], Awaitable[Response]]


@dataclass(frozen=True, slots=True)
class RouteSpec:
    path: str
    method: str
    handler: Handler
    #: access_audit.action of its requests (unique: it also names the route's OpenAPI operation)
    action: str
    #: Answered without a token (rate-limited by client address; refusals are audited as anonymous).
    #: Only for what is no log: the public keys seals are signed with.
    public: bool = False
    #: A person's browser is sent here (single sign-on): its refusals are a page when it prefers HTML
    #: (`pipeline.api.security.error_pages`), JSON otherwise.
    browser: bool = False


ROUTES: tuple[RouteSpec, ...] = (
    RouteSpec("/v1/rooms/{room_id}/events", "GET", events.list_events, "events.list"),
    RouteSpec("/v1/rooms/{room_id}/events/{event_id}", "GET", events.get_event, "events.get"),
    RouteSpec("/v1/rooms/{room_id}/days", "GET", days.room_days, "days"),
    RouteSpec("/v1/rooms/{room_id}/export", "GET", export.export_events, "export"),
    RouteSpec("/v1/rooms/{room_id}/evidence", "GET", evidence.room_evidence, "evidence"),
    RouteSpec("/v1/seal-keys", "GET", evidence.seal_keys, "seal_keys", public=True),
    RouteSpec("/v1/rooms/{room_id}/tail", "GET", tail.tail_room, "tail"),
    RouteSpec("/v1/rooms/{room_id}/deletions", "POST", deletion.delete_room_logs, "room_logs.delete"),
    RouteSpec("/v1/users/{user_id}/moderation", "GET", moderation.moderation_history, "moderation.history"),
    RouteSpec("/v1/users/{user_id}/erasures", "POST", deletion.erase_user_chat, "user_chat.erase"),
    # the room console's needs (any client may use them)
    RouteSpec("/v1/me/rooms", "GET", rooms.my_rooms, "rooms.mine"),
    RouteSpec("/v1/rooms/{room_id}/events/{event_id}/context", "GET", events.event_context, "events.context"),
    RouteSpec("/v1/rooms/{room_id}/insights", "GET", insights.room_insights, "insights"),
    RouteSpec("/v1/rooms/{room_id}/access-log", "GET", access_log.access_log, "access_log.read"),
    RouteSpec("/v1/rooms/{room_id}/retention", "GET", retention.room_retention, "retention.read"),
    RouteSpec("/v1/rooms/{room_id}/users/{user_id}", "GET", users.user_record, "user_record"),
    RouteSpec("/v1/rooms/{room_id}/users/{user_id}/events", "GET", users.user_events, "user_record.events"),
    RouteSpec("/v1/rooms/{room_id}/alerts", "GET", alerts.list_alerts, "alerts.list"),
    RouteSpec("/v1/session", "POST", sessions.sign_in, "session.start"),
    RouteSpec("/v1/session", "GET", sessions.session_info, "session.info"),
    RouteSpec("/v1/session", "DELETE", sessions.sign_out, "session.end"),
    RouteSpec("/v1/session/reason", "PUT", sessions.set_reason, "session.reason"),
    # single sign-on: public (no log), browser-driven; the callback opens a session like POST /v1/session
    RouteSpec("/v1/session/oidc", "GET", oidc.provider, "session.oidc", public=True),
    RouteSpec("/v1/session/oidc/start", "GET", oidc.start, "session.oidc_start", public=True, browser=True),
    RouteSpec(
        "/v1/session/oidc/callback", "GET", oidc.callback, "session.oidc_callback", public=True, browser=True
    ),
)
