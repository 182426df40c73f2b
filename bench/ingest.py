"""Ingest benchmark: the real worker against the raw ceiling, same run, same PostgreSQL; and what it costs.

    python bench/ingest.py [--events 1000000] [--rooms 2000] [--workers 1] [--partitions 6]
                           [--dsn postgresql://...] [--bootstrap host:port] [--kafka tansu|apache]
                           [--kafka-nodes 3] [--work-dir DIR]

1. Publishes N simulated events (realistic mix, 1% bad) to a fresh topic of --partitions partitions.
2. Raw ceiling: aiokafka `getmany` + orjson + binary COPY into the same partitioned `events` table, with no
   normalization, validation, room state, offsets of record or rollups (its schema's rollup trigger is
   disabled): the least any ingest can do.
3. The real worker: --workers `roomlogs worker` processes (separate processes, as deployed) in one consumer
   group consume the same topic into their own schema. Throughput is timed from the moment every worker
   holds partitions to the last commit (start-up and the group's joins excluded; a run too small for that
   is timed from the start and says so). Their RSS is sampled throughout.

Prints events/s for both, their ratio, the workers' RSS (peak, and at each quarter), and what each side cost
in CPU seconds over the timed stretch, as events/s per core: the worker processes, PostgreSQL (the server
and every backend, when it was started here) and the broker (when started here; the JVMs for Apache Kafka).
CPU seconds do not depend on what else the machine runs, unlike events/s: they are the figures to size
with (deploy/README.md, "Scaling"). From them it also prints what caps the worker (`print_bounds`): its
PostgreSQL work, which runs one transaction after another on each worker's connection, and all the CPU both
sides spent, over the machine's cores.

Without --dsn / --bootstrap it starts an embedded PostgreSQL and a broker and stops them at the end: Tansu,
or with --kafka apache a local Apache Kafka KRaft cluster (3 nodes, replication 3, min.insync.replicas=2,
idempotent producers, as in production). Everything the run writes (servers' data, worker state, the
workers' logs worker-N.log) goes into its work directory (bench/workdir.py).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import orjson
import psutil
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from tqdm import tqdm
from workdir import add_work_dir_argument, run_dir

from pipeline.cli.devstack import spawn_worker
from pipeline.evidence.keys import SealKey
from pipeline.publisher.simulator import SimulationConfig, iter_events
from pipeline.settings import Secret, Settings
from pipeline.stack import TANSU_CLIENT_SETTINGS, EmbeddedKafka, EmbeddedPostgres, free_port
from pipeline.stack.cluster import KAFKA_VERSION, KafkaCluster
from pipeline.storage import db, seals
from pipeline.storage.batch import EVENT_COLUMNS
from pipeline.storage.migrate import migrate
from pipeline.storage.partitions import PartitionManager
from pipeline.worker.collector import tune_for_batches

_ASSIGNED = re.compile(rb"^roomlogs_partitions_assigned(?:\{[^}]*\})? (\S+)$", re.MULTILINE)
#: the worker's own histograms of where a batch's time went (pipeline/metrics.py)
_SPENT = re.compile(
    rb"^roomlogs_(batch_write_seconds|detect_seconds|batch_events)_(sum|count) (\S+)$", re.MULTILINE
)
#: rooms of the batches' chat the detectors bounded from memory or read from storage
_DETECTOR_ROOMS = re.compile(
    rb'^roomlogs_detector_rooms_total\{how="(memory|storage)"\} (\S+)$', re.MULTILINE
)


def tree_cpu_seconds(proc: psutil.Process) -> float:
    """User + system CPU seconds of a process, its children that ended (PostgreSQL's backends) and the ones
    still running."""
    t = proc.cpu_times()
    total = t.user + t.system + t.children_user + t.children_system
    for child in proc.children(recursive=True):
        try:
            c = child.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += c.user + c.system
    return total


def own_cpu_seconds() -> float:
    """User + system CPU seconds of this process alone (its children are the servers and the workers)."""
    t = psutil.Process().cpu_times()
    return t.user + t.system


def machine_busy_seconds() -> float:
    """CPU seconds every core of the machine spent busy so far (all processes, ours and anyone's)."""
    t = psutil.cpu_times()
    return t.user + t.system + sum(getattr(t, f, 0.0) for f in ("nice", "irq", "softirq", "steal"))


class Meter:
    """CPU seconds and RSS of a group of process trees (a broker, PostgreSQL, the workers)."""

    def __init__(self, name: str, pids: list[int]) -> None:
        self.name = name
        self._procs = [psutil.Process(pid) for pid in pids]
        self.peak_rss = 0

    def cpu_seconds(self) -> float:
        return sum(tree_cpu_seconds(p) for p in self._procs)

    def rss(self) -> int:
        return sum(p.memory_info().rss for p in self._procs)

    def sample_rss(self) -> int:
        rss = self.rss()
        self.peak_rss = max(self.peak_rss, rss)
        return rss


@dataclass
class Meters:
    """The servers started here (a broker, PostgreSQL): None for one given with --bootstrap / --dsn."""

    broker: Meter | None
    postgres: Meter | None
    _task: asyncio.Task[None] | None = field(default=None, repr=False)

    def snapshot(self) -> dict[str, float]:
        return {m.name: m.cpu_seconds() for m in (self.broker, self.postgres) if m is not None}

    def start(self) -> None:
        async def sample() -> None:
            while True:
                if self.broker is not None:
                    self.broker.sample_rss()
                await asyncio.sleep(0.5)

        self._task = asyncio.create_task(sample())

    def broker_phase(self, name: str, started: dict[str, float], seconds: float) -> None:
        """Print the phase's broker CPU (seconds, and share of the cores' time) and its peak RSS so far."""
        if self.broker is None:
            return
        used = self.broker.cpu_seconds() - started["broker"]
        cores = os.cpu_count() or 1
        print(
            f"  broker during {name}: {used:,.1f} CPU s in {seconds:,.1f} s "
            f"({used / seconds / cores:.0%} of {cores} cores), RSS now {self.broker.rss() / 2**20:,.0f} MiB, "
            f"peak {self.broker.peak_rss / 2**20:,.0f} MiB",
            flush=True,
        )


def per_core(label: str, events: int, cpu_seconds: float | None, seconds: float) -> str:
    if cpu_seconds is None:
        return f"{label}: not measured (not started by this run)"
    rate = f"{events / cpu_seconds:,.0f}" if cpu_seconds > 0 else "n/a"
    return (
        f"{label} CPU {cpu_seconds:,.1f} s ({cpu_seconds / seconds:.2f} cores busy): "
        f"{rate} events/s per {label} core"
    )


async def publish(
    bootstrap: str, topic: str, n: int, rooms: int, partitions: int, *, replication: int, idempotent: bool
) -> tuple[int, float]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    await admin.create_topics([NewTopic(topic, partitions, replication)])
    await admin.close()
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        enable_idempotence=idempotent,
        linger_ms=10,
        max_batch_size=512 * 1024,
        compression_type="gzip",
    )
    await producer.start()
    config = SimulationConfig(rooms=rooms, events=n, bad_event_ratio=0.01, seed=1)
    started = time.perf_counter()
    sent = 0
    with tqdm(total=n, unit="ev", desc="publish", file=sys.stderr, mininterval=1) as bar:
        for key, value, _ in iter_events(config, datetime.now(UTC)):
            await producer.send(topic, value=value, key=key)
            sent += 1
            if sent % 1000 == 0:
                bar.update(1000)
                await asyncio.sleep(0)
        await producer.flush()
    await producer.stop()
    return sent, time.perf_counter() - started


def _str(value: object) -> str | None:
    return value if type(value) is str else None


async def raw_ceiling(settings: Settings, n: int, partitions: int) -> float:
    """getmany + orjson + binary COPY, nothing else. Returns events/s.

    It runs under the same garbage-collector tuning as the worker (pipeline.worker.collector), so that the
    ratio compares the work done, not the collector's settings.
    """
    tune_for_batches()
    pool = await db.create_pool(settings.postgres_dsn.get(), settings.postgres_schema, 2)
    # Manual assignment, no group: the ceiling pays for no rebalance and no offset commit.
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap,
        enable_auto_commit=False,
        max_partition_fetch_bytes=8 << 20,
        fetch_max_bytes=64 << 20,
    )
    await consumer.start()
    tps = [TopicPartition(settings.events_topic, p) for p in range(partitions)]
    consumer.assign(tps)
    for tp, offset in (await consumer.beginning_offsets(tps)).items():
        consumer.seek(tp, offset)
    done = 0
    started = None
    fromiso = datetime.fromisoformat
    loads = orjson.loads
    lo, hi = datetime.now(UTC) - timedelta(days=1), datetime.now(UTC) + timedelta(hours=1)
    with tqdm(total=n, unit="ev", desc="raw ceiling", file=sys.stderr, mininterval=1) as bar:
        while done < n:
            batches = await consumer.getmany(timeout_ms=1000, max_records=settings.batch_max_events)
            if started is None and batches:
                started = time.perf_counter()
            rows = []
            for tp, msgs in batches.items():
                for m in msgs:
                    if len(m.value) > settings.max_event_bytes:
                        continue
                    try:
                        d = loads(m.value)
                        data, actor = d.get("data") or {}, d.get("actor") or {}
                        ts = fromiso(d["occurred_at"])
                        eid, room, etype = d["event_id"], d["room_id"], d["type"]
                        if not (
                            type(data) is dict
                            and type(actor) is dict
                            and type(room) is str
                            and type(etype) is str
                            and len(eid) == 36
                            and lo < ts < hi
                        ):
                            continue  # just enough checking that COPY does not fail on the 1% bad events
                        target = data.get("target") or data.get("recipient") or {}
                        body = data.get("text") or data.get("reason")
                        # The same columns the worker fills, straight from the document: payload is the
                        # event as received, body the chat text, no validation or normalization.
                        rows.append(
                            (
                                eid,
                                ts,
                                "public",
                                room,
                                etype,
                                1,
                                _str(actor.get("user_id")),
                                _str(target.get("user_id")) if type(target) is dict else None,
                                _str(body),
                                m.value,
                                tp.partition,
                                m.offset,
                            )
                        )
                    except Exception:  # the 1% bad events: the ceiling skips them
                        pass
                done += len(msgs)
            if rows:
                async with pool.acquire() as conn:
                    await conn.copy_records_to_table("events", records=rows, columns=EVENT_COLUMNS)
            bar.update(sum(len(m) for m in batches.values()))
    elapsed = time.perf_counter() - (started or time.perf_counter())
    await consumer.stop()
    await pool.close()
    return n / elapsed


