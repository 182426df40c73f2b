"""The query API: downstream services, room owners, moderators and support staff read the logs here.

Every request is authorized on its room or user, every read is recorded in an append-only audit.

The package: `app` (the Starlette app factory) mounts `route_table` (every /v1 route and its handler in
`handlers/`, one module per resource) behind `security.gate`; `handlers` call `queries/` (all of the API's
SQL, one module per resource) and `security/` (tokens, sessions, access rules, cursors, limits, audit);
`openapi/` describes the route table. `context` is what a handler is given; `params`, `errors`,
`settings`, `metrics` are shared by all; `trust` installs the token key the database verifies with.
"""

from pipeline.api.app import create_app, open_pool
from pipeline.api.metrics import ApiMetrics
from pipeline.api.security.auth import Identity, IdentityKind, Scope, TokenVerifier
from pipeline.api.settings import ApiSettings

__all__ = [
    "ApiMetrics",
    "ApiSettings",
    "Identity",
    "IdentityKind",
    "Scope",
    "TokenVerifier",
    "create_app",
    "open_pool",
]
