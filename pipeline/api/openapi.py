"""The OpenAPI 3.0 description the API serves at /openapi.json (and the fuzz tests are generated from).

Parameter shapes here match `params.py` exactly: whatever this document allows, the API must answer
without a 5xx (tests/api/test_api_fuzz.py holds it to that).
"""

from __future__ import annotations

from typing import Any

from pipeline.api.errors import ERROR_CODES
from pipeline.api.params import EVENT_TYPES, MODERATION_TYPE_VALUES
from pipeline.api.settings import ApiSettings

_IDENT = {"type": "string", "minLength": 1, "maxLength": 64, "pattern": "^[^/\\u0000-\\u001f\\u007f]{1,64}$"}
_TIMESTAMP = {"type": "string", "format": "date-time"}
_DATE = {"type": "string", "format": "date"}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _param(name: str, where: str, schema: dict[str, Any], description: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "in": where,
        "required": where == "path",
        "schema": schema,
        "description": description,
        **extra,
    }


def _errors(*statuses: int) -> dict[str, Any]:
    text = {
        400: "Invalid parameter, range too large or invalid cursor",
        401: "Missing, invalid or expired bearer token",
        403: "Not permitted (no role in the room, missing staff reason, missing scope)",
        404: "Not found",
        409: "The room is under legal hold (legal_hold), or a concurrent change held its rows (conflict)",
        413: "Export larger than the cap",
        422: "The query ran past its time limit: narrow it",
        429: "Rate limit or stream quota exceeded",
        503: "Database unavailable",
    }
    return {
        str(s): {"description": text[s], "content": {"application/json": {"schema": _ref("Error")}}}
        for s in (400, 401, 403, 404, 422, 429, 503, *statuses)
    }


def ok_json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": "OK", "content": {"application/json": {"schema": schema}}}


