"""Create the topics roomlogs needs, when they are missing (brokers with auto-creation off), and refuse
those whose own policy would delete what roomlogs must read.

The deletions topic is made to keep its records forever, compacted by request id (one record per deletion
request: pipeline/ingest/deletion_log.py). A topic that exists already is left as it is, but its policy is
checked (`check_topic_policies`): an events topic someone created compacted would have Kafka keep only the
newest event of each key (room servers key by room) and delete the rest, read or not; a deletions topic
that deletes by age or size would lose the authorized deletions a database restored from a backup must
re-apply. Either is a ConfigurationError naming the topic, the setting and the fix, before the worker
starts.
"""

from __future__ import annotations

import logging

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
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


async def check_topic_policies(settings: Settings) -> None:
    """Raise ConfigurationError when the events topic is compacted, or the deletions topic deletes records
    (by age or size). A broker that will not say (no DescribeConfigs right) is logged, not refused: the
    policies are the operator's to set, this only catches the ones that lose records."""
    admin = AIOKafkaAdminClient(**KafkaConnection.of(settings).kwargs())
    try:
        async with kafka_errors(settings):
            await admin.start()
            configs = await _topic_configs(admin, [settings.events_topic, settings.deletions_topic])
    finally:
        await admin.close()
    events = configs.get(settings.events_topic)
    if events is not None and "compact" in _policy(events):
        raise ConfigurationError(
            f"the events topic {settings.events_topic!r} (ROOMLOGS_EVENTS_TOPIC) has cleanup.policy="
            f"{events['cleanup.policy']}: Kafka keeps only the newest record of each key (room servers key "
            "by room) and deletes the others, read or not; set it to delete: kafka-configs.sh --alter "
            f"--entity-type topics --entity-name {settings.events_topic} --add-config cleanup.policy=delete"
        )
    deletions = configs.get(settings.deletions_topic)
    if deletions is not None and "delete" in _policy(deletions):
        limits = {k: deletions.get(k, "-1") for k in ("retention.ms", "retention.bytes")}
        bounded = {k: v for k, v in limits.items() if v != "-1"}
        if bounded or "retention.ms" not in deletions:
            said = ", ".join(f"{k}={v}" for k, v in bounded.items()) or "the broker's default retention"
            raise ConfigurationError(
                f"the deletions topic {settings.deletions_topic!r} (ROOMLOGS_DELETIONS_TOPIC) deletes "
                f"records ({said}): the authorized deletions must be kept for ever, for a database restored "
                "from a backup to re-apply them; set cleanup.policy=compact and retention.ms=-1 on it: "
                f"kafka-configs.sh --alter --entity-type topics --entity-name {settings.deletions_topic} "
                "--add-config cleanup.policy=compact,retention.ms=-1"
            )


def _policy(configs: dict[str, str]) -> set[str]:
    """The topic's cleanup.policy as a set ("delete", the default, where the broker lists none)."""
    return {p.strip() for p in configs.get("cleanup.policy", "delete").split(",") if p.strip()}


async def _topic_configs(admin: AIOKafkaAdminClient, topics: list[str]) -> dict[str, dict[str, str]]:
    """{topic: {config: value}} as the broker describes them (all of them, or those set explicitly: Tansu);
    a topic the broker would not describe is absent (logged)."""
    resources = [ConfigResource(ConfigResourceType.TOPIC, topic) for topic in topics]
    out: dict[str, dict[str, str]] = {}
    for response in await admin.describe_configs(resources):
        for code, message, _type, name, entries, *_ in response.resources:
            if code:
                log.warning(
                    "could not check the policy of topic %s (%s: %s): grant DescribeConfigs on it to have "
                    "roomlogs check that Kafka does not delete what it must read",
                    name,
                    for_code(code).__name__,
                    message,
                )
                continue
            out[name] = {entry[0]: entry[1] for entry in entries if entry[1] is not None}
    return out


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
