"""How far the worker is: stored offsets versus the end of the topic, and what the tables hold."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer, TopicPartition
from tqdm import tqdm

from pipeline.kafka_client import KafkaConnection, kafka_errors
from pipeline.settings import Settings
from pipeline.storage import db, offsets


async def end_offsets(settings: Settings) -> dict[int, int]:
    """The offset after the last record of each partition of the events topic.

    ListOffsets(latest) alone is not enough: Tansu answers it with the base offset of the last record batch
    (847 for a partition holding 1,000 records in batches), while fetch responses carry the true high
    watermark. So: ask, then fetch from there and take the larger high watermark (equal on Apache Kafka).
    """
    consumer = AIOKafkaConsumer(**KafkaConnection.of(settings).kwargs(), enable_auto_commit=False)
    try:
        async with kafka_errors(settings):
            await consumer.start()
    except BaseException:
        await consumer.stop()  # a consumer that could not start still holds a client
        raise
    try:
        parts = consumer.partitions_for_topic(settings.events_topic) or set()
        if not parts:
            await consumer._client.force_metadata_update()
            parts = consumer.partitions_for_topic(settings.events_topic) or set()
        tps = [TopicPartition(settings.events_topic, p) for p in parts]
        if not tps:
            return {}
        listed = await consumer.end_offsets(tps)
        consumer.assign(tps)
        for tp, offset in listed.items():
            consumer.seek(tp, offset)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(consumer.highwater(tp) is None for tp in tps):
            await consumer.getmany(timeout_ms=200)
        return {tp.partition: max(listed[tp], consumer.highwater(tp) or 0) for tp in tps}
    finally:
        await consumer.stop()


async def stored_offsets(settings: Settings) -> dict[int, int]:
    """{partition: next offset of record} of the configured group on the events topic."""
    conn = await db.connect(settings.postgres_dsn.get(), settings.postgres_schema)
    try:
        found = await offsets.stored_offsets(conn, settings.consumer_group, settings.events_topic)
        return {p: o.next_offset for p, o in found.items()}
    finally:
        await conn.close()


async def wait_caught_up(settings: Settings, timeout_seconds: float, *, progress: bool = True) -> bool:
    """Wait until the worker has durably written every record now in the topic; show a progress bar."""
    ends = await end_offsets(settings)
    total = sum(ends.values())
    deadline = time.monotonic() + timeout_seconds
    with tqdm(total=total, unit="rec", desc="stored", disable=not progress, leave=False) as bar:
        while True:
            done_offsets = await stored_offsets(settings)
            done = sum(min(done_offsets.get(p, 0), end) for p, end in ends.items())
            bar.update(done - bar.n)
            if done >= total:
                return True
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.5)


@dataclass
class StoredReport:
    events_by_type: dict[str, int] = field(default_factory=dict)
    events_by_class: dict[str, int] = field(default_factory=dict)
    dead_letters_by_reason: dict[str, int] = field(default_factory=dict)
    rooms: int = 0

    def render(self) -> str:
        lines = [f"stored events: {sum(self.events_by_type.values()):,} in {self.rooms:,} rooms"]
        lines += [f"  {k:<28} {v:>10,}" for k, v in sorted(self.events_by_type.items())]
        lines.append("by retention class:")
        lines += [f"  {k:<28} {v:>10,}" for k, v in sorted(self.events_by_class.items())]
        lines.append(f"dead-lettered: {sum(self.dead_letters_by_reason.values()):,}")
        lines += [f"  {k:<28} {v:>10,}" for k, v in sorted(self.dead_letters_by_reason.items())]
        return "\n".join(lines)


async def stored_report(settings: Settings) -> StoredReport:
    conn = await db.connect(settings.postgres_dsn.get(), settings.postgres_schema)
    try:
        rep = StoredReport()
        for r in await conn.fetch(
            "SELECT event_type, retention_class, count(*) AS n FROM events GROUP BY 1, 2"
        ):
            rep.events_by_type[r["event_type"]] = rep.events_by_type.get(r["event_type"], 0) + r["n"]
            rep.events_by_class[r["retention_class"]] = (
                rep.events_by_class.get(r["retention_class"], 0) + r["n"]
            )
        for r in await conn.fetch("SELECT reason, count(*) AS n FROM dead_letters GROUP BY 1"):
            rep.dead_letters_by_reason[r["reason"]] = r["n"]
        rep.rooms = await conn.fetchval("SELECT count(DISTINCT room_id) FROM events") or 0
        return rep
    finally:
        await conn.close()