async def stored_total(conn: asyncpg.Connection, group: str) -> int:
    """Records the group has written (offsets of record), read on one monitoring connection."""
    return int(
        await conn.fetchval(
            "SELECT coalesce(sum(next_offset), 0) FROM ingest_offsets WHERE consumer_group = $1", group
        )
    )


def assigned_partitions(port: int) -> int:
    """`roomlogs_partitions_assigned` of the worker whose metrics are on `port` (0 while it starts)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=1) as answer:
            found = _ASSIGNED.search(answer.read())
    except OSError:
        return 0
    return int(float(found.group(1))) if found else 0


def time_spent(port: int) -> dict[str, float]:
    """{"batch_write_seconds_sum": ..., "detect_seconds_sum": ..., "batch_events_count": ...} of a worker."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as answer:
            text = answer.read()
    except OSError:
        return {}
    spent = {f"{m[1].decode()}_{m[2].decode()}": float(m[3]) for m in _SPENT.finditer(text)}
    spent |= {f"rooms_{m[1].decode()}": float(m[2]) for m in _DETECTOR_ROOMS.finditer(text)}
    return spent


@dataclass
class Worker:
    number: int
    proc: subprocess.Popen[bytes]
    metrics_port: int
    log: Path
    meter: Meter
    peak_rss: int = 0


