"""The events topic watched while ingest runs: the same incarnation as judged? a worker left out of its group?

Who calls it: the ingest service runs `TopicWatch.run()` as a task beside its loop, every `interval_seconds`.

Between two assignments the world can change under a running worker: the topic deleted and recreated with
the same partitions (the consumer would fetch the new log at the old positions: a silent skip if it is
longer), or deleted and recreated while the group's assignment went empty (aiokafka notices a topic coming
back only at its next metadata refresh, up to 5 minutes), or a worker that sits in its group with no
partition at all (a static member restarted under a new instance id on a broker that never reassigns it).
Each check is one Metadata request (and, while the worker holds nothing, one read of the offsets of record):

- the topic's id differs from the one the partitions were judged in: `on_new_log()` (the service judges its
  partitions again: pipeline/ingest/positions.py, finding `new_log`);
- the topic does not exist: not ready, "the events topic does not exist";
- the topic has partitions the consumer's metadata lacks (added with `kafka-topics --alter --partitions`):
  the metadata is refreshed now, and the group rebalances onto them (else: at aiokafka's next refresh, up
  to 5 minutes, while the records on them wait unread);
- this worker holds no partition: the consumer's metadata is refreshed (a topic that came back triggers a
  rejoin); once that lasts `idle_grace_seconds`, partitions with records waiting that no worker has written
  meanwhile mean it is left out: one warning line naming the likely cause and the setting, not ready with
  that reason, and a rejoin is requested. When other workers keep writing every partition, it is idle by
  design (more workers than partitions): ready.

Every `feeds_interval_seconds` it also looks at the topics the relays write (alerts, dead letters,
deletions): a topic id other than the one noted in `feed_topics` (migration 0022) is a topic deleted and
recreated, or a broker started empty under a kept database. One warning line says what was relayed before
is not on it: alerts and dead letters are not sent again (their tables are the record); the deletion
requests are queued again for the relay (a restore from a backup re-applies them from that topic).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import asyncpg
from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError

from pipeline.kafka_logs import LogProbe
from pipeline.metrics import IngestMetrics
from pipeline.settings import Settings
from pipeline.storage import db, deletion_outbox, feed_topics, offsets
from pipeline.storage.db import CONNECTION_ERRORS

__all__ = ["TopicWatch"]

log = logging.getLogger("roomlogs.ingest.watch")


@dataclass(frozen=True, slots=True)
class WatchState:
    #: why this worker cannot ingest although its loop runs (None: nothing wrong seen)
    problem: str | None = None
    #: a worker that holds nothing by design says so here
    idle: str | None = None


class TopicWatch:
    def __init__(
        self,
        settings: Settings,
        consumer: AIOKafkaConsumer,
        probe: LogProbe,
        pool: asyncpg.Pool,
        metrics: IngestMetrics,
        *,
        judged_topic_id: Callable[[], uuid.UUID | None],
        on_new_log: Callable[[], Awaitable[None]],
        interval_seconds: float = 5.0,
        feeds_interval_seconds: float = 30.0,
    ) -> None:
        self._s = settings
        self._consumer = consumer
        self._probe = probe
        self._pool = pool
        self._metrics = metrics
        self._judged_topic_id = judged_topic_id
        self._on_new_log = on_new_log
        self.interval_seconds = interval_seconds
        self.feeds_interval_seconds = feeds_interval_seconds
        self._feeds_at: float | None = None
        #: a worker with no partition for this long is checked for being left out
        self.idle_grace_seconds = max(15.0, 3 * settings.kafka_session_timeout_seconds)
        self.state = WatchState()
        self._empty_since: float | None = None
        self._warned = False
        self._rejoined_at = 0.0

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_seconds)
            try:
                self.state = await self.check()
            except (KafkaError, OSError, TimeoutError, *CONNECTION_ERRORS) as e:
                log.debug("topic watch skipped a round: %r", e)
            now = time.monotonic()
            if self._feeds_at is None or now - self._feeds_at >= self.feeds_interval_seconds:
                self._feeds_at = now
                try:
                    await self.check_feeds()
                except (KafkaError, OSError, TimeoutError, *CONNECTION_ERRORS) as e:
                    log.debug("relayed topics not checked this round: %r", e)
                except asyncpg.PostgresError as e:  # never the end of the events topic's watch
                    log.warning("relayed topics not checked: %r", e)

    async def check_feeds(self) -> None:
        """Note the relayed topics' ids; say which one is another incarnation than noted before."""
        s = self._s
        for topic, what in (
            (s.alerts_topic, "alerts"),
            (s.dead_letter_topic, "dead letters"),
            (s.deletions_topic, "deletion requests"),
        ):
            topic_id, partitions = await self._probe.partitions(topic)
            if topic_id is None or not partitions:
                continue  # a broker that gives no topic ids; a topic not there (its relay waits for it)
            async with db.acquire(self._pool) as conn:
                before = await feed_topics.note(conn, topic, topic_id)
                if before is None:
                    continue
                requeued = (
                    await deletion_outbox.requeue_missing(conn, ()) if topic == s.deletions_topic else 0
                )
            after = (
                f"the {requeued} deletion requests of the database are queued for it again"
                if topic == s.deletions_topic
                else f"they are not sent again: the {what} table is the record"
            )
            log.warning(
                "the %s topic %s is a new one (topic id %s; relayed to %s before: a topic deleted and "
                "recreated, a broker started empty): the %s relayed before are not on it; %s",
                what, topic, topic_id, before, what, after,
            )  # fmt: skip

    async def check(self) -> WatchState:
        topic = self._s.events_topic
        topic_id, partitions = await self._probe.partitions(topic)
        if not partitions:
            self._empty_since = None
            return WatchState(problem=f"the events topic {topic} does not exist (deleted?); waiting for it")
        held = self._consumer.assignment()
        if held:
            self._empty_since = None
            self._warned = False
            self._metrics.unowned_partitions.set(0)
            known = self._consumer._client.cluster.partitions_for_topic(topic) or set()
            if set(partitions) - known:
                # partitions added to the topic: the consumer's metadata shows them only at its next
                # refresh (metadata.max.age, 5 minutes); refreshed now, the group rebalances onto them
                log.warning(
                    "the events topic %s has %d partitions now (the group's assignment knows %d): refreshing "
                    "the metadata, the group rebalances onto the new ones",
                    topic, len(partitions), len(known),
                )  # fmt: skip
                await self._consumer._client.force_metadata_update()
            judged = self._judged_topic_id()
            if topic_id is not None and judged is not None and topic_id != judged:
                log.warning(
                    "the events topic %s is another incarnation now (topic id %s, judged in %s): judging its "
                    "partitions again",
                    topic,
                    topic_id,
                    judged,
                )
                await self._on_new_log()
            return WatchState()
        # holding nothing: a topic that came back shows up only at the consumer's next metadata refresh
        await self._consumer._client.force_metadata_update()
        now = time.monotonic()
        if self._empty_since is None:
            self._empty_since = now
        idle_for = now - self._empty_since
        if idle_for < self.idle_grace_seconds:
            return WatchState(idle="waiting for an assignment")
        unowned = await self._unowned(partitions, idle_for)
        self._metrics.unowned_partitions.set(len(unowned))
        if not unowned:
            self._warned = False
            return WatchState(idle="other workers of the group hold every partition and write them")
        problem = (
            f"holds no partition of {topic} for {idle_for:.0f} s while partitions {unowned} have records "
            f"waiting that no worker wrote meanwhile: the broker is not assigning this member (a static "
            "member restarted under a new instance id on a broker that never reassigns it, such as the "
            "embedded Tansu: set ROOMLOGS_KAFKA_STATIC_MEMBERSHIP=false there, or keep "
            "ROOMLOGS_KAFKA_GROUP_INSTANCE_ID stable per worker), or the group is still rebalancing"
        )
        if not self._warned:
            log.warning("this worker %s; rejoining its group", problem)
            self._warned = True
        if now - self._rejoined_at >= self.idle_grace_seconds:
            self._consumer._coordinator.request_rejoin()
            self._rejoined_at = now
        return WatchState(problem=problem)

    async def _unowned(self, partitions: list[int], idle_for: float) -> list[int]:
        """Partitions with records waiting whose offsets of record did not move while we held nothing."""
        s = self._s
        topic_log = await self._probe.describe(s.events_topic, partitions)
        async with db.acquire(self._pool) as conn:
            stored = await offsets.stored_offsets(conn, s.consumer_group, s.events_topic)
            age = await conn.fetchval("SELECT now()")
        waiting = []
        for p, part in sorted(topic_log.partitions.items()):
            mine = stored.get(p)
            behind = part.end > (mine.next_offset if mine else part.start)
            stale = mine is None or (age - mine.updated_at).total_seconds() >= idle_for
            if behind and stale:
                waiting.append(p)
        return waiting
