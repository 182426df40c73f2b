"""The OpenAPI paths of the endpoints the room console added (any client may use them).

Merged into the API's document by `pipeline.api.openapi.document`; parameter shapes match the handlers
(`rooms`, `insights`, `transparency`, `sessions`) exactly, so the fuzz tests hold them to "no 5xx" too.
"""

from __future__ import annotations

from typing import Any

from pipeline.api.insights import MAX_WEEKS
from pipeline.api.openapi import _errors, _param, ok_json
from pipeline.api.settings import ApiSettings

__all__ = ["console_paths"]

_OBJECT = {"type": "object"}


def console_paths(
    s: ApiSettings, room: dict[str, Any], reason: dict[str, Any], client_id: dict[str, Any]
) -> dict[str, Any]:
    secured: list[dict[str, list[str]]] = [{"bearer": []}]
    event_id = _param("event_id", "path", {"type": "string", "format": "uuid"}, "Event id")
    cursor = _param("cursor", "query", {"type": "string", "minLength": 1, "maxLength": 1024},
                    "next_cursor of the previous page (bound to the room and the caller)")  # fmt: skip
    no_content = {"description": "Signed out"}

    def get(
        operation: str, summary: str, parameters: list[dict[str, Any]], body: Any = _OBJECT
    ) -> dict[str, Any]:
        responses = {"200": ok_json(body), **_errors()}
        return {
            "get": {
                "operationId": operation,
                "summary": summary,
                "security": secured,
                "parameters": parameters,
                "responses": responses,
            }
        }

    return {
        "/v1/me/rooms": get("listMyRooms", "The rooms the caller owns or moderates", [client_id]),
        "/v1/rooms/{room_id}/events/{event_id}/context": get(
            "getEventContext",
            "An event with the events just before and after it in its room",
            [
                room,
                event_id,
                reason,
                client_id,
                _param("before", "query", {"type": "integer", "minimum": 0, "maximum": 50}, "Events before"),
                _param("after", "query", {"type": "integer", "minimum": 0, "maximum": 50}, "Events after"),
            ],
        ),
        "/v1/rooms/{room_id}/insights": get(
            "getRoomInsights",
            "A room's activity over the last weeks: busy hours and days, entries and exits, top chatters, "
            "moderation actions and gifts per week",
            [
                room,
                reason,
                client_id,
                _param(
                    "weeks", "query", {"type": "integer", "minimum": 1, "maximum": MAX_WEEKS}, "Weeks (4)"
                ),
                _param(
                    "tz",
                    "query",
                    {"type": "string", "minLength": 1, "maxLength": 64},
                    "IANA time zone of hours and days (UTC)",
                    example="Europe/Berlin",
                ),
            ],
        ),
        "/v1/rooms/{room_id}/access-log": get(
            "getRoomAccessLog",
            "Who read the room's logs, when and why (the room's owner, or staff with a reason)",
            [
                room,
                reason,
                client_id,
                _param("limit", "query", {"type": "integer", "minimum": 1, "maximum": 200}, "Page size"),
                cursor,
            ],
        ),
        "/v1/rooms/{room_id}/retention": get(
            "getRoomRetention",
            "How long the room's logs are kept and when the next purge comes",
            [room, reason, client_id],
        ),
        "/v1/session": {
            "post": {
                "operationId": "signIn",
                "summary": "Exchange the identity provider's bearer token for a console session cookie",
                "security": secured,
                "parameters": [client_id],
                "responses": {"201": ok_json(_OBJECT), **_errors()},
            },
            **get("getSession", "Who is signed in, the CSRF token, a staff member's case", [client_id]),
            "delete": {
                "operationId": "signOut",
                "summary": "End the console session",
                "security": secured,
                "parameters": [client_id],
                "responses": {"204": no_content, **_errors()},
            },
        },
        "/v1/session/reason": {
            "put": {
                "operationId": "setSessionReason",
                "summary": "Support staff: the ticket or case id every read of this session is for",
                "security": secured,
                "parameters": [client_id],
                "requestBody": {
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["reason"],
                                "properties": {
                                    "reason": {"type": "string", "nullable": True, "maxLength": 64}
                                },
                            }
                        }
                    }
                },
                "responses": {"200": ok_json(_OBJECT), **_errors()},
            }
        },
    }
