"""The OpenAPI operations of the log routes: a room's events, days, export, evidence and tail, deletions,
a user's moderation history and the erasure of their chat; and the public keys seals are signed with.

Merged into the document by `assembly.document`, which takes their paths, methods and path parameters
from the route table. Allowed values and limits are the constants the handlers validate with, and
parameter shapes match `pipeline.api.params` exactly: whatever this document allows, the API must answer
without a 5xx (tests/api/test_api_fuzz.py holds it to that).
"""

from __future__ import annotations

from typing import Any

from pipeline.api.handlers.evidence import MAX_EVENT_IDS
from pipeline.api.handlers.export import FORMATS
from pipeline.api.handlers.export import ORDERS as EXPORT_ORDERS
from pipeline.api.handlers.moderation import ROLES
from pipeline.api.handlers.paging import ORDERS
from pipeline.api.openapi.parts import DATE, IDENT, TIMESTAMP, errors, ok_json, operation, param, ref
from pipeline.api.params import (
    EVENT_TYPES,
    MAX_CURSOR_CHARS,
    MODERATION_TYPE_VALUES,
    TEXT_MAX_CHARS,
    TEXT_MIN_CHARS,
)
from pipeline.api.settings import ApiSettings

__all__ = ["log_operations"]


def log_operations(s: ApiSettings, reason: dict[str, Any], client_id: dict[str, Any]) -> dict[str, Any]:
    """The API's own operations (the log reads, exports, tails and deletions), by the audit action of the
    route they describe."""
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
        "evidence": operation(
            "getRoomEvidence",
            "A sealed room-day as an evidence bundle: the whole day, or the events asked for with their "
            "inclusion proofs; `roomlogs verify FILE --key PEM` checks it offline",
            [
                reason,
                client_id,
                {**param("day", "query", DATE, "The UTC day"), "required": True},
                param(
                    "event_id",
                    "query",
                    {
                        "type": "array",
                        "items": {"type": "string", "format": "uuid"},
                        "maxItems": MAX_EVENT_IDS,
                    },
                    "Only these events of the day, each with its inclusion proof (repeat the parameter)",
                    style="form",
                    explode=True,
                ),
            ],
            {
                "200": {
                    "description": "The evidence bundle (an attachment)",
                    "content": {"application/json": {"schema": ref("EvidenceBundle")}},
                },
                **errors(409, 413),
            },
        ),
        "seal_keys": operation(
            "listSealKeys",
            "The public keys seals are signed with (public: no token needed)",
            [client_id],
            {
                "200": ok_json(ref("SealKeys")),
                "304": {"description": "Not modified (If-None-Match)"},
                **{k: v for k, v in errors().items() if k in ("400", "429", "503")},
            },
        ),
        "tail": operation(
            "tailRoom",
            "Live tail of a room (Server-Sent Events: `event` frames, and `alert` frames for the alerts the "
            "room raises meanwhile) for its owner, moderators and staff",
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
            {"201": _recorded("Deleted and recorded"), **errors(409)},
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
            {"201": _recorded("Erased and recorded"), **errors(409)},
            request_body=deletion_note,
        ),
    }


def _recorded(description: str) -> dict[str, Any]:
    """The answer of a deletion: what was deleted, on whose authority, why."""
    return {"description": description, "content": {"application/json": {"schema": ref("Deletion")}}}