@dataclass
class GroupRun:
    rate: float
    events: int
    seconds: float
    #: name -> CPU seconds over the timed stretch: "worker", "postgres" / "broker" when measured, "bench"
    #: (this process) and "machine" (every process's)
    cpu: dict[str, float]
    startup_included: bool
    workers: list[Worker]
    #: (percent of the backlog, RSS of the largest worker) at each quarter
    samples: list[tuple[int, int]]
    #: the workers' own figures, summed: batches, seconds writing, of which in the detectors
    spent: dict[str, float] = field(default_factory=dict)


async def worker_group(
    settings: Settings, n: int, workers: int, partitions: int, work_dir: Path, meters: Meters
) -> GroupRun:
    """Run `workers` `roomlogs worker` processes in one group until the backlog of `n` records is written."""
    group: list[Worker] = []
    for number in range(1, workers + 1):
        own = settings.replace(metrics_port=free_port(), worker_data_dir=str(work_dir / f"worker-{number}"))
        log = work_dir / f"worker-{number}.log"
        proc = spawn_worker(own, log)
        group.append(Worker(number, proc, own.metrics_port, log, Meter("worker", [proc.pid])))

    def cpu() -> dict[str, float]:
        return {
            **meters.snapshot(),
            "worker": sum(w.meter.cpu_seconds() for w in group),
            "machine": machine_busy_seconds(),
            "bench": own_cpu_seconds(),
        }

    spawned_at, spawned_cpu = time.perf_counter(), cpu()
    window: tuple[float, int, dict[str, float]] | None = None  # (when, written, CPU) the timing starts
    settled = False
    samples: list[tuple[int, int]] = []
    next_quarter = 1
    monitor = await db.connect(settings.postgres_dsn.get(), settings.postgres_schema)
    try:
        with tqdm(total=n, unit="ev", desc=f"workers ({workers})", file=sys.stderr, mininterval=1) as bar:
            while True:
                for w in group:
                    if w.proc.poll() is not None:
                        code = w.proc.returncode
                        raise SystemExit(f"worker {w.number} exited with code {code}: see {w.log}")
                    w.peak_rss = max(w.peak_rss, w.meter.sample_rss())
                done = await stored_total(monitor, settings.consumer_group)
                bar.update(done - bar.n)
                now = time.perf_counter()
                if not settled:
                    held = await asyncio.gather(
                        *(asyncio.to_thread(assigned_partitions, w.metrics_port) for w in group)
                    )
                    settled = sum(1 for h in held if h) == min(workers, partitions)
                if settled and window is None and done < n:
                    window = (now, done, cpu())
                while next_quarter <= 4 and done >= n * next_quarter // 4:
                    samples.append((25 * next_quarter, max(w.meter.rss() for w in group)))
                    next_quarter += 1
                if done >= n:
                    ended_cpu = cpu()
                    spent: dict[str, float] = {}
                    for figures in await asyncio.gather(
                        *(asyncio.to_thread(time_spent, w.metrics_port) for w in group)
                    ):
                        for key, value in figures.items():
                            spent[key] = spent.get(key, 0.0) + value
                    break
                await asyncio.sleep(0.1)
    finally:
        await monitor.close()
        for w in group:
            w.proc.send_signal(signal.SIGTERM)
        for w in group:
            try:
                w.proc.wait(60)
            except subprocess.TimeoutExpired:
                w.proc.kill()
    startup_included = window is None
    started_at, first_n, started_cpu = window or (spawned_at, 0, spawned_cpu)
    seconds = now - started_at
    events = n - first_n
    used = {name: ended_cpu[name] - started_cpu[name] for name in ended_cpu}
    return GroupRun(events / seconds, events, seconds, used, startup_included, group, samples, spent)


