"""The document's assembly: info, the paths of the route table, the operations describing them, schemas.

Its paths and methods are the route table's (`pipeline.api.route_table.ROUTES`); each route's operation
is found by its audit action in `operations` or `console_operations`, and its path parameters are read
from its path template. A route without an operation, or an operation of no route, fails the assembly
(tests/api/test_openapi.py builds it).
"""

from __future__ import annotations

import re
from typing import Any

from pipeline.api.openapi.console_operations import console_operations
from pipeline.api.openapi.operations import log_operations
from pipeline.api.openapi.parts import IDENT, param
from pipeline.api.openapi.record_operations import record_operations, record_schemas
from pipeline.api.openapi.schemas import schemas
from pipeline.api.openapi.sign_in_operations import sign_in_operations
from pipeline.api.route_table import ROUTES, RouteSpec
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
    described = {
        **log_operations(s, reason, client_id),
        **console_operations(s, reason, client_id),
        **record_operations(s, reason, client_id),
        **sign_in_operations(client_id),
    }
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
                "request id the API gives it (`X-Request-Id` of every answer); /v1/seal-keys alone (public "
                "keys, no log) needs no token and records only its refusals. Errors share one shape with "
                "a stable `code`. "
                f"Limits: pages of at most {s.max_page_size} events, ranges of at most "
                f"{s.max_range_days} days, exports of at most {s.export_max_rows} events, "
                f"{s.rate_limit_per_second:g} requests/s per caller (burst {s.rate_limit_burst})."
            ),
        },
        "paths": paths,
        "components": {
            "schemas": {**schemas(), **record_schemas()},
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
            f"{spec.action!r} in pipeline/api/openapi/operations.py (or console_operations.py)"
        )
    names = _PATH_PARAMETER.findall(spec.path)
    unknown = [n for n in names if n not in path_parameters]
    if unknown:
        raise LookupError(f"{spec.path}: no OpenAPI description of path parameter(s) {unknown}")
    assembled = {
        "operationId": op["operationId"],
        "summary": op["summary"],
        "security": [] if spec.public else _SECURED,
        "parameters": [path_parameters[n] for n in names] + op["parameters"],
    }
    assembled.update((k, v) for k, v in op.items() if k not in assembled)
    return assembled
