"""The OpenAPI 3.0 description the API serves at /openapi.json (and the fuzz tests are generated from).

Derived, not restated: its paths and methods are the route table's (`pipeline.api.endpoints.ROUTES`, each
route's operation found by its audit action), path parameters are read from the path templates, allowed
values and limits are the constants the handlers validate with. A route without an operation, or an
operation of no route, fails the document's assembly (tests/api/test_openapi.py builds it).

Parameter shapes match `params.py` exactly: whatever this document allows, the API must answer without a
5xx (tests/api/test_api_fuzz.py holds it to that).
"""

from __future__ import annotations

import re
from typing import Any

from pipeline.api.deletion import NOTE_MAX_CHARS
from pipeline.api.endpoints import ROUTES, RouteSpec
from pipeline.api.errors import ERROR_CODES
from pipeline.api.export import FORMATS
from pipeline.api.export import ORDERS as EXPORT_ORDERS
from pipeline.api.openapi_console import console_operations
from pipeline.api.openapi_parts import DATE, IDENT, TIMESTAMP, errors, ok_json, operation, param, ref
from pipeline.api.params import (
    EVENT_TYPES,
    MAX_CURSOR_CHARS,
    MODERATION_TYPE_VALUES,
    TEXT_MAX_CHARS,
    TEXT_MIN_CHARS,
)
from pipeline.api.routes import ORDERS, ROLES
from pipeline.api.settings import ApiSettings

__all__ = ["document"]

_PATH_PARAMETER = re.compile(r"{(\w+)}")
_SECURED: list[dict[str, list[str]]] = [{"bearer": []}]


def document(settings: ApiSettings) -> dict[str, Any]:
    s = settings
    path_parameters = {
        "room_id": param("room_id", "path", IDENT, "Room id", example="room-1"),
        "user_id": param("user_id", "path", IDENT, "Platform user id", example="u-target"),
        "event_id": param("event_id", "path", {"type": "string", "format": "uuid"}, "Event id"),
    }
    client_id = param(
        "X-Request-Id",
        "header",
        {"type": "string"},
        "Your own correlation id (optional). Kept with the audit rows as client_request_id and echoed as "
        "X-Client-Request-Id when it is 1..128 visible ASCII characters, ignored otherwise. It never names "
        "the request: the API's own id is the X-Request-Id of the answer and the request_id of an error.",
    )
    reason = param(
        "X-Access-Reason",
        "header",
        {"type": "string", "pattern": s.staff_reason_pattern, "maxLength": 64},
        "Support staff: the ticket or case id the read is for (required for staff access)",
        example="SUP-1234",
    )
    described = {**_operations(s, reason, client_id), **console_operations(s, reason, client_id)}
    paths: dict[str, Any] = {}
    for spec in ROUTES:
        paths.setdefault(spec.path, {})[spec.method.lower()] = _assemble(spec, described, path_parameters)
    undescribed = set(described) - {spec.action for spec in ROUTES}
    if undescribed:
        raise LookupError(f"OpenAPI operations of no route: {sorted(undescribed)}; serve or remove them")
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
            "schemas": _schemas(),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
        },
    }