async def prepare_schema(
    settings: Settings, today: datetime, *, rollups: bool = True, seal_key: SealKey | None = None
) -> None:
    conn = await db.connect(settings.postgres_dsn.get(), settings.postgres_schema)
    try:
        await migrate(conn, settings.postgres_schema)
        if not rollups:  # the ceiling stores rows and nothing else: no rollups (migration 0016)
            await conn.execute("ALTER TABLE events DISABLE TRIGGER events_rollups_insert")
        if seal_key is not None:
            # sealing on, as the sealing run's first step makes it: the writer refuses closed days' events
            await seals.add_key(conn, seal_key.key_id, seal_key.public_raw)
        pm = PartitionManager()
        await pm.load(conn)
        classes = [r["name"] for r in await conn.fetch("SELECT name FROM retention_classes")]
        for cls in classes:  # the simulator's history reaches back 10 minutes: yesterday too
            await pm.premake(conn, [cls], (today - timedelta(days=1)).date(), 3)
    finally:
        await conn.close()


async def main_async(
    args: argparse.Namespace,
    bootstrap: str,
    dsn: str,
    work_dir: Path,
    broker_pids: list[int],
    postgres_pid: int | None,
    replication: int,
) -> None:
    apache = args.kafka == "apache"
    topic = f"bench-{int(time.time())}"
    base = Settings(
        kafka_bootstrap=bootstrap,
        kafka_idempotent_producer=apache,
        kafka_replication_factor=replication,
        events_topic=topic,
        postgres_dsn=Secret(dsn),
        events_topic_partitions=args.partitions,
        dead_letter_topic=f"{topic}-dlq",
        deletions_topic=f"{topic}-deletions",
        alerts_topic=f"{topic}-alerts",
        detectors_enabled=not args.no_detectors,
        log_level="warning",
    )
    if args.batch_events:
        base = base.replace(batch_max_events=args.batch_events)
    if not apache:
        base = base.replace(**TANSU_CLIENT_SETTINGS)
    today = datetime.now(UTC)
    raw = base.replace(postgres_schema="bench_raw", consumer_group="bench-raw")
    worker = base.replace(postgres_schema="bench_worker", consumer_group="bench-worker")
    for s in (raw, worker):
        conn = await db.connect(dsn, "public")
        await conn.execute(f"DROP SCHEMA IF EXISTS {s.postgres_schema} CASCADE")
        await conn.close()
        key = SealKey.generate(work_dir / "seal-key.pem") if args.seal and s is worker else None
        await prepare_schema(s, today, rollups=s is worker, seal_key=key)

    meters = Meters(
        broker=Meter("broker", broker_pids) if broker_pids else None,
        postgres=Meter("postgres", [postgres_pid]) if postgres_pid is not None else None,
    )
    meters.start()
    if meters.broker is not None:
        print(f"  broker at rest: RSS {meters.broker.rss() / 2**20:,.0f} MiB", flush=True)
    cpu = meters.snapshot()
    n, publish_seconds = await publish(
        bootstrap, topic, args.events, args.rooms, args.partitions, replication=replication, idempotent=apache
    )
    print(f"published {n:,} events in {publish_seconds:.1f}s ({n / publish_seconds:,.0f}/s)", flush=True)
    meters.broker_phase("publish", cpu, publish_seconds)

    cpu, own_cpu, started = meters.snapshot(), own_cpu_seconds(), time.perf_counter()
    ceiling = await raw_ceiling(raw, n, args.partitions)
    seconds = time.perf_counter() - started
    print(f"raw ceiling (getmany + orjson + binary COPY): {ceiling:,.0f} events/s", flush=True)
    ceiling_cpu = own_cpu_seconds() - own_cpu
    pg = meters.postgres.cpu_seconds() - cpu["postgres"] if meters.postgres else None
    print(f"  {per_core('ceiling process', n, ceiling_cpu, seconds)}")
    print(f"  {per_core('PostgreSQL', n, pg, seconds)}")
    meters.broker_phase("raw ceiling", cpu, seconds)

    if args.pg_statements:
        await statements_reset(dsn)
    cpu, started = meters.snapshot(), time.perf_counter()
    run = await worker_group(worker, n, args.workers, args.partitions, work_dir, meters)
    processes = f"{args.workers} process{'es' if args.workers > 1 else ''}"
    what = "normalize, classify, dead-letter, offsets of record, rollups"
    what += ", detectors" if worker.detectors_enabled else ""
    what += ", sealing on" if args.seal else ""
    print(f"real worker, {processes} ({what}): {run.rate:,.0f} events/s")
    how = (
        "from the first worker's start (too few events to time past start-up and the group's joins)"
        if run.startup_included
        else f"from every worker holding partitions to the last commit ({run.events:,} events)"
    )
    print(f"  timed {run.seconds:,.1f} s {how}")
    print(f"  {per_core('worker', run.events, run.cpu['worker'], run.seconds)}")
    if run.spent.get("batch_write_seconds_count"):
        batches = run.spent["batch_write_seconds_count"]
        print(
            f"  {batches:,.0f} batches (mean {run.spent.get('batch_events_sum', 0) / batches:,.0f} records), "
            f"{run.spent['batch_write_seconds_sum']:,.1f} s writing (start-up included), of which "
            f"{run.spent.get('detect_seconds_sum', 0.0):,.1f} s in the detectors"
        )
    if run.spent.get("rooms_memory") or run.spent.get("rooms_storage"):
        print(
            f"  detectors: {run.spent.get('rooms_memory', 0):,.0f} rooms of the batches' chat bounded from "
            f"memory, {run.spent.get('rooms_storage', 0):,.0f} read from storage"
        )
    print(f"  {per_core('PostgreSQL', run.events, run.cpu.get('postgres'), run.seconds)}")
    if "broker" in run.cpu:
        print(f"  {per_core('broker', run.events, run.cpu['broker'], run.seconds)}")
    # on a shared machine events/s depend on what else ran; CPU seconds per event do not
    others = run.cpu["machine"] - sum(v for k, v in run.cpu.items() if k != "machine")
    print(f"  other processes on the machine meanwhile: {max(others, 0.0) / run.seconds:.2f} cores busy")
    meters.broker_phase("real worker (start-up included)", cpu, time.perf_counter() - started)
    print(f"ratio worker / ceiling: {run.rate / ceiling:.2f}")
    print_bounds(run.events, run.cpu["worker"], run.cpu.get("postgres"), args.workers, ceiling)
    if args.pg_statements:
        await print_statements(dsn, args.pg_statements, n)
    print(
        f"worker peak RSS: {max(w.peak_rss for w in run.workers) / 2**20:,.0f} MiB; at "
        + ", ".join(f"{pct}%: {rss / 2**20:,.0f} MiB" for pct, rss in run.samples)
        + (" (the largest worker)" if args.workers > 1 else "")
    )


