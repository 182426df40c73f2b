"""A real Prometheus (Debian's binary) scrapes a real worker process and evaluates the real rules.

The worker is `roomlogs worker` in a subprocess, configured through ROOMLOGS_* as in production, against the
session's broker and PostgreSQL with a topic, group and schema of its own. Prometheus runs with
deploy/prometheus/prometheus.yml, only with loopback targets and a 1 s scrape interval. Everything listens on
127.0.0.1 and is stopped at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import uuid_utils
import yaml
from aiokafka import AIOKafkaProducer
from deploy_checks import DASHBOARDS_DIR, PROMETHEUS_DIR, dashboard_queries, metric_names, require_tool

from pipeline.cli.devstack import WORKER_COMMAND, worker_env
from pipeline.kafka_topics import DELETIONS_TOPIC_CONFIGS
from pipeline.settings import Secret, Settings
from pipeline.stack.process import free_port
from pipeline.storage import db
from pipeline.storage.migrate import migrate

EVENTS = 30
WORKER_READY_SECONDS = 120.0
SERIES_SECONDS = 60.0

pytestmark = pytest.mark.timeout(300)


def tail(log: Path | None) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-40:]) if log and log.exists() else ""


async def wait_for(
    check: Callable[[], Awaitable[Any]], seconds: float, what: str, log: Path | None = None
) -> Any:
    """Poll `check` until it returns something truthy; fail with `what` (and a log tail) after `seconds`."""
    deadline = time.monotonic() + seconds
    last: Any = None
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            last = await check()
            if last:
                return last
        await asyncio.sleep(0.5)
    pytest.fail(f"{what} not seen within {seconds:.0f} s (last: {last!r})\n{tail(log)}")


async def stop(process: asyncio.subprocess.Process, grace_seconds: float) -> None:
    if process.returncode is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(process.wait(), grace_seconds)
    except TimeoutError:
        process.kill()
        await process.wait()


@pytest.fixture
async def worker_settings(
    kafka_bootstrap: str, postgres_dsn: str, pg_schema: str, topic_factory: Any, group_id: str, tmp_path: Path
) -> Settings:
    settings = Settings(
        kafka_bootstrap=kafka_bootstrap,
        events_topic=await topic_factory(partitions=3, prefix="ev-"),
        events_topic_partitions=3,
        dead_letter_topic=await topic_factory(partitions=1, prefix="dlq-"),
        # its own, as every topic here: the session's broker may hold a `roomlogs.deletions` another test made
        # with other configs, which the worker would rightly refuse (pipeline.kafka_topics)
        deletions_topic=await topic_factory(partitions=1, prefix="del-", config=DELETIONS_TOPIC_CONFIGS),
        alerts_topic=await topic_factory(partitions=1, prefix="alerts-"),
        consumer_group=group_id,
        postgres_dsn=Secret(postgres_dsn),
        postgres_schema=pg_schema,
        batch_max_wait_seconds=0.05,
        metrics_host="127.0.0.1",
        metrics_port=free_port(),
        worker_data_dir=str(tmp_path / "worker"),
    )
    conn = await db.connect(postgres_dsn, pg_schema)
    try:
        await migrate(conn, pg_schema)
    finally:
        await conn.close()
    return settings


@pytest.fixture
async def worker(worker_settings: Settings, tmp_path: Path) -> AsyncIterator[str]:
    """`roomlogs worker` as a child process; yields its host:port once /health says ingest runs."""
    s = worker_settings
    log = tmp_path / "worker.log"
    with log.open("wb") as out:
        process = await asyncio.create_subprocess_exec(
            *WORKER_COMMAND, env=worker_env(s), stdout=out, stderr=asyncio.subprocess.STDOUT
        )
    address = f"{s.metrics_host}:{s.metrics_port}"
    try:
        async with httpx.AsyncClient(timeout=5) as http:

            async def healthy() -> bool:
                if process.returncode is not None:
                    pytest.fail(f"the worker exited with {process.returncode}:\n{tail(log)}")
                return (await http.get(f"http://{address}/health")).status_code == 200

            await wait_for(healthy, WORKER_READY_SECONDS, "worker /health 200", log)
        yield address
    finally:
        await stop(process, s.shutdown_drain_seconds + 10)


@pytest.fixture
async def prometheus(worker: str, tmp_path: Path) -> AsyncIterator[str]:
    """Prometheus with the deployment's config and rules, scraping the worker; yields its base URL."""
    binary = require_tool("prometheus")
    port = free_port()
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text(encoding="utf-8"))
    config["global"].update(scrape_interval="1s", scrape_timeout="1s", evaluation_interval="1s")
    config["rule_files"] = [str(PROMETHEUS_DIR / name) for name in config["rule_files"]]
    jobs = []
    for job in config["scrape_configs"]:
        if job["job_name"] == "roomlogs-worker":
            job.pop("dns_sd_configs")
            job["static_configs"] = [{"targets": [worker]}]
        elif job["job_name"] == "prometheus":
            job["static_configs"] = [{"targets": [f"127.0.0.1:{port}"]}]
        else:
            continue  # the API is not part of this test
        jobs.append(job)
    config["scrape_configs"] = jobs
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    log = tmp_path / "prometheus.log"
    with log.open("wb") as out:
        process = await asyncio.create_subprocess_exec(
            binary,
            f"--config.file={path}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
            stdout=out,
            stderr=asyncio.subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(timeout=5) as http:

            async def ready() -> bool:
                if process.returncode is not None:
                    pytest.fail(f"prometheus exited with {process.returncode}:\n{tail(log)}")
                return (await http.get(f"{url}/-/ready")).status_code == 200

            await wait_for(ready, 30, "prometheus /-/ready", log)
        yield url
    finally:
        await stop(process, 15)


async def publish(settings: Settings, count: int) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        for i in range(count):
            room = f"scrape-room-{i % 3}"
            event = {
                "event_id": str(uuid_utils.uuid7()),
                "type": "user.entered",
                "schema_version": 1,
                "room_id": room,
                "occurred_at": now,
                "actor": {"user_id": f"u-{i}"},
            }
            await producer.send(settings.events_topic, value=orjson.dumps(event), key=room.encode())
        await producer.flush()
    finally:
        await producer.stop()


async def query(http: httpx.AsyncClient, url: str, promql: str) -> list[dict[str, Any]]:
    response = await http.get(f"{url}/api/v1/query", params={"query": promql})
    body = response.json()
    assert body["status"] == "success", f"{promql}: {body}"
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def grafana_to_promql(expr: str) -> str:
    return expr.replace("$__rate_interval", "30s").replace('"$instance"', '".*"').replace('"$route"', '".*"')


async def test_prometheus_scrapes_the_worker_and_evaluates_the_rules(
    worker_settings: Settings, worker: str, prometheus: str
) -> None:
    await publish(worker_settings, EVENTS)
    async with httpx.AsyncClient(timeout=10) as http:
        up = await wait_for(
            lambda: query(http, prometheus, 'up{job="roomlogs-worker"} == 1'), SERIES_SECONDS, "up == 1"
        )
        assert up[0]["metric"]["instance"] == worker

        async def stored() -> bool:
            result = await query(http, prometheus, "sum(roomlogs_events_stored_total)")
            return bool(result) and float(result[0]["value"][1]) >= EVENTS

        await wait_for(stored, SERIES_SECONDS, f"roomlogs_events_stored_total >= {EVENTS}")
        by_type = await query(http, prometheus, "sum by (event_type) (roomlogs_events_stored_total)")
        assert {r["metric"]["event_type"]: float(r["value"][1]) for r in by_type} == {"user.entered": EVENTS}
        assert await query(http, prometheus, "roomlogs_last_successful_write_timestamp_seconds > 0")
        assert await query(http, prometheus, "roomlogs_ingest_paused == 0")

        # every panel query of every dashboard is valid PromQL for this Prometheus; the ingest ones that
        # describe traffic that happened have data
        for path in sorted(DASHBOARDS_DIR.glob("*.json")):
            for _, expr in dashboard_queries(path):
                if "label_values(" not in expr:
                    await query(http, prometheus, grafana_to_promql(expr))
        ingest = dict(dashboard_queries(DASHBOARDS_DIR / "roomlogs-ingest.json"))
        for where in ("Stored by event type", "Lag per partition", "Last write age", "Batch write latency"):
            promql = grafana_to_promql(ingest[f"panel {where!r} A"])
            has_data = functools.partial(query, http, prometheus, promql)
            await wait_for(has_data, 15, f"data for panel {where!r}")

        # both rule files are loaded, and every rule evaluates without error against real series
        async def evaluated() -> list[dict[str, Any]]:
            groups = (await http.get(f"{prometheus}/api/v1/rules")).json()["data"]["groups"]
            rules = [rule for group in groups for rule in group["rules"]]
            return rules if rules and all(r["health"] != "unknown" for r in rules) else []

        rules = await wait_for(evaluated, 30, "every rule evaluated")
        names = {r["name"] for r in rules}
        assert {"RoomlogsNoWrites", "RoomlogsRetentionOverdue", "RoomlogsApi5xx"} <= names
        assert [r["name"] for r in rules if r["health"] != "ok"] == []
        # a healthy worker that just stored its events trips no ingest alert
        firing = await query(http, prometheus, 'ALERTS{alertstate="firing"}')
        assert [a["metric"]["alertname"] for a in firing] == []
        assert metric_names('ALERTS{alertstate="firing"}') == {"ALERTS"}
