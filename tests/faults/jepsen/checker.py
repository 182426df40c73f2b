"""The checker: after the drain, compare what the publishers saw acknowledged with what was stored.

- lost: acknowledged by the broker, not stored (also split out: not even in Kafka, a broker-side loss);
- duplicated: an event id stored more than once, or one Kafka record (partition, offset) stored twice;
- unexpected: a stored id no publisher sent;
- dead-lettered: every event sent is valid, so any dead letter is the fault's doing;
- indeterminate: published, not acknowledged; may or may not be stored, never counted as lost.

Kafka itself is read back too, so a loss can be told apart: lost by the broker, or by the pipeline; and
copies a producer retry left in the topic show how much the event-id registry had to absorb.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field

import asyncpg
import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from .workload import History


@dataclass
class Verdict:
    published: int = 0
    acknowledged: int = 0
    indeterminate: int = 0
    #: of the indeterminate ones, how many were stored anyway (their acknowledgement was lost, not them)
    indeterminate_stored: int = 0
    stored: int = 0
    lost: list[str] = field(default_factory=list)
    lost_by_kafka: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)
    #: (partition, offset) of Kafka records stored as more than one row
    duplicated_records: list[tuple[int, int]] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    dead_lettered: dict[str, int] = field(default_factory=dict)
    in_kafka: int = 0
    #: extra copies of an id in the topic (producer retries the broker did not deduplicate)
    kafka_copies: int = 0

    @property
    def ok(self) -> bool:
        return not (
            self.lost or self.duplicated or self.duplicated_records or self.unexpected or self.dead_lettered
        )

    def problems(self) -> list[str]:
        out = []
        if self.lost:
            out.append(
                f"{len(self.lost)} acknowledged event(s) not stored ({len(self.lost_by_kafka)} not even in "
                f"Kafka), e.g. {self.lost[:3]}"
            )
        if self.duplicated:
            out.append(
                f"{len(self.duplicated)} event id(s) stored more than once, e.g. {self.duplicated[:3]}"
            )
        if self.duplicated_records:
            out.append(
                f"{len(self.duplicated_records)} Kafka record(s) stored twice: {self.duplicated_records[:3]}"
            )
        if self.unexpected:
            out.append(f"{len(self.unexpected)} stored id(s) nobody published, e.g. {self.unexpected[:3]}")
        if self.dead_lettered:
            out.append(f"dead-lettered: {self.dead_lettered}")
        return out


async def read_topic(bootstrap: str, topic: str, timeout_seconds: float = 60.0) -> list[tuple[int, int, str]]:
    """(partition, offset, event id) of every record in `topic`, read from the beginning to its end."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None)
    await consumer.start()
    try:
        await consumer._client.force_metadata_update()
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        ends = await consumer.end_offsets(tps)
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        out: list[tuple[int, int, str]] = []
        left = {tp for tp in tps if ends[tp] > 0}
        deadline = time.monotonic() + timeout_seconds
        while left and time.monotonic() < deadline:
            for tp, records in (await consumer.getmany(timeout_ms=500)).items():
                for r in records:
                    out.append((tp.partition, r.offset, str(orjson.loads(r.value)["event_id"])))
                    if r.offset + 1 >= ends[tp]:
                        left.discard(tp)
        if left:
            raise TimeoutError(f"could not read {topic} to its end within {timeout_seconds}s")
        return out
    finally:
        await consumer.stop()


async def check(dsn: str, schema: str, bootstrap: str, topic: str, history: History) -> Verdict:
    conn = await asyncpg.connect(dsn, timeout=30, server_settings={"search_path": schema})
    try:
        rows = await conn.fetch("SELECT event_id::text AS id, src_partition, src_offset FROM events")
        dead = await conn.fetch("SELECT reason, count(*) AS n FROM dead_letters GROUP BY reason")
    finally:
        await conn.close()
    records = await read_topic(bootstrap, topic)

    published = history.published
    acknowledged = history.acknowledged
    ids = Counter(r["id"] for r in rows)
    coordinates = Counter((r["src_partition"], r["src_offset"]) for r in rows)
    in_kafka = Counter(eid for _, _, eid in records)
    indeterminate = history.indeterminate
    return Verdict(
        published=len(published),
        acknowledged=len(acknowledged),
        indeterminate=len(indeterminate),
        indeterminate_stored=sum(1 for eid in indeterminate if eid in ids),
        stored=len(ids),
        lost=sorted(eid for eid in acknowledged if eid not in ids),
        lost_by_kafka=sorted(eid for eid in acknowledged if eid not in in_kafka),
        duplicated=sorted(eid for eid, n in ids.items() if n > 1),
        duplicated_records=sorted(c for c, n in coordinates.items() if n > 1),
        unexpected=sorted(eid for eid in ids if eid not in published),
        dead_lettered={r["reason"]: r["n"] for r in dead},
        in_kafka=len(records),
        kafka_copies=sum(n - 1 for n in in_kafka.values()),
    )
