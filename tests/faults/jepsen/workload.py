"""Room servers for the fault harness: concurrent publishers of seeded events, and what each send became.

Each publisher is a `RoomEventPublisher` as a room server runs it against Apache Kafka (idempotence on,
acks=all) and owns its own rooms. Events are chat messages whose ids, rooms and authors come from the
seed, so a run replays the same stream; only `occurred_at` is the wall clock (the worker refuses events
outside retention or in the future). Sends are paced; a publisher that falls behind (backpressure during
a fault) does not burst to catch up.

Every event handed to `send()` is *published*; it is *acknowledged* when the future `send()` returned
resolved without error. Anything else (send raised, the delivery failed, or never settled) is
*indeterminate*: it may or may not be in Kafka, and so may or may not be stored (Jepsen's "info").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from aiokafka.partitioner import murmur2

from pipeline.errors import RoomlogsError
from pipeline.publisher import RoomEventPublisher
from pipeline.publisher import events as ev

log = logging.getLogger("jepsen.workload")


@dataclass
class History:
    """Every event handed to a publisher, and how its delivery ended."""

    #: event id -> room, in the order the events were handed over
    published: dict[str, str] = field(default_factory=dict)
    acknowledged: set[str] = field(default_factory=set)
    #: event id -> why its delivery is not known to have succeeded (send raised, delivery failed)
    failed: dict[str, str] = field(default_factory=dict)

    @property
    def indeterminate(self) -> set[str]:
        """Published and not acknowledged: may or may not have reached Kafka."""
        return set(self.published) - self.acknowledged

    def settle(self, event_id: str, delivery: asyncio.Future[Any]) -> None:
        if delivery.cancelled():
            self.failed[event_id] = "CancelledError"
        elif (error := delivery.exception()) is not None:
            self.failed[event_id] = type(error).__name__
        else:
            self.acknowledged.add(event_id)


def partition_of(room: str, partitions: int) -> int:
    """Kafka's default partitioner, as RoomEventPublisher keys events (by room id)."""
    hashed: int = murmur2(room.encode()) & 0x7FFFFFFF
    return hashed % partitions


def rooms_covering(seed: int, scenario: str, partitions: int, per_partition: int) -> list[str]:
    """Seeded room names, `per_partition` of them landing on each partition (so every partition gets a
    steady stream and a fault's effect on any of them can be measured)."""
    rng = random.Random(f"{seed}/{scenario}/rooms")
    by_partition: dict[int, list[str]] = {p: [] for p in range(partitions)}
    while any(len(rooms) < per_partition for rooms in by_partition.values()):
        room = f"room-{rng.getrandbits(32):08x}"
        rooms = by_partition[partition_of(room, partitions)]
        if len(rooms) < per_partition:
            rooms.append(room)
    # interleaved, so that dealing them out round-robin gives every publisher rooms on many partitions
    return [rooms[i] for i in range(per_partition) for rooms in by_partition.values()]


@dataclass(frozen=True)
class WorkloadPlan:
    seed: int
    scenario: str
    partitions: int
    publishers: int = 3
    rooms_per_partition: int = 4
    #: events per second, all publishers together
    rate_per_second: float = 150.0


def seeded_events(plan: WorkloadPlan, publisher: int, rooms: list[str]) -> Iterator[dict[str, Any]]:
    """The endless, seeded event stream of one publisher (its rooms only)."""
    rng = random.Random(f"{plan.seed}/{plan.scenario}/publisher-{publisher}")
    n = 0
    while True:
        room = rng.choice(rooms)
        author = rng.randrange(40)
        event_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        yield ev.chat_message(
            room, ev.user(f"u-{author}", f"User {author}"), f"p{publisher} m{n}", event_id=event_id
        )
        n += 1


class Workload:
    """`plan.publishers` room servers sending until `stop()`; the outcome of every send in `history`."""

    def __init__(self, plan: WorkloadPlan, bootstrap: str, topic: str) -> None:
        self.plan = plan
        self.bootstrap = bootstrap
        self.topic = topic
        self.history = History()
        rooms = rooms_covering(plan.seed, plan.scenario, plan.partitions, plan.rooms_per_partition)
        self._rooms = [rooms[k :: plan.publishers] for k in range(plan.publishers)]
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._publishers: list[RoomEventPublisher] = []
        #: DeliveryError messages from close(): what each publisher itself reported as undelivered
        self.close_reports: list[str] = []

    async def start(self) -> None:
        for _ in range(self.plan.publishers):
            publisher = RoomEventPublisher(
                bootstrap=self.bootstrap,
                topic=self.topic,
                idempotent=True,
                linger_seconds=0.005,
                request_timeout_seconds=30.0,
            )
            await publisher.start()
            self._publishers.append(publisher)
        self._tasks = [
            asyncio.create_task(self._publish(k, publisher), name=f"publisher-{k}")
            for k, publisher in enumerate(self._publishers)
        ]

    async def stop(self) -> None:
        """Stop sending, then close every publisher (each waits for its deliveries to settle)."""
        self._stop.set()
        await asyncio.gather(*self._tasks)
        for publisher in self._publishers:
            try:
                await publisher.close()
            except RoomlogsError as exc:  # DeliveryError: the publisher reports what did not arrive
                self.close_reports.append(str(exc))

    async def _publish(self, k: int, publisher: RoomEventPublisher) -> None:
        loop = asyncio.get_running_loop()
        interval = self.plan.publishers / self.plan.rate_per_second
        history = self.history
        due = loop.time()
        for event in seeded_events(self.plan, k, self._rooms[k]):
            if self._stop.is_set():
                return
            event_id = event["event_id"]
            history.published[event_id] = event["room_id"]
            try:
                delivery = await publisher.send(event)
            except RoomlogsError as exc:  # DeliveryError: the producer refused it (indeterminate)
                history.failed[event_id] = type(exc.__cause__ or exc).__name__
            else:
                delivery.add_done_callback(partial(history.settle, event_id))
            due += interval
            delay = due - loop.time()
            if delay < -1.0:
                due = loop.time()  # held up by backpressure: carry on at the pace, do not burst
            elif delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), delay)
