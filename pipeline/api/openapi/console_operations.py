"""The OpenAPI operations of the endpoints the room console added (any client may use them).

Merged into the API's document by `assembly.document`, which takes their paths, methods and path
parameters from the route table; parameter shapes match the handlers (`events`, `rooms`, `insights`,
`access_log`, `retention`, `sessions`) exactly, so the fuzz tests hold them to "no 5xx" too.
"""

from __future__ import annotations

from typing import Any

from pipeline.api.handlers.access_log import ACCESS_LOG_PAGE_MAX, AUDIT_OUTCOMES
from pipeline.api.handlers.events import CONTEXT_MAX
from pipeline.api.handlers.insights import MAX_WEEKS
from pipeline.api.openapi.parts import errors, ok_json, operation, param
from pipeline.api.params import MAX_CURSOR_CHARS
from pipeline.api.settings import ApiSettings
from pipeline.events.identifiers import ID_MAX_CHARS

__all__ = ["console_operations"]

_OBJECT = {"type": "object"}


def console_operations(s: ApiSettings, reason: dict[str, Any], client_id: dict[str, Any]) -> dict[str, Any]:
    """The console's operations, by the audit action of the route they describe."""
    cursor = param("cursor", "query", {"type": "string", "minLength": 1, "maxLength": MAX_CURSOR_CHARS},
                   "next_cursor of the previous page (bound to the room and the caller)")  # fmt: skip
    no_content = {"description": "Signed out"}

    def get(operation_id: str, summary: str, parameters: list[dict[str, Any]]) -> dict[str, Any]:
        return operation(operation_id, summary, parameters, {"200": ok_json(_OBJECT), **errors()})

    return {
        "rooms.mine": get("listMyRooms", "The rooms the caller owns or moderates", [client_id]),
        "events.context": get(
            "getEventContext",
            "An event with the events just before and after it in its room",
            [
                reason,
                client_id,
                param(
                    "before",
                    "query",
                    {"type": "integer", "minimum": 0, "maximum": CONTEXT_MAX},
                    "Events before",
                ),
                param(
                    "after",
                    "query",
                    {"type": "integer", "minimum": 0, "maximum": CONTEXT_MAX},
                    "Events after",
                ),
            ],
        ),
        "insights": get(
            "getRoomInsights",
            "A room's activity over the last weeks: busy hours and days, entries and exits, top chatters, "
            "moderation actions and gifts per week",
            [
                reason,
                client_id,
                param("weeks", "query", {"type": "integer", "minimum": 1, "maximum": MAX_WEEKS}, "Weeks (4)"),
                param(
                    "tz",
                    "query",
                    {"type": "string", "minLength": 1, "maxLength": ID_MAX_CHARS},
                    "IANA time zone of hours and days (UTC)",
                    example="Europe/Berlin",
                ),
            ],
        ),
        "access_log.read": get(
            "getRoomAccessLog",
            "Who read the room's logs, when and why (the room's owner, or staff with a reason)",
            [
                reason,
                client_id,
                param(
                    "limit",
                    "query",
                    {"type": "integer", "minimum": 1, "maximum": ACCESS_LOG_PAGE_MAX},
                    "Page size",
                ),
                param(
                    "subject",
                    "query",
                    {"type": "string", "minLength": 1, "maxLength": ID_MAX_CHARS},
                    "Only the reads of this user or service",
                ),
                param(
                    "action",
                    "query",
                    {"type": "string", "pattern": "^[a-z][a-z_]{0,30}(\\.[a-z_]{1,30})?$"},
                    "Only reads of this kind (the audit action, e.g. events.list, tail, export)",
                ),
                param(
                    "outcome",
                    "query",
                    {"type": "string", "enum": list(AUDIT_OUTCOMES)},
                    "Only reads that ended so",
                ),
                param(
                    "exclude_own",
                    "query",
                    {"type": "string", "enum": ["true", "false"]},
                    "true: without the caller's own reads",
                ),
                cursor,
            ],
        ),
        "retention.read": get(
            "getRoomRetention",
            "How long the room's logs are kept and when the next purge comes",
            [reason, client_id],
        ),
        "session.start": operation(
            "signIn",
            "Exchange the identity provider's bearer token for a console session cookie",
            [client_id],
            {"201": ok_json(_OBJECT), **errors()},
        ),
        "session.info": get(
            "getSession", "Who is signed in, the CSRF token, a staff member's case", [client_id]
        ),
        "session.end": operation(
            "signOut",
            "End the console session; a single sign-on session also gets where the provider's session ends "
            "(end_session_url, with id_token_hint)",
            [client_id],
            {"200": ok_json(_OBJECT), "204": no_content, **errors()},
        ),
        "session.reason": operation(
            "setSessionReason",
            "Support staff: the ticket or case id every read of this session is for",
            [client_id],
            {"200": ok_json(_OBJECT), **errors()},
            request_body={
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "required": ["reason"],
                            "properties": {"reason": {"type": "string", "nullable": True, "maxLength": 64}},
                        }
                    }
                }
            },
        ),
    }
