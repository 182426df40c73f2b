"""The fault harness (tests/faults/jepsen) on the session's 3-node Apache Kafka cluster and PostgreSQL.

One test per fault. Each runs three room-server publishers (idempotence on, acks=all) and two `roomlogs
worker` processes in one consumer group, hits the stream with the fault, drains, and asserts the
checker's verdict: every event a publisher saw acknowledged is stored, none twice (by event id and by
Kafka record), nothing dead-lettered, ingest caught up, every worker exited cleanly when asked. Times to
recover are printed, never asserted.

The seed is ROOMLOGS_TEST_FAULTS_SEED (default 7); a failure prints the command that replays the scenario
with it: ``python bench/faults.py --seed N --faults NAME``. worker-netcut needs root and network
namespaces; where they are missing it is reported as "not possible here" with the reason.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from jepsen import SCENARIOS, Stack, details, netns_unsupported_reason, run_scenario, table

from pipeline.stack import EmbeddedPostgres
from pipeline.stack.cluster import KafkaCluster

pytestmark = [pytest.mark.slow, pytest.mark.apache_lane]

SEED = int(os.environ.get("ROOMLOGS_TEST_FAULTS_SEED", "7"))


@pytest.mark.timeout(420)
@pytest.mark.parametrize("name", list(SCENARIOS))
async def test_under_the_fault_no_acknowledged_event_is_lost_duplicated_or_dead_lettered(
    name: str,
    apache_cluster: KafkaCluster,
    postgres_server: object,
    tmp_path: Path,
    figures: Callable[[str], None],
) -> None:
    scenario = SCENARIOS[name]
    if scenario.needs_netns and (reason := netns_unsupported_reason()) is not None:
        pytest.skip(f"{name}: not possible here: {reason}")
    if not isinstance(postgres_server, EmbeddedPostgres):
        pytest.skip("the fault harness stops PostgreSQL and edits its pg_hba.conf: only the embedded server")

    result = await run_scenario(Stack(apache_cluster, postgres_server, tmp_path), scenario, SEED)

    report = (
        f"\n{table([result])}\n{details(result)}\n"
        f"replay: python bench/faults.py --seed {SEED} --faults {name} (logs in {tmp_path})"
    )
    figures(table([result]))
    assert result.problems == [], report
    verdict = result.verdict
    assert verdict is not None, report
    assert verdict.acknowledged > 0, report
    assert verdict.lost == [], report
    assert verdict.duplicated == [] and verdict.duplicated_records == [], report
    assert verdict.unexpected == [], report
    assert verdict.dead_lettered == {}, report