#: Server settings of the PostgreSQL started here for --pg-statements.
STATEMENT_SETTINGS = {"shared_preload_libraries": "pg_stat_statements", "pg_stat_statements.track": "all"}


async def statements_reset(dsn: str) -> None:
    """Make pg_stat_statements available (in `public`) and forget what it counted so far."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements SCHEMA public")
        await conn.execute("SELECT public.pg_stat_statements_reset()")
    except asyncpg.PostgresError as e:
        print(f"  --pg-statements: not available on this PostgreSQL ({e}); left out", flush=True)
    finally:
        await conn.close()


async def print_statements(dsn: str, top: int, events: int) -> None:
    """The `top` statements by time spent in PostgreSQL since `statements_reset` (the worker's run)."""
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            """SELECT total_exec_time AS ms, calls, toplevel,
                      left(regexp_replace(query, '\\s+', ' ', 'g'), 100) AS query
                 FROM public.pg_stat_statements ORDER BY total_exec_time DESC LIMIT $1""",
            top,
        )
    except asyncpg.PostgresError:
        return  # said when reset
    finally:
        await conn.close()
    print(
        f"PostgreSQL time by statement during the worker's run (pg_stat_statements, top {top}; wall time "
        "in the server, waits included; 'nested': run inside another statement, the rollups' trigger or a "
        "function, and counted in that one too):"
    )
    for r in rows:
        where = "" if r["toplevel"] else " (nested)"
        per_event = r["ms"] * 1000 / events
        print(
            f"  {r['ms']:9,.0f} ms {r['calls']:>7,} calls {per_event:6.2f} µs/event{where}: "
            + r["query"]
        )


