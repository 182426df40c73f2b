"""Building blocks of the OpenAPI document, shared by `operations` (the log routes), `console_operations`
(the routes the room console added), `schemas` and `assembly`."""

from __future__ import annotations

from typing import Any

from pipeline.events.identifiers import FORBIDDEN_ECMA, ID_MAX_CHARS

__all__ = ["DATE", "IDENT", "TIMESTAMP", "errors", "ok_json", "operation", "param", "ref"]

#: An identifier (pipeline.events.identifiers); no "/" either, as one is a path segment or looks like one.
IDENT = {
    "type": "string",
    "minLength": 1,
    "maxLength": ID_MAX_CHARS,
    "pattern": f"^[^/{FORBIDDEN_ECMA}]{{1,{ID_MAX_CHARS}}}$",
}
TIMESTAMP = {"type": "string", "format": "date-time"}
DATE = {"type": "string", "format": "date"}

_ERROR_TEXT = {
    400: "Invalid parameter, range too large or invalid cursor",
    401: "Missing, invalid or expired bearer token",
    403: "Not permitted (no role in the room, missing staff reason, missing scope)",
    404: "Not found, or a day not sealed yet (not_sealed)",
    409: "The room is under legal hold (legal_hold), a concurrent change held its rows (conflict), or a "
    "sealed day's stored events can no longer be proven (not_provable)",
    413: "Export or evidence bundle larger than the cap",
    422: "The query ran past its time limit: narrow it",
    429: "Rate limit or stream quota exceeded",
    503: "Database unavailable",
}


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def param(name: str, where: str, schema: dict[str, Any], description: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "in": where,
        "required": where == "path",
        "schema": schema,
        "description": description,
        **extra,
    }


def errors(*statuses: int) -> dict[str, Any]:
    """The error answers every operation may give, and `statuses` besides."""
    return {
        str(s): {"description": _ERROR_TEXT[s], "content": {"application/json": {"schema": ref("Error")}}}
        for s in (400, 401, 403, 404, 422, 429, 503, *statuses)
    }


def ok_json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": "OK", "content": {"application/json": {"schema": schema}}}


def operation(
    operation_id: str,
    summary: str,
    parameters: list[dict[str, Any]],
    responses: dict[str, Any],
    *,
    request_body: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """An operation without its path parameters and security: `assembly.document` adds those from the
    route it describes."""
    op: dict[str, Any] = {"operationId": operation_id, "summary": summary, "parameters": parameters}
    if request_body is not None:
        op["requestBody"] = request_body
    op["responses"] = responses
    return op
