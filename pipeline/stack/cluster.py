"""A local Apache Kafka cluster in KRaft mode: N JVM processes on loopback, each a broker and a controller.

Who uses it: `roomlogs up --kafka apache`, the test session's Apache lane, `bench/ingest.py --kafka apache`
and fault tests (kill -9 of a partition leader, restarts). The broker is Apache Kafka KAFKA_VERSION, fetched
from Maven by `make kafka-broker` (deploy/kafka/pom.xml) into ``~/.cache/roomlogs/kafka-VERSION/libs`` and
run with Java 17; without them `start()` raises MissingDependencyError saying how to get them.

With three nodes, topics are replicated three times and a write with acks=all needs two in-sync replicas
(`min.insync.replicas=2`), as in production: one node may be down. Auto-creation of topics is off. Each
node keeps its log in `work_dir`/node-N, so a node that was stopped or killed restarts on its own data.

    with KafkaCluster(tmp_path, nodes=3) as cluster:
        bootstrap = cluster.bootstrap                     # "127.0.0.1:p1,127.0.0.1:p2,127.0.0.1:p3"
        leader = await cluster.leader("roomlogs.events", 0)
        cluster.kill9(leader)                             # SIGKILL, no controlled shutdown
        cluster.restart(leader)                           # same ports, same data; waits until it serves
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import json
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Coroutine, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

from aiokafka import TopicPartition
from aiokafka.client import AIOKafkaClient

from pipeline.errors import MissingDependencyError
from pipeline.stack.kafka import answers_api_versions
from pipeline.stack.process import (
    LOCALHOST,
    EmbeddedServiceError,
    ServerProcess,
    free_port,
    port_is_free,
    terminate,
)

#: The Apache Kafka release every local cluster runs; deploy/kafka/pom.xml and docker-compose.yml pin the
#: same one (tests/stack checks that they agree).
KAFKA_VERSION = "4.1.1"
_FETCH_HINT = "fetch it with `make kafka-broker` (installs Java 17 and Maven where missing)"
_STORAGE_TOOL = "kafka.tools.StorageTool"
_BROKER_MAIN = "kafka.Kafka"
#: Name of the optional secured listener in server.properties (listener.name.secure.*).
_SECURE = "SECURE"
_SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
_SECURITY_PROTOCOLS = ("SSL", "SASL_PLAINTEXT", "SASL_SSL")
_LOG4J2 = """\
status = warn
appender.out.type = Console
appender.out.name = out
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = out
logger.config.name = org.apache.kafka.common.config.AbstractConfig
logger.config.level = WARN
"""

T = TypeVar("T")


def kafka_home(version: str = KAFKA_VERSION) -> Path:
    """Where `make kafka-broker` puts the broker: ``~/.cache/roomlogs/kafka-VERSION`` (jars in ``libs/``)."""
    return Path.home() / ".cache" / "roomlogs" / f"kafka-{version}"


def broker_classpath(home: Path) -> str:
    """``home/libs/*`` for `java -cp`; MissingDependencyError (with the fix) without Java or the jars."""
    libs = home / "libs"
    if not any(libs.glob("kafka_2.13-*.jar")):
        raise MissingDependencyError(f"the Apache Kafka broker is not in {libs}: {_FETCH_HINT}")
    if shutil.which("java") is None:
        raise MissingDependencyError(f"Apache Kafka needs Java 17 (`java` is not on PATH): {_FETCH_HINT}")
    return str(libs / "*")


def _cluster_id() -> str:
    """A KRaft cluster id (base64 of a UUID), never starting with '-' (the formatter would take an option)."""
    while True:
        candidate = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if candidate[0].isalnum():
            return candidate


@dataclass(frozen=True)
class SaslUser:
    """A user of the secured listener. SCRAM users are stored in the cluster metadata when storage is
    formatted (the first start); PLAIN users are listed in the listener's JAAS configuration."""

    name: str
    password: str
    mechanism: str = "SCRAM-SHA-512"

    def __post_init__(self) -> None:
        if self.mechanism not in _SASL_MECHANISMS:
            raise ValueError(f"mechanism={self.mechanism!r}: use one of {', '.join(_SASL_MECHANISMS)}")
        if not (self.name + self.password).isalnum():
            raise ValueError("SaslUser name and password: letters and digits only (they go into configs)")


@dataclass(frozen=True)
class SecureListener:
    """A second client listener on every node (`KafkaNode.secure_port`), next to the plaintext one.

    `keystore` is a PKCS#12 file holding the broker's key and certificate chain (valid for 127.0.0.1),
    opened with `keystore_password`. `protocol` is SSL, SASL_SSL or SASL_PLAINTEXT; SASL listeners accept
    PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512, for `users`.
    """

    keystore: Path
    keystore_password: str
    protocol: str = "SASL_SSL"
    users: tuple[SaslUser, ...] = ()

    def __post_init__(self) -> None:
        if self.protocol not in _SECURITY_PROTOCOLS:
            raise ValueError(f"protocol={self.protocol!r}: use one of {', '.join(_SECURITY_PROTOCOLS)}")


class KafkaNode(ServerProcess):
    """One KRaft node (broker + controller): its ports, data, log and process. Made by KafkaCluster."""

    def __init__(
        self, node_id: int, work_dir: Path, port: int, controller_port: int, secure_port: int | None
    ):
        super().__init__(work_dir / "kafka.log")
        self.node_id = node_id
        self.work_dir = work_dir
        #: Plaintext client listener (what `KafkaCluster.bootstrap` lists).
        self.port = port
        self.controller_port = controller_port
        #: The SecureListener's port, when the cluster has one.
        self.secure_port = secure_port
        self.data_dir = work_dir / "data"
        self.config_path = work_dir / "server.properties"

    @property
    def address(self) -> str:
        return f"{LOCALHOST}:{self.port}"

    def _spawn(self, java: list[str]) -> None:
        with self._log.open_for_run() as log:
            self._proc = subprocess.Popen(
                [*java, _BROKER_MAIN, str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.work_dir,
                start_new_session=True,  # a Ctrl-C reaches the owner, which stops the nodes in order
            )

    def __repr__(self) -> str:
        return f"KafkaNode({self.node_id}, {self.address}, pid={self.pid})"


class KafkaCluster:
    """`nodes` Apache Kafka KRaft nodes on 127.0.0.1, started and stopped together or one at a time.

    `start()` formats storage on the first start, starts every node and returns once all of them serve
    and every broker is registered (or raises EmbeddedServiceError with the failing node's log tail after
    `start_timeout_seconds`). `stop()` stops every node (SIGTERM: controlled shutdown, SIGKILL past
    `stop_timeout_seconds`). Faults target one node, by id (1..nodes) or KafkaNode: `kill9`, `stop_node`,
    `restart`, `pause`/`resume` (SIGSTOP/SIGCONT). Usable as a context manager.

    `heap` is each JVM's -Xmx (three nodes on a 2-core machine: keep it small). `authorizer=True` turns on
    KRaft's StandardAuthorizer with no rights for anyone but the plaintext listener's ANONYMOUS principal
    (the tests' admin); other users need ACLs (`acl_command`). `broker_properties` adds or overrides
    server.properties entries on every node.
    """

    def __init__(
        self,
        work_dir: Path,
        *,
        nodes: int = 3,
        heap: str = "512m",
        secure: SecureListener | None = None,
        authorizer: bool = False,
        broker_properties: Mapping[str, str] | None = None,
        home: Path | None = None,
        start_timeout_seconds: float = 120.0,
        stop_timeout_seconds: float = 30.0,
    ) -> None:
        if nodes < 1:
            raise ValueError("a cluster has at least one node")
        self.work_dir = Path(work_dir).resolve()
        self.size = nodes
        self.heap = heap
        self.secure = secure
        self.authorizer = authorizer
        self.broker_properties = dict(broker_properties or {})
        self.home = home or kafka_home()
        self.start_timeout_seconds = start_timeout_seconds
        self.stop_timeout_seconds = stop_timeout_seconds
        self._nodes: list[KafkaNode] = []
        self._cluster_id = ""

    # --- what callers read ---------------------------------------------------------------------------
    @property
    def nodes(self) -> list[KafkaNode]:
        """The nodes, in id order (empty before the first `start()`)."""
        return list(self._nodes)

    @property
    def bootstrap(self) -> str:
        """Every node's plaintext listener, for `bootstrap_servers` (any one that is up will do)."""
        return ",".join(node.address for node in self._started_nodes())

    @property
    def secure_bootstrap(self) -> str:
        """Every node's SecureListener address; EmbeddedServiceError when the cluster has none."""
        if self.secure is None:
            raise EmbeddedServiceError("this cluster has no secure listener (KafkaCluster(secure=...))")
        return ",".join(f"{LOCALHOST}:{node.secure_port}" for node in self._started_nodes())

    @property
    def replication_factor(self) -> int:
        """Replicas of each topic partition: 3, or the number of nodes when fewer."""
        return min(3, self.size)

    @property
    def min_insync_replicas(self) -> int:
        return min(2, self.replication_factor)

    def node(self, node: int | KafkaNode) -> KafkaNode:
        """The KafkaNode with that id (ids are 1..nodes)."""
        node_id = node.node_id if isinstance(node, KafkaNode) else node
        for candidate in self._started_nodes():
            if candidate.node_id == node_id:
                return candidate
        raise KeyError(f"no Kafka node {node_id} (ids are 1..{self.size})")

    def log_path(self, node: int | KafkaNode) -> Path:
        return self.node(node).log_path

    # --- whole-cluster lifecycle ---------------------------------------------------------------------
    def start(self) -> None:
        """Format (first time only), start every node that is not running, wait until all serve."""
        java = self._java_command()
        self._layout()
        self._format()
        stopped = [node for node in self._nodes if not node.running]
        for node in stopped:
            node._spawn(java)
        try:
            self._wait_serving(stopped)
            self._run(self._wait_registered(len(self._nodes)))
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop every node: SIGTERM to all at once (controlled shutdown), SIGKILL past the timeout."""
        running = [node for node in self._nodes if node.running]
        for node in running:
            node._signal(signal.SIGTERM)
        deadline = time.monotonic() + self.stop_timeout_seconds
        for node in running:
            proc = node._proc
            assert proc is not None
            terminate(
                proc,
                first_signal=signal.SIGTERM,
                timeout_seconds=max(0.1, deadline - time.monotonic()),
            )
            node._proc = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # --- faults on one node --------------------------------------------------------------------------
    def kill9(self, node: int | KafkaNode) -> None:
        """SIGKILL the node: no controlled shutdown, no flush; its partitions elect new leaders."""
        target = self.node(node)
        proc, target._proc = target._proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGCONT)  # a paused JVM dies just as well, but reap it promptly
            proc.kill()
            proc.wait(timeout=30)

    def stop_node(self, node: int | KafkaNode) -> None:
        """Stop one node cleanly (SIGTERM: leadership moves away first), SIGKILL past the timeout."""
        target = self.node(node)
        proc, target._proc = target._proc, None
        if proc is not None:
            proc.send_signal(signal.SIGCONT)
            terminate(proc, first_signal=signal.SIGTERM, timeout_seconds=self.stop_timeout_seconds)

    def restart(self, node: int | KafkaNode) -> None:
        """Stop the node if it runs, start it on its data and ports, wait until it is registered again."""
        target = self.node(node)
        self.stop_node(target)
        target._spawn(self._java_command())
        self._wait_serving([target])
        self._run(self._wait_registered(sum(1 for n in self._nodes if n.running)))

    def pause(self, node: int | KafkaNode) -> None:
        """SIGSTOP: the JVM freezes (sessions time out, leadership moves) but keeps its sockets."""
        self.node(node)._signal(signal.SIGSTOP)

    def resume(self, node: int | KafkaNode) -> None:
        """SIGCONT after `pause()`."""
        self.node(node)._signal(signal.SIGCONT)

    # --- questions to the cluster --------------------------------------------------------------------
    async def leader(self, topic: str, partition: int, *, timeout_seconds: float = 30.0) -> int:
        """Id of the node leading `topic`/`partition` now (waits while the partition has no leader)."""
        client = AIOKafkaClient(bootstrap_servers=self.bootstrap, client_id="roomlogs-cluster")
        await client.bootstrap()
        try:
            client.add_topic(topic)
            deadline = time.monotonic() + timeout_seconds
            while True:
                await client.force_metadata_update()
                leader = client.cluster.leader_for_partition(TopicPartition(topic, partition))
                if leader is not None and leader >= 0:
                    return int(leader)
                if time.monotonic() >= deadline:
                    raise EmbeddedServiceError(f"{topic}/{partition} has no leader after {timeout_seconds}s")
                await asyncio.sleep(0.2)
        finally:
            await client.close()

    def acl_command(self, *args: str) -> str:
        """Run Kafka's ACL tool (kafka-acls) against this cluster's plaintext listener; returns its output.

        Example: ``cluster.acl_command("--add", "--allow-principal", "User:app", "--operation", "Read",
        "--topic", "events")``. EmbeddedServiceError with the output when it fails.
        """
        command = [
            *self._java_command(heap="256m"),
            "org.apache.kafka.tools.AclCommand",
            "--bootstrap-server", self.bootstrap,
            *args,
        ]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
        if done.returncode != 0:
            raise EmbeddedServiceError(f"kafka-acls {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
        return done.stdout

    def __repr__(self) -> str:
        return f"KafkaCluster({self.size} nodes, {self.bootstrap or 'not started'}, {str(self.work_dir)!r})"

    # --- internals -----------------------------------------------------------------------------------
    def _started_nodes(self) -> list[KafkaNode]:
        if not self._nodes:
            raise EmbeddedServiceError("the Kafka cluster has no nodes until start()")
        return self._nodes

    def _java_command(self, heap: str | None = None) -> list[str]:
        classpath = broker_classpath(self.home)
        return [
            "java",
            "-Xms128m",
            f"-Xmx{heap or self.heap}",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-XX:+ExitOnOutOfMemoryError",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.work_dir / 'log4j2.properties'}",
            "-cp",
            classpath,
        ]

    def _layout(self) -> None:
        """Pick ports and write each node's server.properties (ports are kept in cluster.json)."""
        if self._nodes:
            return
        self.work_dir.mkdir(parents=True, exist_ok=True)
        (self.work_dir / "log4j2.properties").write_text(_LOG4J2)
        state_path = self.work_dir / "cluster.json"
        if state_path.exists():
            state = json.loads(state_path.read_text())
        else:
            picked: set[int] = set()

            def pick() -> int:
                while (port := free_port()) in picked:
                    pass
                picked.add(port)
                return port

            state = {
                "cluster_id": _cluster_id(),
                "nodes": [
                    {
                        "id": i,
                        "port": pick(),
                        "controller_port": pick(),
                        "secure_port": pick() if self.secure else None,
                    }
                    for i in range(1, self.size + 1)
                ],
            }
            state_path.write_text(json.dumps(state, indent=2) + "\n")
        self._cluster_id = state["cluster_id"]
        self._nodes = [
            KafkaNode(
                n["id"], self.work_dir / f"node-{n['id']}", n["port"], n["controller_port"], n["secure_port"]
            )
            for n in state["nodes"]
        ]
        voters = ",".join(f"{n.node_id}@{LOCALHOST}:{n.controller_port}" for n in self._nodes)
        for node in self._nodes:
            node.work_dir.mkdir(parents=True, exist_ok=True)
            lines = [f"{key}={value}" for key, value in self._properties(node, voters).items()]
            node.config_path.write_text("\n".join(lines) + "\n")

    def _properties(self, node: KafkaNode, voters: str) -> dict[str, str]:
        rf, isr = str(self.replication_factor), str(self.min_insync_replicas)
        listeners = [
            f"PLAINTEXT://{LOCALHOST}:{node.port}",
            f"CONTROLLER://{LOCALHOST}:{node.controller_port}",
        ]
        advertised = [f"PLAINTEXT://{LOCALHOST}:{node.port}"]
        protocols = ["PLAINTEXT:PLAINTEXT", "CONTROLLER:PLAINTEXT"]
        props: dict[str, str] = {
            "process.roles": "broker,controller",
            "node.id": str(node.node_id),
            "controller.quorum.voters": voters,
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "log.dirs": str(node.data_dir),
            # as production (docker-compose.yml): every topic on three nodes, a write needs two of them
            "default.replication.factor": rf,
            "min.insync.replicas": isr,
            "offsets.topic.replication.factor": rf,
            "transaction.state.log.replication.factor": rf,
            "transaction.state.log.min.isr": isr,
            "share.coordinator.state.topic.replication.factor": rf,
            "share.coordinator.state.topic.min.isr": isr,
            "unclean.leader.election.enable": "false",
            "auto.create.topics.enable": "false",
            # small internal topics and thread pools: three JVMs share two cores with the tests
            "offsets.topic.num.partitions": "6",
            "transaction.state.log.num.partitions": "4",
            "num.network.threads": "2",
            "num.io.threads": "2",
            "num.recovery.threads.per.data.dir": "1",
            "background.threads": "2",
            "log.cleaner.threads": "1",
            "log.cleaner.dedupe.buffer.size": str(8 * 1024 * 1024),
            # a consumer group forms at once (no 3 s wait for more members)
            "group.initial.rebalance.delay.ms": "0",
        }
        if self.secure is not None:
            listeners.append(f"{_SECURE}://{LOCALHOST}:{node.secure_port}")
            advertised.append(f"{_SECURE}://{LOCALHOST}:{node.secure_port}")
            protocols.append(f"{_SECURE}:{self.secure.protocol}")
            props.update(self._secure_properties(self.secure))
        if self.authorizer:
            props["authorizer.class.name"] = "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
            props["super.users"] = "User:ANONYMOUS"  # the plaintext and controller listeners
            props["allow.everyone.if.no.acl.found"] = "false"
        props["listeners"] = ",".join(listeners)
        props["advertised.listeners"] = ",".join(advertised)
        props["listener.security.protocol.map"] = ",".join(protocols)
        props.update(self.broker_properties)
        return props

    @staticmethod
    def _secure_properties(secure: SecureListener) -> dict[str, str]:
        prefix = f"listener.name.{_SECURE.lower()}."
        props: dict[str, str] = {}
        if "SSL" in secure.protocol:
            props.update(
                {
                    prefix + "ssl.keystore.type": "PKCS12",
                    prefix + "ssl.keystore.location": str(Path(secure.keystore).resolve()),
                    prefix + "ssl.keystore.password": secure.keystore_password,
                    prefix + "ssl.key.password": secure.keystore_password,
                }
            )
        if "SASL" in secure.protocol:
            props[prefix + "sasl.enabled.mechanisms"] = ",".join(_SASL_MECHANISMS)
            scram = "org.apache.kafka.common.security.scram.ScramLoginModule required;"
            props[prefix + "scram-sha-256.sasl.jaas.config"] = scram
            props[prefix + "scram-sha-512.sasl.jaas.config"] = scram
            plain_users = " ".join(
                f'user_{u.name}="{u.password}"' for u in secure.users if u.mechanism == "PLAIN"
            )
            props[prefix + "plain.sasl.jaas.config"] = (
                f"org.apache.kafka.common.security.plain.PlainLoginModule required {plain_users};"
            )
        return props

    def _format(self) -> None:
        """Format each node's storage once (cluster id, bootstrap metadata, SCRAM users)."""
        unformatted = [node for node in self._nodes if not (node.data_dir / "meta.properties").exists()]
        if not unformatted:
            return
        scram: list[str] = []
        for user in self.secure.users if self.secure else ():
            if user.mechanism.startswith("SCRAM-"):
                scram += ["--add-scram", f"{user.mechanism}=[name={user.name},password={user.password}]"]
        java = self._java_command(heap="256m")

        def format_node(node: KafkaNode) -> subprocess.CompletedProcess[str]:
            command = [
                *java, _STORAGE_TOOL, "format",
                "--config", str(node.config_path),
                "--cluster-id", self._cluster_id,
                "--ignore-formatted",
                *scram,
            ]  # fmt: skip
            return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)

        with concurrent.futures.ThreadPoolExecutor(len(unformatted)) as pool:
            results = list(pool.map(format_node, unformatted))
        for node, done in zip(unformatted, results, strict=True):
            if done.returncode != 0:
                raise EmbeddedServiceError(
                    f"formatting Kafka node {node.node_id} failed:\n{(done.stdout + done.stderr)[-3000:]}"
                )

    def _wait_serving(self, nodes: Iterable[KafkaNode]) -> None:
        """Until each node answers a Kafka ApiVersions request on its plaintext port."""
        waiting = list(nodes)
        deadline = time.monotonic() + self.start_timeout_seconds
        pause_seconds = 0.05
        while waiting:
            for node in list(waiting):
                proc = node._proc
                if proc is None or proc.poll() is not None:
                    code = proc.returncode if proc is not None else None
                    node._proc = None
                    taken = " (its port is in use)" if not port_is_free(node.port) else ""
                    raise EmbeddedServiceError(
                        f"Kafka node {node.node_id} exited with code {code} while starting{taken}; "
                        f"log {node.log_path}:\n{node.log_tail()}"
                    )
                if answers_api_versions(node.port):
                    waiting.remove(node)
            if waiting and time.monotonic() >= deadline:
                node = waiting[0]
                raise EmbeddedServiceError(
                    f"Kafka node {node.node_id} did not serve {node.address} within "
                    f"{self.start_timeout_seconds:.0f}s; log {node.log_path}:\n{node.log_tail()}"
                )
            time.sleep(pause_seconds)
            pause_seconds = min(pause_seconds * 2, 0.5)

    async def _wait_registered(self, brokers: int) -> None:
        """Until the metadata lists `brokers` live brokers (a node serves before it is unfenced)."""
        deadline = time.monotonic() + self.start_timeout_seconds
        addresses = ",".join(node.address for node in self._nodes if node.running)
        client = AIOKafkaClient(bootstrap_servers=addresses, client_id="roomlogs-cluster")
        try:
            await client.bootstrap()
            while True:
                await client.force_metadata_update()
                if len(client.cluster.brokers()) >= brokers:
                    return
                if time.monotonic() >= deadline:
                    raise EmbeddedServiceError(
                        f"only {len(client.cluster.brokers())} of {brokers} Kafka brokers registered "
                        f"within {self.start_timeout_seconds:.0f}s; logs in {self.work_dir}"
                    )
                await asyncio.sleep(0.2)
        finally:
            await client.close()

    @staticmethod
    def _run(coro: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine to completion from sync code, whether or not this thread runs an event loop."""
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            return pool.submit(asyncio.run, coro).result()