def document(settings: ApiSettings) -> dict[str, Any]:
    s = settings
    room = _param("room_id", "path", _IDENT, "Room id", example="room-1")
    user = _param("user_id", "path", _IDENT, "Platform user id", example="u-target")
    client_id = _param(
        "X-Request-Id",
        "header",
        {"type": "string"},
        "Your own correlation id (optional). Kept with the audit rows as client_request_id and echoed as "
        "X-Client-Request-Id when it is 1..128 visible ASCII characters, ignored otherwise. It never names "
        "the request: the API's own id is the X-Request-Id of the answer and the request_id of an error.",
    )
    reason = _param(
        "X-Access-Reason",
        "header",
        {"type": "string", "pattern": s.staff_reason_pattern, "maxLength": 64},
        "Support staff: the ticket or case id the read is for (required for staff access)",
        example="SUP-1234",
    )
    since = _param(
        "since", "query", _TIMESTAMP, "Start of the range (inclusive); default: `until` minus one day"
    )
    until = _param("until", "query", _TIMESTAMP, "End of the range (exclusive); default: now")
    types = _param(
        "type",
        "query",
        {"type": "array", "items": {"type": "string", "enum": list(EVENT_TYPES)}, "maxItems": 12},
        "Event types (repeat the parameter for several)",
        style="form",
        explode=True,
    )
    actor = _param("actor", "query", _IDENT, "Acting user id")
    target = _param("target", "query", _IDENT, "Target user id (moderation, gifts, permission changes)")
    text = _param(
        "q",
        "query",
        {"type": "string", "minLength": 3, "maxLength": 200, "pattern": "^[^\\u0000]*$"},
        "Case-insensitive substring of the chat text (or moderation reason)",
    )
    order = _param(
        "order", "query", {"type": "string", "enum": ["desc", "asc"]}, "Newest (desc) or oldest first"
    )
    limit = _param(
        "limit",
        "query",
        {"type": "integer", "minimum": 1, "maximum": s.max_page_size},
        "Page size",
    )
    cursor = _param(
        "cursor",
        "query",
        {"type": "string", "minLength": 1, "maxLength": 1024},
        "next_cursor of the previous page (bound to the room or user, the filters and the caller)",
    )
    page_of: dict[str, Any] = {
        "type": "object",
        "required": ["since", "until", "events", "next_cursor"],
        "properties": {
            "since": _TIMESTAMP,
            "until": _TIMESTAMP,
            "events": {"type": "array", "items": _ref("Event")},
            "next_cursor": {"type": "string", "nullable": True},
        },
    }
    secured: list[dict[str, list[str]]] = [{"bearer": []}]
    paths: dict[str, Any] = {
        "/v1/rooms/{room_id}/events": {
            "get": {
                "operationId": "listRoomEvents",
                "summary": "A room's events in a time range, filtered, paginated",
                "security": secured,
                "parameters": [
                    room,
                    reason,
                    client_id,
                    since,
                    until,
                    types,
                    actor,
                    target,
                    text,
                    order,
                    limit,
                    cursor,
                ],
                "responses": {"200": ok_json(_ref("EventPage")), **_errors()},
            }
        },
        "/v1/rooms/{room_id}/events/{event_id}": {
            "get": {
                "operationId": "getRoomEvent",
                "summary": "One event of a room by id",
                "security": secured,
                "parameters": [
                    room,
                    _param("event_id", "path", {"type": "string", "format": "uuid"}, "Event id"),
                    reason,
                    client_id,
                ],
                "responses": {"200": ok_json(_ref("Event")), **_errors()},
            }
        },
        "/v1/rooms/{room_id}/days": {
            "get": {
                "operationId": "listRoomDays",
                "summary": "A room's days with activity and the count of each event type",
                "security": secured,
                "parameters": [
                    room,
                    reason,
                    client_id,
                    _param("from", "query", _DATE, "First day (UTC); default: 29 days before `to`"),
                    _param("to", "query", _DATE, "Last day (UTC, inclusive); default: today"),
                ],
                "responses": {"200": ok_json(_ref("Days")), **_errors()},
            }
        },
        "/v1/rooms/{room_id}/export": {
            "get": {
                "operationId": "exportRoomEvents",
                "summary": "A filtered range as NDJSON or CSV, streamed",
                "security": secured,
                "parameters": [
                    room,
                    reason,
                    client_id,
                    since,
                    until,
                    types,
                    actor,
                    target,
                    text,
                    _param(
                        "order", "query", {"type": "string", "enum": ["asc", "desc"]}, "Oldest (asc) first"
                    ),
                    _param("format", "query", {"type": "string", "enum": ["ndjson", "csv"]}, "Output format"),
                    _param(
                        "limit",
                        "query",
                        {"type": "integer", "minimum": 1, "maximum": s.export_max_rows},
                        "Export at most this many events (without it, more than the cap is a 413)",
                    ),
                ],
                "responses": {
                    "200": {
                        "description": "The events, one JSON object per line, or CSV with a header row",
                        "content": {
                            "application/x-ndjson": {"schema": {"type": "string"}},
                            "text/csv": {"schema": {"type": "string"}},
                        },
                    },
                    **_errors(413),
                },
            }
        },
        "/v1/rooms/{room_id}/tail": {
            "get": {
                "operationId": "tailRoom",
                "summary": "Live tail of a room (Server-Sent Events) for its owner, moderators and staff",
                "security": secured,
                "parameters": [room, reason, client_id],
                "responses": {
                    "200": {
                        "description": "An event stream",
                        "content": {"text/event-stream": {"schema": {"type": "string"}}},
                    },
                    **_errors(),
                },
            }
        },
        "/v1/rooms/{room_id}/deletions": {
            "post": {
                "operationId": "deleteRoomLogs",
                "summary": "Delete a room's logs (its owner, or support staff with a ticket)",
                "security": secured,
                "parameters": [room, reason, client_id],
                "requestBody": {
                    "required": False,
                    "content": {"application/json": {"schema": _ref("DeletionNote")}},
                },
                "responses": {
                    "201": {
                        "description": "Deleted and recorded",
                        "content": {"application/json": {"schema": _ref("Deletion")}},
                    },
                    **_errors(409),
                },
            }
        },
        "/v1/users/{user_id}/moderation": {
            "get": {
                "operationId": "userModerationHistory",
                "summary": "A user's moderation history across the rooms the caller may see",
                "security": secured,
                "parameters": [
                    user,
                    reason,
                    client_id,
                    since,
                    until,
                    _param(
                        "type",
                        "query",
                        {
                            "type": "array",
                            "maxItems": 6,
                            "items": {"type": "string", "enum": list(MODERATION_TYPE_VALUES)},
                        },
                        "Moderation types",
                        style="form",
                        explode=True,
                    ),
                    _param(
                        "role",
                        "query",
                        {"type": "string", "enum": ["target", "actor", "any"]},
                        "The user as the one moderated (target), the moderator (actor), or either",
                    ),
                    order,
                    limit,
                    cursor,
                ],
                "responses": {"200": ok_json(_ref("ModerationPage")), **_errors()},
            }
        },
        "/v1/users/{user_id}/erasures": {
            "post": {
                "operationId": "eraseUserChat",
                "summary": "Erase one user's chat text in every room (support staff with a ticket)",
                "security": secured,
                "parameters": [user, reason, client_id],
                "requestBody": {
                    "required": False,
                    "content": {"application/json": {"schema": _ref("DeletionNote")}},
                },
                "responses": {
                    "201": {
                        "description": "Erased and recorded",
                        "content": {"application/json": {"schema": _ref("Deletion")}},
                    },
                    **_errors(409),
                },
            }
        },
    }
    from pipeline.api.openapi_console import console_paths  # the room console's endpoints

    paths.update(console_paths(s, room, reason, client_id))
    schemas: dict[str, Any] = {
        "Event": {
            "type": "object",
            "required": ["event_id", "occurred_at", "room_id", "type", "payload"],
            "properties": {
                "event_id": {"type": "string", "format": "uuid"},
                "occurred_at": _TIMESTAMP,
                "room_id": {"type": "string"},
                "type": {"type": "string", "enum": list(EVENT_TYPES)},
                "schema_version": {"type": "integer"},
                "actor_id": {"type": "string", "nullable": True},
                "target_id": {"type": "string", "nullable": True},
                "body": {
                    "type": "string",
                    "nullable": True,
                    "description": "Chat text, or a moderation reason",
                },
                "payload": {
                    "type": "object",
                    "description": "Display data of the users and type-specific fields",
                },
                "retention_class": {"type": "string"},
                "ingested_at": _TIMESTAMP,
            },
        },
        "EventPage": {**page_of, "properties": {**page_of["properties"], "room_id": {"type": "string"}}},
        "ModerationPage": {
            **page_of,
            "properties": {
                **page_of["properties"],
                "user_id": {"type": "string"},
                "scope": {"type": "string", "enum": ["all_rooms", "rooms_you_own_or_moderate"]},
            },
        },
        "Days": {
            "type": "object",
            "required": ["room_id", "from", "to", "days"],
            "properties": {
                "room_id": {"type": "string"},
                "from": _DATE,
                "to": _DATE,
                "days": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["day", "total", "by_type"],
                        "properties": {
                            "day": _DATE,
                            "total": {"type": "integer"},
                            "by_type": {"type": "object", "additionalProperties": {"type": "integer"}},
                        },
                    },
                },
            },
        },
        "DeletionNote": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "note": {"type": "string", "minLength": 1, "maxLength": 500, "pattern": "^[^\\u0000]*$"}
            },
        },
        "Deletion": {
            "type": "object",
            "required": ["request_id", "kind", "basis", "reason", "rows_deleted"],
            "properties": {
                "request_id": {"type": "string", "format": "uuid"},
                "kind": {"type": "string", "enum": ["room_logs", "user_chat_erasure"]},
                "room_id": {"type": "string"},
                "user_id": {"type": "string"},
                "basis": {"type": "string", "enum": ["owner", "staff"]},
                "reason": {"type": "string"},
                "rows_deleted": {"type": "integer"},
            },
        },
        "Error": {
            "type": "object",
            "required": ["error"],
            "properties": {
                "error": {
                    "type": "object",
                    "required": ["code", "message", "request_id"],
                    "properties": {
                        "code": {"type": "string", "enum": list(ERROR_CODES)},
                        "message": {"type": "string"},
                        "request_id": {"type": "string"},
                        "details": {"type": "object"},
                    },
                }
            },
        },
    }
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "roomlogs query API",
            "version": "1",
            "description": (
                "Read a 3D social world's chat-room logs. Every request is authorized on its room or user, "
                "and every read, refusal and error is recorded in an append-only access audit under the "
                "request id the API gives it (`X-Request-Id` of every answer). Errors share one shape with "
                f"a stable `code`. Limits: pages of at most {s.max_page_size} events, ranges of at most "
                f"{s.max_range_days} days, exports of at most {s.export_max_rows} events, "
                f"{s.rate_limit_per_second:g} requests/s per caller (burst {s.rate_limit_burst})."
            ),
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
        },
    }