def print_bounds(
    events: int, worker_cpu: float, postgres_cpu: float | None, workers: int, ceiling: float
) -> None:
    """What caps the worker's events/s, from the CPU seconds each side spent (not from the clock), about:
    - a worker writes its batches one transaction after another on one connection, so its PostgreSQL work
      runs on one core at a time: `workers` connections at most (and no more than the cores);
    - all the CPU both spent, spread over every core with none idle.
    (PostgreSQL's CPU includes its background processes, which run beside the connections.)"""
    if not postgres_cpu or not events:
        return
    cores = os.cpu_count() or 1
    serial = events / postgres_cpu * min(workers, cores)
    spread = events / ((worker_cpu + postgres_cpu) / cores)
    print(
        f"bounds: PostgreSQL's CPU, {postgres_cpu / events * 1e6:,.1f} µs an event (its background processes "
        f"included), on {min(workers, cores)} connection(s) each running one transaction after another, "
        f"allows about {serial:,.0f} events/s ({serial / ceiling:.2f} of the ceiling) however little the "
        f"worker's Python costs; all the CPU spent ({(worker_cpu + postgres_cpu) / events * 1e6:,.1f} µs an "
        f"event) over {cores} cores, about {spread:,.0f} events/s ({spread / ceiling:.2f})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--rooms", type=int, default=2_000)
    parser.add_argument("--workers", type=int, default=1, help="worker processes in the group (default 1)")
    parser.add_argument("--partitions", type=int, default=6, help="partitions of the events topic (6)")
    parser.add_argument("--dsn", default="", help="PostgreSQL to use (default: start an embedded one)")
    parser.add_argument("--bootstrap", default="", help="Kafka to use (default: start one, see --kafka)")
    parser.add_argument(
        "--kafka", choices=("tansu", "apache"), default="tansu", help="the broker to start (default tansu)"
    )
    parser.add_argument("--kafka-nodes", type=int, default=3, help="nodes of the Apache Kafka cluster (3)")
    parser.add_argument(
        "--no-detectors", action="store_true", help="the worker without its detectors (to measure their cost)"
    )
    parser.add_argument(
        "--seal",
        action="store_true",
        help="sealing on in the worker's schema (a seal key registered: each batch checks for closed days)",
    )
    parser.add_argument(
        "--batch-events",
        type=int,
        default=0,
        help="the worker's largest batch (ROOMLOGS_BATCH_MAX_EVENTS; default its default): small batches are "
        "how a live worker writes, a few hundred events every quarter second",
    )
    parser.add_argument(
        "--pg-statements",
        type=int,
        default=0,
        metavar="N",
        help="also print the N statements the worker's PostgreSQL spent most time in (pg_stat_statements, "
        "loaded into the PostgreSQL started here; statements inside the rollups' trigger are listed too, "
        "and counted again in the COPY that fired them). Costs some PostgreSQL time itself",
    )
    add_work_dir_argument(parser)
    args = parser.parse_args()
    with run_dir(args.work_dir, "roomlogs-bench-ingest-") as work_dir:
        kafka: EmbeddedKafka | KafkaCluster | None = None
        postgres = None
        broker_pids: list[int] = []
        replication = 1
        try:
            bootstrap = args.bootstrap
            if not bootstrap and args.kafka == "apache":
                cluster = KafkaCluster(work_dir / "kafka", nodes=args.kafka_nodes)
                kafka = cluster
                cluster.start()
                bootstrap, replication = cluster.bootstrap, cluster.replication_factor
                broker_pids = [node.pid for node in cluster.nodes if node.pid is not None]
                print(
                    f"Apache Kafka {KAFKA_VERSION}: {args.kafka_nodes} KRaft nodes, replication {replication}"
                )
            elif not bootstrap:
                tansu = EmbeddedKafka(work_dir / "kafka")
                kafka = tansu
                tansu.start()
                bootstrap = tansu.bootstrap
                broker_pids = [tansu.pid] if tansu.pid is not None else []
            dsn = args.dsn
            if not dsn:
                statements = STATEMENT_SETTINGS if args.pg_statements else None
                postgres = EmbeddedPostgres(work_dir / "postgres", settings=statements)
                postgres.start()
                dsn = postgres.dsn
            print(
                f"PostgreSQL {'embedded' if postgres else dsn}, broker {bootstrap}, {os.cpu_count()} cores; "
                f"{args.workers} worker process(es), {args.partitions} partitions; work dir {work_dir}",
                flush=True,
            )
            postgres_pid = postgres.pid if postgres is not None else None
            asyncio.run(main_async(args, bootstrap, dsn, work_dir, broker_pids, postgres_pid, replication))
        finally:
            if postgres is not None:
                postgres.stop()
            if kafka is not None:
                kafka.stop()


if __name__ == "__main__":
    main()
