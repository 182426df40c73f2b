"""One scenario, start to verdict: a fresh topic, schema and consumer group, two workers, three
publishers, the fault, the drain, the check.

    result = await run_scenario(Stack(cluster, postgres, work_dir), SCENARIOS["worker-kill9"], seed=7)

1. Create the topic (6 partitions, replication 3) and migrate a schema of its own; start two `roomlogs
   worker` processes (one in a network namespace when the scenario cuts a link) and wait until they share
   the partitions.
2. Start the publishers (seeded events, paced) and wait until every partition is being ingested.
3. Run the fault (scenarios.py), keep publishing a little longer, stop the publishers (each waits for its
   deliveries to settle).
4. Drain: every worker running again, ingest caught up with the end of every partition; then SIGTERM
   them all (each should exit 0).
5. Check (checker.py) and measure the time to recover of each fault (monitor.py).

Throughout, the harness is the workers' supervisor (`restart: unless-stopped`): a worker that exits when
nobody killed it is started again, and its exit is a problem of the run (the test fails on it).

The brokers and PostgreSQL are the caller's and are left running: whatever a fault stopped is started
again before `run_scenario` returns, even when it fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit

import asyncpg
from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.client import AIOKafkaClient

from pipeline.cli.progress import wait_caught_up
from pipeline.settings import Secret, Settings
from pipeline.stack import free_port
from pipeline.stack.cluster import KafkaCluster
from pipeline.storage import db
from pipeline.storage.migrate import migrate

from . import netns
from .checker import Verdict, check
from .group import Worker, WorkerGroup
from .monitor import Mark, Progress
from .workload import Workload, WorkloadPlan

log = logging.getLogger("jepsen")

PARTITIONS = 6
WORKERS = 2
#: Publishing goes on this long after the last fault, so recovery shows on every partition.
TAIL_SECONDS = 5.0
#: Bounds on the waits: a run that exceeds one reports it (never a timed assertion on speed).
GROUP_FORM_SECONDS = 120.0
DRAIN_SECONDS = 120.0


class HarnessError(Exception):
    """The run could not be carried out as planned (the stack, not the checked guarantees)."""


class PostgresControl(Protocol):
    """What the harness needs of PostgreSQL: EmbeddedPostgres, or the test session's server."""

    @property
    def dsn(self) -> str: ...

    @property
    def running(self) -> bool: ...

    def stop(self) -> None: ...

    def restart(self) -> None: ...


@dataclass(frozen=True)
class Stack:
    cluster: KafkaCluster
    postgres: PostgresControl
    #: worker logs and data directories go here
    work_dir: Path


@dataclass
class Run:
    """What a scenario's fault works with."""

    stack: Stack
    settings: Settings
    rng: random.Random
    group: WorkerGroup
    progress: Progress
    namespace: netns.Namespace | None
    notes: list[str] = field(default_factory=list)
    #: what went wrong in the fault's own steps (a worker's unclean exit on a SIGTERM it was sent)
    problems: list[str] = field(default_factory=list)

    @property
    def partitions(self) -> int:
        return self.settings.events_topic_partitions

    @property
    def work_dir(self) -> Path:
        """The scenario's own directory (worker logs, and whatever a fault keeps)."""
        return self.stack.work_dir / self.settings.events_topic

    @property
    def postgres_port(self) -> int:
        return urlsplit(self.stack.postgres.dsn).port or 5432

    def note(self, text: str) -> None:
        log.info("%s", text)
        self.notes.append(text)

    def problem(self, text: str) -> None:
        log.error("%s", text)
        self.problems.append(text)

    async def pause(self, low: float, high: float) -> float:
        """Sleep a seeded while in [low, high] seconds; return it."""
        seconds = self.rng.uniform(low, high)
        await asyncio.sleep(seconds)
        return seconds

    async def leaders(self) -> dict[int, int]:
        """{partition: id of the broker leading it} for the events topic."""
        client = AIOKafkaClient(bootstrap_servers=self.stack.cluster.bootstrap, client_id="jepsen")
        await client.bootstrap()
        try:
            client.add_topic(self.settings.events_topic)
            await client.force_metadata_update()
            tps = (TopicPartition(self.settings.events_topic, p) for p in range(self.partitions))
            return {tp.partition: int(client.cluster.leader_for_partition(tp)) for tp in tps}
        finally:
            await client.close()

    async def coordinator(self) -> int:
        """Id of the broker coordinating the workers' consumer group."""
        admin = AIOKafkaAdminClient(bootstrap_servers=self.stack.cluster.bootstrap, client_id="jepsen")
        await admin.start()
        try:
            return int(await admin.find_coordinator(self.settings.consumer_group))
        finally:
            await admin.close()

    async def until_recovered(self, mark: Mark, timeout_seconds: float) -> float | None:
        """Wait until the partitions `mark` hit progress again; the seconds it took (None: not within)."""
        deadline = time.monotonic() + timeout_seconds
        while time.monotonic() < deadline:
            recovered = self.progress.recovery(mark)
            if recovered is not None:
                return recovered
            await asyncio.sleep(0.2)
        return None


