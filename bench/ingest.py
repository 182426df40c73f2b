"""Ingest benchmark: the real worker against the raw ceiling, same run, same PostgreSQL.

    python bench/ingest.py [--events 1000000] [--dsn postgresql://...] [--bootstrap host:port]
                           [--kafka tansu|apache] [--kafka-nodes 3]

1. Publishes N simulated events (realistic mix, 1% bad) to a fresh topic.
2. Raw ceiling: aiokafka `getmany` + orjson + binary COPY into the same partitioned `events` table, with no
   normalization, validation, room state or offsets of record: the least any ingest can do.
3. The real worker (`roomlogs worker`, a separate process, as deployed) consumes the same topic into its own
   schema. Throughput is timed from its first committed batch to its last (start-up excluded); its RSS is
   sampled throughout.

Prints events/s for both, their ratio, and the worker's RSS along the way (peak and at each quarter).
Without --dsn / --bootstrap it starts an embedded PostgreSQL and a broker and stops them at the end: Tansu,
or with --kafka apache a local Apache Kafka KRaft cluster (3 nodes, replication 3, min.insync.replicas=2,
idempotent producers, as in production). For a broker it started, it also prints what the broker cost
during each phase: CPU seconds and peak RSS of its processes (the JVMs, for Apache Kafka).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import psutil
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from tqdm import tqdm

from pipeline.cli.devstack import spawn_worker
from pipeline.publisher.simulator import SimulationConfig, iter_events
from pipeline.settings import Secret, Settings
from pipeline.stack import TANSU_CLIENT_SETTINGS, EmbeddedKafka, EmbeddedPostgres, free_port
from pipeline.stack.cluster import KAFKA_VERSION, KafkaCluster
from pipeline.storage import db
from pipeline.storage.batch import EVENT_COLUMNS
from pipeline.storage.migrate import migrate
from pipeline.storage.partitions import PartitionManager
from pipeline.worker.collector import tune_for_batches

PARTITIONS = 6


class BrokerMeter:
    """CPU seconds and RSS of the broker's processes, sampled in the background."""

    def __init__(self, pids: list[int]) -> None:
        self._procs = [psutil.Process(pid) for pid in pids]
        self.peak_rss = 0
        self._task: asyncio.Task[None] | None = None

    def cpu_seconds(self) -> float:
        return sum(sum(p.cpu_times()[:2]) for p in self._procs)

    def rss(self) -> int:
        return sum(p.memory_info().rss for p in self._procs)

    async def _sample(self) -> None:
        while True:
            self.peak_rss = max(self.peak_rss, self.rss())
            await asyncio.sleep(0.5)

    def start(self) -> None:
        self._task = asyncio.create_task(self._sample())

    async def phase(self, name: str, started_cpu: float, seconds: float) -> float:
        """Print the phase's broker CPU (seconds, and share of the 2 cores' time) and peak RSS so far."""
        used = self.cpu_seconds() - started_cpu
        cores = os.cpu_count() or 1
        print(
            f"  broker during {name}: {used:,.1f} CPU s in {seconds:,.1f} s "
            f"({used / seconds / cores:.0%} of {cores} cores), RSS now {self.rss() / 2**20:,.0f} MiB, "
            f"peak {self.peak_rss / 2**20:,.0f} MiB",
            flush=True,
        )
        return self.cpu_seconds()


async def publish(
    bootstrap: str, topic: str, n: int, rooms: int, *, replication: int, idempotent: bool
) -> tuple[int, float]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    await admin.create_topics([NewTopic(topic, PARTITIONS, replication)])
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


async def raw_ceiling(settings: Settings, n: int) -> float:
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
    tps = [TopicPartition(settings.events_topic, p) for p in range(PARTITIONS)]
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


async def stored_total(settings: Settings) -> int:
    conn = await db.connect(settings.postgres_dsn.get(), settings.postgres_schema)
    try:
        return int(
            await conn.fetchval(
                "SELECT coalesce(sum(next_offset), 0) FROM ingest_offsets WHERE consumer_group = $1",
                settings.consumer_group,
            )
        )
    finally:
        await conn.close()


