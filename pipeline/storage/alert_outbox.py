"""The alerts outbox (`alert_outbox`, migration 0017): alerts waiting for the alerts topic.

The `alerts` table is the record of truth; the topic is for other services (a moderation bot, a pager).
A trigger on `alerts` queues one message per stored alert in the transaction that stores it, so the topic
gets exactly the committed alerts; the relay (pipeline/ingest/alert_relay.py) sends and deletes rows until
the queue is empty, at least once.

Message format (schemas/README.md, "Alerts topic"): key the room id (UTF-8), so a room's alerts keep their
order on one partition; value a JSON object with the alert's columns (alert_id, room_id, retention_class,
detector, subject, window_key, window_start, window_end, users, counts, event_ids, raised_at).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg

__all__ = ["Message", "claim", "done", "pending"]


@dataclass(frozen=True, slots=True)
class Message:
    outbox_id: int
    key: bytes
    value: bytes


async def claim(conn: asyncpg.Connection, limit: int) -> list[Message]:
    """Lock up to `limit` queued messages, oldest first, that no other relay holds (inside a transaction)."""
    rows = await conn.fetch(
        """SELECT outbox_id, message_key, value FROM alert_outbox
            ORDER BY outbox_id LIMIT $1 FOR UPDATE SKIP LOCKED""",
        limit,
    )
    return [Message(r["outbox_id"], r["message_key"], r["value"]) for r in rows]


async def done(conn: asyncpg.Connection, outbox_ids: Sequence[int]) -> None:
    if outbox_ids:
        await conn.execute("DELETE FROM alert_outbox WHERE outbox_id = ANY($1::bigint[])", list(outbox_ids))


async def pending(conn: asyncpg.Connection) -> int:
    return int(await conn.fetchval("SELECT count(*) FROM alert_outbox"))
