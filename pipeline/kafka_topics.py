"""Create the topics roomlogs needs, when they are missing (brokers with auto-creation off).

The deletions topic is made to keep its records forever, compacted by request id (one record per deletion
request: pipeline/ingest/deletion_log.py). A topic that exists already is left as it is.
"""

from __future__ import annotations

import logging

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import (
    ClusterAuthorizationFailedError,
    TopicAlreadyExistsError,
    TopicAuthorizationFailedError,
    for_code,
)

from pipeline.errors import ConfigurationError
from pipeline.kafka_client import KafkaConnection, kafka_errors
from pipeline.settings import Settings

log = logging.getLogger("roomlogs.kafka")

#: Configs of the deletions topic: never deleted by age, compacted by key (the request id).
DELETIONS_TOPIC_CONFIGS = {"retention.ms": "-1", "cleanup.policy": "compact"}


async def ensure_topics(settings: Settings, *, worker: bool = True) -> list[str]:
    """Create the events, dead-letter and (`worker`: the worker's own) deletions topics if absent; return
    the names created. A publisher (`roomlogs simulate`) needs the first two only, and may lack the rights
    to the deletions topic.

    Raises KafkaAccessError (naming the setting or ACL to fix) when the broker refuses us, and
    KafkaUnavailableError when no broker answers.
    """
    admin = AIOKafkaAdminClient(**KafkaConnection.of(settings).kwargs())
    try:
        async with kafka_errors(settings):
            await admin.start()
            return await _create_missing(admin, settings, worker=worker)
    finally:
        await admin.close()


async def _create_missing(admin: AIOKafkaAdminClient, settings: Settings, *, worker: bool) -> list[str]:
    existing = set(await admin.list_topics())
    wanted = [
        NewTopic(settings.events_topic, settings.events_topic_partitions, settings.kafka_replication_factor),
        NewTopic(settings.dead_letter_topic, 1, settings.kafka_replication_factor),
    ]
    if worker:
        wanted.append(
            NewTopic(
                settings.deletions_topic,
                1,
                settings.kafka_replication_factor,
                topic_configs=DELETIONS_TOPIC_CONFIGS,
            )
        )
        wanted.append(NewTopic(settings.alerts_topic, 1, settings.kafka_replication_factor))
    missing = [t for t in wanted if t.name not in existing]
    if not missing:
        return []
    response = await admin.create_topics(missing)
    for topic, code, *message in response.topic_errors:
        if not code or code == TopicAlreadyExistsError.errno:  # already there: created meanwhile
            continue
        error = for_code(code)
        if issubclass(error, (TopicAuthorizationFailedError, ClusterAuthorizationFailedError)):
            raise error(topic)  # kafka_errors names the ACL to grant
        raise ConfigurationError(
            f"Kafka could not create topic {topic!r} ({error.__name__}: {message[0] if message else ''}): "
            "create it yourself, or check ROOMLOGS_KAFKA_REPLICATION_FACTOR and "
            "ROOMLOGS_EVENTS_TOPIC_PARTITIONS"
        )
    log.info("created topics %s", [t.name for t in missing])
    return [t.name for t in missing]
