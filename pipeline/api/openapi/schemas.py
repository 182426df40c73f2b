"""The OpenAPI document's schemas: an event, the pages and days, deletions, evidence bundles and the keys
that check them, the one error shape."""

from __future__ import annotations

from typing import Any

from pipeline.api.errors import ERROR_CODES
from pipeline.api.handlers.deletion import NOTE_MAX_CHARS
from pipeline.api.openapi.parts import DATE, TIMESTAMP, ref
from pipeline.api.params import EVENT_TYPES
from pipeline.evidence.bundle import FORMAT

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
                        "required": ["day", "total", "by_type", "seal", "closes_at"],
                        "properties": {
                            "day": DATE,
                            "total": {"type": "integer"},
                            "by_type": {"type": "object", "additionalProperties": {"type": "integer"}},
                            "seal": {
                                "type": "object",
                                "nullable": True,
                                "description": "The day's seal (null: not sealed yet)",
                                "required": ["sealed_at", "key_id", "events"],
                                "properties": {
                                    "sealed_at": TIMESTAMP,
                                    "key_id": {"type": "string"},
                                    "events": {"type": "integer"},
                                },
                            },
                            "closes_at": {
                                **TIMESTAMP,
                                "description": "When the day closes; the next sealing run seals it",
                            },
                            "alerts": {
                                "type": "object",
                                "additionalProperties": {"type": "integer"},
                                "description": "The day's alerts per detector (by the start of their window)",
                            },
                        },
                    },
                },
            },
        },
        **evidence_schemas(),
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


def evidence_schemas() -> dict[str, Any]:
    """An evidence bundle (pipeline/evidence/bundle.py) and the public keys that check it."""
    return {
        "EvidenceBundle": {
            "type": "object",
            "required": ["format", "days"],
            "properties": {
                "format": {"type": "string", "enum": [FORMAT]},
                "days": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["seal", "whole_day", "events"],
                        "properties": {
                            "seal": {
                                "type": "object",
                                "required": ["statement", "signature", "key_id"],
                                "properties": {
                                    "statement": {"type": "string", "description": "The signed JSON"},
                                    "signature": {"type": "string", "description": "Ed25519, base64"},
                                    "key_id": {"type": "string"},
                                },
                            },
                            "whole_day": {"type": "boolean"},
                            "events": {
                                "type": "array",
                                "description": "Events as an export gives them; with whole_day false, "
                                "each also with `leaf_index` and `proof` (hex hashes)",
                                "items": {"type": "object"},
                            },
                            "note": {"type": "string", "description": "What is left out, in words"},
                            "omitted": {
                                "type": "array",
                                "description": "Sealed events that are not in the bundle, and why",
                                "items": {
                                    "type": "object",
                                    "properties": {
                                        "event_id": {"type": "string", "format": "uuid"},
                                        "reason": {
                                            "type": "string",
                                            "enum": [
                                                "deleted_by_request",
                                                "not_stored",
                                                "changed",
                                                "not_in_seal",
                                            ],
                                        },
                                        "detail": {"type": "string"},
                                    },
                                },
                            },
                        },
                    },
                },
            },
        },
        "SealKeys": {
            "type": "object",
            "required": ["keys"],
            "properties": {
                "keys": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["key_id", "algorithm", "public_key_pem", "added_at"],
                        "properties": {
                            "key_id": {"type": "string"},
                            "algorithm": {"type": "string", "enum": ["ed25519"]},
                            "public_key_pem": {"type": "string"},
                            "added_at": TIMESTAMP,
                        },
                    },
                }
            },
        },
    }
