"""The OpenAPI operations and schemas of a user's record in a room and of a room's alerts.

Merged into the document by `assembly.document` like `operations` and `console_operations`: paths,
methods and path parameters come from the route table; parameter shapes are the handlers' (`users`),
so the fuzz tests hold them to "no 5xx" too.
"""

from __future__ import annotations

from typing import Any

from pipeline.api.handlers.alerts import ALERTS_PAGE_MAX
from pipeline.api.handlers.paging import ORDERS
from pipeline.api.handlers.users import RECORD_ALERTS, RECORD_DAYS, ROLES
from pipeline.api.openapi.parts import DATE, IDENT, TIMESTAMP, errors, ok_json, operation, param, ref
from pipeline.api.params import EVENT_TYPES, MAX_CURSOR_CHARS
from pipeline.api.settings import ApiSettings

__all__ = ["record_operations", "record_schemas"]

_COUNTS = {"type": "object", "additionalProperties": {"type": "integer", "minimum": 1}}


def record_operations(s: ApiSettings, reason: dict[str, Any], client_id: dict[str, Any]) -> dict[str, Any]:
    """The operations, by the audit action of the route they describe."""
    types = param(
        "type",
        "query",
        {
            "type": "array",
            "items": {"type": "string", "enum": list(EVENT_TYPES)},
            "maxItems": len(EVENT_TYPES),
        },
        "Event types (repeat the parameter for several); default: all",
        style="form",
        explode=True,
    )
    cursor = param(
        "cursor",
        "query",
        {"type": "string", "minLength": 1, "maxLength": MAX_CURSOR_CHARS},
        "next_cursor of the previous page (bound to the room, the user, the filters and the caller)",
    )
    return {
        "alerts.list": operation(
            "listRoomAlerts",
            "A room's alerts (unusual activity flagged by the detectors), newest first, paginated",
            [
                reason,
                client_id,
                param(
                    "day",
                    "query",
                    DATE,
                    "One UTC day (by the start of the alert's window); not with since/until",
                ),
                param(
                    "since",
                    "query",
                    TIMESTAMP,
                    f"Start (inclusive); default: `until` minus {s.max_range_days} days",
                ),
                param("until", "query", TIMESTAMP, "End (exclusive); default: now"),
                param("detector", "query", IDENT, "Only this detector's alerts", example="chat_flood"),
                param(
                    "limit",
                    "query",
                    {"type": "integer", "minimum": 1, "maximum": ALERTS_PAGE_MAX},
                    "Page size",
                ),
                cursor,
            ],
            {"200": ok_json(ref("AlertPage")), **errors()},
        ),
        "user_record": operation(
            "getRoomUserRecord",
            "A user's record in a room (a user card): what they did per event type, the warnings, mutes, "
            "kicks and bans they received, first and last seen, days active",
            [
                reason,
                client_id,
                param("from", "query", DATE, f"First day (UTC); default: {RECORD_DAYS - 1} days before `to`"),
                param("to", "query", DATE, "Last day (UTC, inclusive); default: today"),
            ],
            {"200": ok_json(ref("UserRecord")), **errors()},
        ),
        "user_record.events": operation(
            "listRoomUserEvents",
            "A user's events in a room, newest first, paginated: what they did (actor) or what was done "
            "to them (target)",
            [
                reason,
                client_id,
                param(
                    "since",
                    "query",
                    TIMESTAMP,
                    f"Start (inclusive); default: `until` minus {s.max_range_days} days",
                ),
                param("until", "query", TIMESTAMP, "End (exclusive); default: now"),
                param("role", "query", {"type": "string", "enum": list(ROLES)}, "actor (default) or target"),
                types,
                param(
                    "order",
                    "query",
                    {"type": "string", "enum": list(ORDERS)},
                    "Newest (desc) or oldest first",
                ),
                param(
                    "limit",
                    "query",
                    {"type": "integer", "minimum": 1, "maximum": s.max_page_size},
                    "Page size",
                ),
                cursor,
            ],
            {"200": ok_json(ref("UserEventPage")), **errors()},
        ),
    }


def record_schemas() -> dict[str, Any]:
    """The components' schemas of these operations."""
    return {
        "UserRecord": {
            "type": "object",
            "required": ["room_id", "user_id", "from", "to", "actions", "received"],
            "properties": {
                "room_id": {"type": "string"},
                "user_id": {"type": "string"},
                "from": DATE,
                "to": DATE,
                "display_name": {"type": "string", "nullable": True, "description": "Of their last event"},
                "first_seen": {**TIMESTAMP, "nullable": True},
                "last_seen": {**TIMESTAMP, "nullable": True},
                "days_active": {"type": "integer", "minimum": 0},
                "actions": {**_COUNTS, "description": "Events they did, per type (chat.message: messages)"},
                "received": {
                    **_COUNTS,
                    "description": "Events naming them as target, per type (moderation.warn, .mute, .kick, "
                    ".ban...; gifts received; permission changes)",
                },
                "alerts": {
                    "type": "array",
                    "items": ref("Alert"),
                    "maxItems": RECORD_ALERTS,
                    "description": "The newest alerts of the room naming them (any day still kept)",
                },
                "more_alerts": {"type": "boolean", "description": "More alerts name them than listed"},
            },
        },
        "Alert": {
            "type": "object",
            "required": [
                "alert_id",
                "room_id",
                "detector",
                "window_start",
                "window_end",
                "users",
                "event_ids",
            ],
            "properties": {
                "alert_id": {"type": "string", "format": "uuid", "description": "The same on every run"},
                "retention_class": {"type": "string"},
                "day": DATE,
                "room_id": {"type": "string"},
                "detector": {"type": "string"},
                "subject": {"type": "string", "description": "What it is about: a user id, a text hash..."},
                "window_key": TIMESTAMP,
                "window_start": TIMESTAMP,
                "window_end": TIMESTAMP,
                "users": {"type": "array", "items": {"type": "string"}, "description": "The users involved"},
                "counts": {"type": "object", "description": "What was counted, and the threshold"},
                "event_ids": {
                    "type": "array",
                    "items": {"type": "string", "format": "uuid"},
                    "description": "The events of the window (the evidence)",
                },
                "raised_at": TIMESTAMP,
            },
        },
        "AlertPage": {
            "type": "object",
            "required": ["room_id", "since", "until", "alerts", "next_cursor"],
            "properties": {
                "room_id": {"type": "string"},
                "since": TIMESTAMP,
                "until": TIMESTAMP,
                "alerts": {"type": "array", "items": ref("Alert")},
                "next_cursor": {"type": "string", "nullable": True},
            },
        },
        "UserEventPage": {
            "type": "object",
            "required": ["room_id", "user_id", "role", "since", "until", "events", "next_cursor"],
            "properties": {
                "room_id": {"type": "string"},
                "user_id": {"type": "string"},
                "role": {"type": "string", "enum": list(ROLES)},
                "since": TIMESTAMP,
                "until": TIMESTAMP,
                "events": {"type": "array", "items": ref("Event")},
                "next_cursor": {"type": "string", "nullable": True},
            },
        },
    }
