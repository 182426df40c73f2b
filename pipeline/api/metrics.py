"""The API's Prometheus metrics, in one object built from an injected registry (tests get a fresh one).

Label values are bounded: `route` is a route template (``/v1/rooms/{room_id}/events``), never a filled-in
path; `status` an HTTP status; `reason` a denial code from `pipeline.api.errors`; `outcome` an
access_audit outcome.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

_SECONDS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class ApiMetrics:
    def __init__(self, registry: CollectorRegistry, prefix: str = "roomlogs_api") -> None:
        self.registry = registry
        self.requests = Counter(
            f"{prefix}_requests",
            "API requests answered, by route template and HTTP status",
            ["route", "status"],
            registry=registry,
        )
        self.duration = Histogram(
            f"{prefix}_request_duration_seconds",
            "Time to answer an API request (for streams: until the response starts)",
            ["route"],
            buckets=_SECONDS_BUCKETS,
            registry=registry,
        )
        self.denials = Counter(
            f"{prefix}_denials",
            "Requests refused for lack of identity, right, reason, scope or quota",
            ["reason"],
            registry=registry,
        )
        self.rows = Counter(
            f"{prefix}_rows_returned",
            "Events returned (pages, exports, live tails), by route template",
            ["route"],
            registry=registry,
        )
        self.audit_failures = Counter(
            f"{prefix}_audit_failures",
            "Access-audit rows that could not be written (the entry went to the log instead), by outcome",
            ["outcome"],
            registry=registry,
        )

    def observe(self, route: str, status: int, seconds: float) -> None:
        self.requests.labels(route, str(status)).inc()
        self.duration.labels(route).observe(seconds)
