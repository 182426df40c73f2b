"""A fault harness in the Jepsen style for roomlogs on Apache Kafka.

Concurrent room-server publishers send events with unique, seeded ids (idempotence on, acks=all); a
group of `roomlogs worker` processes ingests them into PostgreSQL; a fault hits mid-stream; then a drain
and a checker: every event the publishers saw acknowledged is stored, none twice, nothing dead-lettered.

Run by the test suite (tests/faults/test_jepsen.py) and by users: ``python bench/faults.py --seed 7``.
"""

from .checker import Verdict
from .harness import HarnessError, Result, Scenario, Stack, run_scenario
from .netns import unsupported_reason as netns_unsupported_reason
from .report import details, table
from .scenarios import SCENARIOS

__all__ = [
    "SCENARIOS",
    "HarnessError",
    "Result",
    "Scenario",
    "Stack",
    "Verdict",
    "details",
    "netns_unsupported_reason",
    "run_scenario",
    "table",
]
