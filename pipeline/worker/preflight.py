"""Before the worker starts: can it use Kafka and PostgreSQL with these settings?

Called by `roomlogs worker` before faust takes over the process, so a setting that cannot work (a wrong
password, an untrusted certificate, a missing ACL, a topic that cannot be created) ends the worker at once
with one line naming what to fix and a non-zero exit, instead of a traceback from inside faust or a worker
that starts and then idles. Passing it proves access at start-up only: faults later are the ingest loop's
(see pipeline/ingest/consumer.py and README "What a refusing broker gets").
"""

from __future__ import annotations

import logging
import ssl

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import (
    ClusterAuthorizationFailedError,
    GroupAuthorizationFailedError,
    KafkaError,
    TopicAuthorizationFailedError,
)

from pipeline.errors import ConfigurationError, StorageUnavailableError
from pipeline.kafka_client import client_kwargs, kafka_errors
from pipeline.kafka_topics import ensure_topics
from pipeline.settings import Settings
from pipeline.storage import db

log = logging.getLogger("roomlogs.worker")

_FETCH_PROBE_MS = 500
_REFUSALS = (TopicAuthorizationFailedError, GroupAuthorizationFailedError, ClusterAuthorizationFailedError)


async def preflight(settings: Settings) -> None:
    """Raise a RoomlogsError naming the setting (or ACL) to fix when the worker could not work.

    Checks, in order: the brokers accept our TLS and SASL settings; the events and dead-letter topics
    exist or can be created; we may read the events topic and use the consumer group; PostgreSQL accepts
    the DSN (TLS included).
    """
    await ensure_topics(settings)
    await _check_topic_access(settings)
    await _check_postgres(settings)


async def _check_topic_access(settings: Settings) -> None:
    """Describe and read the events topic (from its end: nothing is consumed), read the group's offsets."""
    consumer = AIOKafkaConsumer(**client_kwargs(settings), enable_auto_commit=False, group_id=None)
    admin = AIOKafkaAdminClient(**client_kwargs(settings))
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
    try:
        conn = await db.connect(settings.postgres_dsn.get(), settings.postgres_schema)
    except StorageUnavailableError as exc:
        if isinstance(exc.__cause__, ssl.SSLCertVerificationError):
            raise ConfigurationError(
                f"PostgreSQL presented a certificate this worker does not trust "
                f"({exc.__cause__.verify_message}): set sslrootcert in ROOMLOGS_POSTGRES_DSN to the CA "
                "that signed it"
            ) from None
        raise
    await conn.close()