@dataclass(frozen=True)
class Scenario:
    name: str
    #: what the fault does, for --list, the report and the README
    summary: str
    inject: Callable[[Run], Awaitable[None]]
    #: the first worker runs in a network namespace of its own (its link can be cut)
    needs_netns: bool = False


@dataclass
class Result:
    scenario: str
    seed: int
    verdict: Verdict | None = None
    #: (what, seconds to recover or None when it did not within the run)
    recoveries: list[tuple[str, float | None]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    #: the run itself went wrong: ingest never caught up, a worker exited on its own or not cleanly
    problems: list[str] = field(default_factory=list)
    #: "not possible here: ..." when the scenario cannot run on this machine
    not_possible: str | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return (
            self.not_possible is None and not self.problems and self.verdict is not None and self.verdict.ok
        )

    def failures(self) -> list[str]:
        """Short names of what failed (empty when the run passed)."""
        out = []
        v = self.verdict
        if v is not None:
            named = (
                ("lost", v.lost),
                ("duplicated", v.duplicated or v.duplicated_records),
                ("unexpected ids", v.unexpected),
                ("dead-lettered", v.dead_lettered),
            )
            out += [name for name, found in named if found]
        for problem in self.problems:
            for marker, name in (
                ("exited on its own", "a worker exited"),
                ("did not catch up", "no catch-up"),
                ("on SIGTERM", "unclean exit"),
                ("harness:", "harness"),
            ):
                if marker in problem and name not in out:
                    out.append(name)
        if v is None and not out:
            out.append("no verdict")
        return out

    def recover_seconds(self) -> float | None:
        """The slowest recovery of the run (None when one never happened)."""
        values = [seconds for _, seconds in self.recoveries]
        if not values or any(v is None for v in values):
            return None
        return max(v for v in values if v is not None)


def scenario_settings(stack: Stack, name: str, seed: int) -> Settings:
    tag = f"{name}-{seed}-{uuid.uuid4().hex[:6]}"
    return Settings(
        kafka_bootstrap=stack.cluster.bootstrap,
        kafka_idempotent_producer=True,
        kafka_replication_factor=stack.cluster.replication_factor,
        events_topic=f"jepsen-{tag}",
        events_topic_partitions=PARTITIONS,
        dead_letter_topic=f"jepsen-{tag}-dlq",
        consumer_group=f"jepsen-{tag}",
        postgres_dsn=Secret(stack.postgres.dsn),
        postgres_schema=f"jepsen_{uuid.uuid4().hex[:12]}",
        batch_max_events=500,
        batch_max_wait_seconds=0.1,
        db_retry_initial_seconds=0.1,
        db_retry_max_seconds=1.0,
        shutdown_drain_seconds=10.0,
        log_level="info",
    )


async def _create_topics(settings: Settings) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap, client_id="jepsen")
    await admin.start()
    try:
        rf = settings.kafka_replication_factor
        await admin.create_topics(
            [
                NewTopic(settings.events_topic, settings.events_topic_partitions, rf),
                NewTopic(settings.dead_letter_topic, 1, rf),
            ]
        )
    finally:
        await admin.close()


async def _delete_topics(settings: Settings) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap, client_id="jepsen")
    await admin.start()
    try:
        await admin.delete_topics([settings.events_topic, settings.dead_letter_topic])
    finally:
        await admin.close()


async def _migrate(settings: Settings) -> None:
    conn = await db.connect(settings.postgres_dsn.get(), settings.postgres_schema)
    try:
        await migrate(conn, settings.postgres_schema)
    finally:
        await conn.close()


async def _drop_schema(settings: Settings) -> None:
    """The schema and the roles its migrations made (cluster-wide), as the test fixtures do."""
    schema = settings.postgres_schema
    conn = await asyncpg.connect(settings.postgres_dsn.get(), timeout=30)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        for role in (f"{schema}_api", f"{schema}_worker"):
            if await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", role):
                await conn.execute(f'DROP OWNED BY "{role}"')
                await conn.execute(f'DROP ROLE "{role}"')
    finally:
        await conn.close()


def _workers(settings: Settings, work_dir: Path, namespace: netns.Namespace | None) -> list[Worker]:
    workers = []
    for n in range(1, WORKERS + 1):
        own = settings.replace(metrics_port=free_port(), worker_data_dir=str(work_dir / f"w{n}"))
        prefix: list[str] = []
        if namespace is not None and n == 1:
            own = own.replace(metrics_host=namespace.ns_address)
            prefix = namespace.exec_prefix
        workers.append(Worker(f"w{n}", own, work_dir / f"worker-{n}.log", prefix))
    return workers


async def _restore(stack: Stack) -> list[str]:
    """Start again whatever a fault left stopped (a broker, PostgreSQL); what had to be restored."""
    restored = []
    if not stack.postgres.running:
        await asyncio.to_thread(stack.postgres.restart)
        restored.append("PostgreSQL")
    for node in stack.cluster.nodes:
        if not node.running:
            await asyncio.to_thread(stack.cluster.restart, node)
            restored.append(f"broker {node.node_id}")
    return restored