def _assemble(
    spec: RouteSpec, described: dict[str, dict[str, Any]], path_parameters: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    """The route's operation: its description, with the route's path parameters first and security."""
    op = described.get(spec.action)
    if op is None:
        raise LookupError(
            f"{spec.method} {spec.path} is served but has no OpenAPI operation: describe action "
            f"{spec.action!r} in pipeline/api/openapi.py (or openapi_console.py)"
        )
    names = _PATH_PARAMETER.findall(spec.path)
    unknown = [n for n in names if n not in path_parameters]
    if unknown:
        raise LookupError(f"{spec.path}: no OpenAPI description of path parameter(s) {unknown}")
    assembled = {
        "operationId": op["operationId"],
        "summary": op["summary"],
        "security": _SECURED,
        "parameters": [path_parameters[n] for n in names] + op["parameters"],
    }
    assembled.update((k, v) for k, v in op.items() if k not in assembled)
    return assembled


def _operations(s: ApiSettings, reason: dict[str, Any], client_id: dict[str, Any]) -> dict[str, Any]:
    """The API's own operations, by the audit action of the route they describe."""
    since = param(
        "since", "query", TIMESTAMP, "Start of the range (inclusive); default: `until` minus one day"
    )
    until = param("until", "query", TIMESTAMP, "End of the range (exclusive); default: now")
    types = param(
        "type",
        "query",
        {
            "type": "array",
            "items": {"type": "string", "enum": list(EVENT_TYPES)},
            "maxItems": len(EVENT_TYPES),
        },
        "Event types (repeat the parameter for several)",
        style="form",
        explode=True,
    )
    actor = param("actor", "query", IDENT, "Acting user id")
    target = param("target", "query", IDENT, "Target user id (moderation, gifts, permission changes)")
    text = param(
        "q",
        "query",
        {
            "type": "string",
            "minLength": TEXT_MIN_CHARS,
            "maxLength": TEXT_MAX_CHARS,
            "pattern": "^[^\\u0000]*$",
        },
        "Case-insensitive substring of the chat text (or moderation reason)",
    )
    order = param("order", "query", {"type": "string", "enum": list(ORDERS)}, "Newest (desc) or oldest first")
    limit = param(
        "limit",
        "query",
        {"type": "integer", "minimum": 1, "maximum": s.max_page_size},
        "Page size",
    )
    cursor = param(
        "cursor",
        "query",
        {"type": "string", "minLength": 1, "maxLength": MAX_CURSOR_CHARS},
        "next_cursor of the previous page (bound to the room or user, the filters and the caller)",
    )
    deletion_note = {"required": False, "content": {"application/json": {"schema": ref("DeletionNote")}}}
    return {
        "events.list": operation(
            "listRoomEvents",
            "A room's events in a time range, filtered, paginated",
            [reason, client_id, since, until, types, actor, target, text, order, limit, cursor],
            {"200": ok_json(ref("EventPage")), **errors()},
        ),
        "events.get": operation(
            "getRoomEvent",
            "One event of a room by id",
            [reason, client_id],
            {"200": ok_json(ref("Event")), **errors()},
        ),
        "days": operation(
            "listRoomDays",
            "A room's days with activity and the count of each event type",
            [
                reason,
                client_id,
                param("from", "query", DATE, "First day (UTC); default: 29 days before `to`"),
                param("to", "query", DATE, "Last day (UTC, inclusive); default: today"),
            ],
            {"200": ok_json(ref("Days")), **errors()},
        ),
        "export": operation(
            "exportRoomEvents",
            "A filtered range as NDJSON or CSV, streamed",
            [
                reason,
                client_id,
                since,
                until,
                types,
                actor,
                target,
                text,
                param(
                    "order", "query", {"type": "string", "enum": list(EXPORT_ORDERS)}, "Oldest (asc) first"
                ),
                param("format", "query", {"type": "string", "enum": list(FORMATS)}, "Output format"),
                param(
                    "limit",
                    "query",
                    {"type": "integer", "minimum": 1, "maximum": s.export_max_rows},
                    "Export at most this many events (without it, more than the cap is a 413)",
                ),
            ],
            {
                "200": {
                    "description": "The events, one JSON object per line, or CSV with a header row",
                    "content": {
                        "application/x-ndjson": {"schema": {"type": "string"}},
                        "text/csv": {"schema": {"type": "string"}},
                    },
                },
                **errors(413),
            },
        ),
        "tail": operation(
            "tailRoom",
            "Live tail of a room (Server-Sent Events) for its owner, moderators and staff",
            [reason, client_id],
            {
                "200": {
                    "description": "An event stream",
                    "content": {"text/event-stream": {"schema": {"type": "string"}}},
                },
                **errors(),
            },
        ),
        "room_logs.delete": operation(
            "deleteRoomLogs",
            "Delete a room's logs (its owner, or support staff with a ticket)",
            [reason, client_id],
            {
                "201": {
                    "description": "Deleted and recorded",
                    "content": {"application/json": {"schema": ref("Deletion")}},
                },
                **errors(409),
            },
            request_body=deletion_note,
        ),
        "moderation.history": operation(
            "userModerationHistory",
            "A user's moderation history across the rooms the caller may see",
            [
                reason,
                client_id,
                since,
                until,
                param(
                    "type",
                    "query",
                    {
                        "type": "array",
                        "maxItems": len(MODERATION_TYPE_VALUES),
                        "items": {"type": "string", "enum": list(MODERATION_TYPE_VALUES)},
                    },
                    "Moderation types",
                    style="form",
                    explode=True,
                ),
                param(
                    "role",
                    "query",
                    {"type": "string", "enum": list(ROLES)},
                    "The user as the one moderated (target), the moderator (actor), or either",
                ),
                order,
                limit,
                cursor,
            ],
            {"200": ok_json(ref("ModerationPage")), **errors()},
        ),
        "user_chat.erase": operation(
            "eraseUserChat",
            "Erase one user's chat text in every room (support staff with a ticket)",
            [reason, client_id],
            {
                "201": {
                    "description": "Erased and recorded",
                    "content": {"application/json": {"schema": ref("Deletion")}},
                },
                **errors(409),
            },
            request_body=deletion_note,
        ),
    }


def _schemas() -> dict[str, Any]:
    page_of: dict[str, Any] = {
        "type": "object",
        "required": ["since", "until", "events", "next_cursor"],
        "properties": {
            "since": TIMESTAMP,
            "until": TIMESTAMP,
            "events": {"type": "array", "items": ref("Event")},
            "next_cursor": {"type": "string", "nullable": True},
        },
    }
    return {
        "Event": {
            "type": "object",
            "required": ["event_id", "occurred_at", "room_id", "type", "payload"],
            "properties": {
                "event_id": {"type": "string", "format": "uuid"},
                "occurred_at": TIMESTAMP,
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
                "ingested_at": TIMESTAMP,
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
                "from": DATE,
                "to": DATE,
                "days": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["day", "total", "by_type"],
                        "properties": {
                            "day": DATE,
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
                "note": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": NOTE_MAX_CHARS,
                    "pattern": "^[^\\u0000]*$",
                }
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
