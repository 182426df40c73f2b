"""The query API: downstream services, room owners, moderators and support staff read the logs here.

Every request is authorized on its room or user, every read is recorded in an append-only audit.
"""

from pipeline.api.app import create_app, open_pool
from pipeline.api.auth import Identity, IdentityKind, Scope, TokenVerifier
from pipeline.api.metrics import ApiMetrics
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
