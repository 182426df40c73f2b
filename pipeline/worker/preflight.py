"""Before the worker starts: can it use Kafka and PostgreSQL with these settings? (Whether the schema is
migrated is pipeline.storage.migrate's `check_schema`, also asked by the operator commands.)

Called by `roomlogs worker` before faust takes over the process, so a setting that cannot work (a wrong
password, an untrusted certificate, a missing ACL, a topic that cannot be created) ends the worker at once
with one line naming what to fix and a non-zero exit, instead of a traceback from inside faust or a worker
that starts and then idles. Passing it proves access at start-up only: faults later are the ingest loop's
(see pipeline/ingest/service.py and README "What a refusing broker gets").
"""

from __future__ import annotations

import logging
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import (
    ClusterAuthorizationFailedError,
    GroupAuthorizationFailedError,
    KafkaError,
    TopicAuthorizationFailedError,
)

from pipeline.errors import ConfigurationError
from pipeline.kafka_client import KafkaConnection, check_speaks_kafka, kafka_errors
from pipeline.kafka_topics import check_topic_policies, ensure_topics
from pipeline.listen import check_can_listen
from pipeline.settings import Settings
from pipeline.storage import db
from pipeline.storage.classes import class_names
from pipeline.storage.migrate import check_schema

log = logging.getLogger("roomlogs.worker")

_FETCH_PROBE_MS = 500
_REFUSALS = (TopicAuthorizationFailedError, GroupAuthorizationFailedError, ClusterAuthorizationFailedError)


async def preflight(settings: Settings) -> None:
    """Raise a RoomlogsError naming the setting (or ACL, or command) to fix when the worker could not work.

    Checks, in order: PostgreSQL accepts the DSN (database, role, password, TLS), the schema is migrated
    and ROOMLOGS_DEFAULT_RETENTION_CLASS is one of its retention classes; the brokers accept our TLS and
    SASL settings; the events and dead-letter topics exist or can be created, and neither the events topic
    (compacted) nor the deletions topic (deleting by age or size) would have Kafka delete what roomlogs must
    read; we may read the events topic and use the consumer group. Before all that, that its metrics port
    is free (faust's own error for a taken port is a traceback). PostgreSQL goes before Kafka: it is quick
    to ask and creates nothing.
    """
    check_can_listen(
        settings.metrics_host,
        settings.metrics_port,
        host_setting="ROOMLOGS_METRICS_HOST",
        port_setting="ROOMLOGS_METRICS_PORT",
    )
    await _check_postgres(settings)
    await check_speaks_kafka(settings)  # a port that is not Kafka's: said in seconds, not after 50
    await ensure_topics(settings)
    await check_topic_policies(settings)
    await _check_topic_access(settings)


async def check_default_class(conn: Any, settings: Settings) -> None:
    """ConfigurationError unless ROOMLOGS_DEFAULT_RETENTION_CLASS names a class of `retention_classes`."""
    names = await class_names(conn)
    if settings.default_retention_class not in names:
        raise ConfigurationError(
            f"ROOMLOGS_DEFAULT_RETENTION_CLASS={settings.default_retention_class!r} is not a retention "
            f"class: use one of {', '.join(names)} (`roomlogs retention classes list`)"
        )


async def _check_topic_access(settings: Settings) -> None:
    """Describe and read the events topic (from its end: nothing is consumed), read the group's offsets."""
    kafka = KafkaConnection.of(settings)
    consumer = AIOKafkaConsumer(**kafka.kwargs(), enable_auto_commit=False, group_id=None)
    admin = AIOKafkaAdminClient(**kafka.kwargs())
    try:
        async with kafka_errors(settings):
            await consumer.start()
            await admin.start()
            try:
                partitions = [
                    TopicPartition(settings.events_topic, p)
                    for p in sorted(consumer.partitions_for_topic(settings.events_topic) or ())
                ]
                if partitions:
                    consumer.assign(partitions)
                    await consumer.seek_to_end(*partitions)
                    await consumer.getmany(timeout_ms=_FETCH_PROBE_MS)  # READ is checked on fetch
                # FindCoordinator answers GROUP_AUTHORIZATION_FAILED at once to a user without rights on
                # the group; "coordinator not available" (a fresh cluster, Tansu) is no refusal: go on
                await admin.list_consumer_group_offsets(settings.consumer_group)
            except _REFUSALS:
                raise  # kafka_errors names the topic, group or ACL
            except KafkaError as exc:  # not a refusal (a broker without these requests): consuming will tell
                log.debug("Kafka access probe inconclusive: %r", exc)
    finally:
        await consumer.stop()
        await admin.close()


async def _check_postgres(settings: Settings) -> None:
    conn = await db.connect(settings.postgres_dsn.get(), settings.postgres_schema)
    try:
        await check_schema(conn, settings.postgres_schema)
        await check_default_class(conn, settings)
    finally:
        await conn.close()