async def _wait_ingesting(progress: Progress, partitions: int, timeout_seconds: float) -> bool:
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        latest = progress.latest()
        if len(latest) == partitions and all(v > 0 for v in latest.values()):
            return True
        await asyncio.sleep(0.2)
    return False


async def run_scenario(
    stack: Stack,
    scenario: Scenario,
    seed: int,
    *,
    rate_per_second: float = 150.0,
    keep: bool = False,
) -> Result:
    """Run `scenario` with `seed`; the Result carries the checker's verdict and the recoveries."""
    result = Result(scenario.name, seed)
    started = time.monotonic()
    if scenario.needs_netns and (reason := netns.unsupported_reason()) is not None:
        result.not_possible = f"not possible here: {reason}"
        return result
    settings = scenario_settings(stack, scenario.name, seed)
    work_dir = stack.work_dir / settings.events_topic
    work_dir.mkdir(parents=True, exist_ok=True)
    await _create_topics(settings)
    await _migrate(settings)
    namespace = netns.create(seed) if scenario.needs_netns else None
    try:
        if namespace is not None:
            await namespace.allow_in_hba(settings.postgres_dsn.get())
        group = WorkerGroup(_workers(settings, work_dir, namespace))
        progress = Progress(
            settings.postgres_dsn.get(), settings.postgres_schema, settings.consumer_group,
            settings.events_topic,
        )  # fmt: skip
        run = Run(
            stack, settings, random.Random(f"{seed}/{scenario.name}/faults"), group, progress, namespace
        )
        plan = WorkloadPlan(seed, scenario.name, PARTITIONS, rate_per_second=rate_per_second)
        workload = Workload(plan, settings.kafka_bootstrap, settings.events_topic)
        try:
            await _run(run, scenario, workload, result)
        finally:
            codes = await group.close()
            await progress.stop()
            for worker in group.workers:
                if worker.unexpected_exits:
                    result.problems.append(
                        f"{worker.name} exited on its own with code(s) {worker.unexpected_exits}, restarted "
                        f"by the harness; first exit after: {worker.exit_errors[0]!r} (log {worker.log_path})"
                    )
            result.problems += [
                f"{name} exited with code {code} on SIGTERM (log {work_dir})"
                for name, code in codes.items()
                if code not in (0, None)
            ]
            result.notes += run.notes
            result.problems += run.problems
            restored = await _restore(stack)
            if restored:
                result.notes.append(f"restored after the run: {', '.join(restored)}")
        result.recoveries = [(mark.label, progress.recovery(mark)) for mark in progress.marks]
        result.verdict = await check(
            settings.postgres_dsn.get(), settings.postgres_schema, settings.kafka_bootstrap,
            settings.events_topic, workload.history,
        )  # fmt: skip
        if workload.close_reports:
            result.notes.append("publishers reported at close: " + "; ".join(workload.close_reports))
    finally:
        if namespace is not None:
            await namespace.aclose(settings.postgres_dsn.get())
        if not keep:
            await _drop_schema(settings)
            await _delete_topics(settings)
    result.seconds = time.monotonic() - started
    return result


async def _run(run: Run, scenario: Scenario, workload: Workload, result: Result) -> None:
    group = run.group
    group.start()
    supervisor = asyncio.create_task(group.supervise(), name="supervisor")
    try:
        await _stream(run, scenario, workload, result)
    finally:
        supervisor.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await supervisor


async def _stream(run: Run, scenario: Scenario, workload: Workload, result: Result) -> None:
    group, progress, settings = run.group, run.progress, run.settings
    if not await group.wait_assigned(run.partitions, GROUP_FORM_SECONDS, members=WORKERS):
        exits = {w.name: (w.unexpected_exits, w.exit_errors) for w in group.workers if w.unexpected_exits}
        raise HarnessError(
            f"the worker group did not form within {GROUP_FORM_SECONDS:.0f}s: {await group.assignment()}"
            + (f"; workers that exited on their own: {exits}" if exits else "")
        )
    progress.start()
    await workload.start()
    try:
        if not await _wait_ingesting(progress, run.partitions, 60.0):
            raise HarnessError(f"ingest did not start on every partition: {progress.latest()}")
        faults_from = time.monotonic()
        await scenario.inject(run)
        await asyncio.sleep(TAIL_SECONDS)
        run.note(
            "longest stretch in which no partition progressed, from the fault to the end of the stream: "
            f"{progress.standstill(faults_from, time.monotonic()):.1f} s"
        )
    finally:
        await workload.stop()
    for worker in group.workers:  # the supervisor's part: whatever the fault left down runs again
        worker.check_exit()
        if worker.stopped:
            worker.sigcont()
        if not worker.alive:
            worker.start()
    await _restore(run.stack)
    if not await wait_caught_up(settings, DRAIN_SECONDS, progress=False):
        result.problems.append(
            f"ingest did not catch up within {DRAIN_SECONDS:.0f}s of the drain: stored {progress.latest()}"
        )
    run.note(f"after the drain: partitions held {await group.assignment()}")