async def real_worker(settings: Settings, n: int, work_dir: Path) -> tuple[float, int, list[tuple[int, int]]]:
    """Run `roomlogs worker`; return (events/s from first to last commit, peak RSS bytes, RSS by progress)."""
    proc = spawn_worker(settings, Path("/tmp/worker_tt.log"))
    ps = psutil.Process(proc.pid)
    peak = 0
    samples: list[tuple[int, int]] = []
    first_at = first_n = None
    next_quarter = 1
    try:
        with tqdm(total=n, unit="ev", desc="worker", file=sys.stderr, mininterval=1) as bar:
            while True:
                if proc.poll() is not None:
                    raise SystemExit(f"worker exited: see {work_dir / 'worker.log'}")
                rss = ps.memory_info().rss
                peak = max(peak, rss)
                done = await stored_total(settings)
                bar.update(done - bar.n)
                now = time.perf_counter()
                if done and first_at is None:
                    first_at, first_n = now, done
                while next_quarter <= 4 and done >= n * next_quarter // 4:
                    samples.append((25 * next_quarter, rss))
                    next_quarter += 1
                if done >= n:
                    break
                await asyncio.sleep(0.1)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
    assert first_at is not None and first_n is not None
    return (n - first_n) / (now - first_at), peak, samples


async def prepare_schema(settings: Settings, today: datetime) -> None:
    conn = await db.connect(settings.postgres_dsn.get(), settings.postgres_schema)
    try:
        await migrate(conn, settings.postgres_schema)
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
        events_topic_partitions=PARTITIONS,
        dead_letter_topic=f"{topic}-dlq",
        metrics_port=free_port(),
        worker_data_dir=str(work_dir / "worker"),
        log_level="warning",
    )
    if not apache:
        base = base.replace(**TANSU_CLIENT_SETTINGS)
    today = datetime.now(UTC)
    raw = base.replace(postgres_schema="bench_raw", consumer_group="bench-raw")
    worker = base.replace(postgres_schema="bench_worker", consumer_group="bench-worker")
    for s in (raw, worker):
        conn = await db.connect(dsn, "public")
        await conn.execute(f"DROP SCHEMA IF EXISTS {s.postgres_schema} CASCADE")
        await conn.close()
        await prepare_schema(s, today)

    meter = BrokerMeter(broker_pids) if broker_pids else None
    if meter is not None:
        meter.start()
        print(f"  broker at rest: RSS {meter.rss() / 2**20:,.0f} MiB", flush=True)
    cpu = meter.cpu_seconds() if meter else 0.0
    n, publish_seconds = await publish(
        bootstrap, topic, args.events, args.rooms, replication=replication, idempotent=apache
    )
    print(f"published {n:,} events in {publish_seconds:.1f}s ({n / publish_seconds:,.0f}/s)", flush=True)
    if meter is not None:
        cpu = await meter.phase("publish", cpu, publish_seconds)
    started = time.perf_counter()
    ceiling = await raw_ceiling(raw, n)
    print(f"raw ceiling (getmany + orjson + binary COPY): {ceiling:,.0f} events/s", flush=True)
    if meter is not None:
        cpu = await meter.phase("raw ceiling", cpu, time.perf_counter() - started)
    started = time.perf_counter()
    rate, peak, samples = await real_worker(worker, n, work_dir)
    print(f"real worker (normalize, classify, dead-letter, offsets of record): {rate:,.0f} events/s")
    if meter is not None:
        await meter.phase("real worker (start-up included)", cpu, time.perf_counter() - started)
    print(f"ratio worker / ceiling: {rate / ceiling:.2f}")
    print(
        f"worker peak RSS: {peak / 2**20:,.0f} MiB; at "
        + ", ".join(f"{pct}%: {rss / 2**20:,.0f} MiB" for pct, rss in samples)
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--rooms", type=int, default=2_000)
    parser.add_argument("--dsn", default="", help="PostgreSQL to use (default: start an embedded one)")
    parser.add_argument("--bootstrap", default="", help="Kafka to use (default: start one, see --kafka)")
    parser.add_argument(
        "--kafka", choices=("tansu", "apache"), default="tansu", help="the broker to start (default tansu)"
    )
    parser.add_argument("--kafka-nodes", type=int, default=3, help="nodes of the Apache Kafka cluster (3)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="roomlogs-bench-") as tmp:
        work_dir = Path(tmp)
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
                postgres = EmbeddedPostgres(work_dir / "postgres")
                postgres.start()
                dsn = postgres.dsn
            print(f"PostgreSQL {'embedded' if postgres else dsn}, broker {bootstrap}, {os.cpu_count()} cores")
            asyncio.run(main_async(args, bootstrap, dsn, work_dir, broker_pids, replication))
        finally:
            if postgres is not None:
                postgres.stop()
            if kafka is not None:
                kafka.stop()


if __name__ == "__main__":
    main()
