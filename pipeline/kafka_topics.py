"""Create the topics roomlogs needs, when they are missing (brokers with auto-creation off)."""

from __future__ import annotations

import contextlib
import logging

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from pipeline.settings import Settings

log = logging.getLogger("roomlogs.kafka")


async def ensure_topics(settings: Settings) -> list[str]:
    """Create the events and dead-letter topics if absent; return the names created."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = [
            NewTopic(
                settings.events_topic, settings.events_topic_partitions, settings.kafka_replication_factor
            ),
            NewTopic(settings.dead_letter_topic, 1, settings.kafka_replication_factor),
        ]
        missing = [t for t in wanted if t.name not in existing]
        if missing:
            with contextlib.suppress(TopicAlreadyExistsError):  # created by another process meanwhile
                await admin.create_topics(missing)
            log.info("created topics %s", [t.name for t in missing])
        return [t.name for t in missing]
    finally:
        await admin.close()
