"""The OpenAPI document's schemas: an event, the pages and days, deletions, the one error shape."""

from __future__ import annotations

from typing import Any

from pipeline.api.errors import ERROR_CODES
from pipeline.api.handlers.deletion import NOTE_MAX_CHARS
from pipeline.api.openapi.parts import DATE, TIMESTAMP, ref
from pipeline.api.params import EVENT_TYPES

__all__ = ["schemas"]


def schemas() -> dict[str, Any]:
    """The components' schemas the operations refer to (`parts.ref`)."""
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
