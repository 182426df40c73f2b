"""The topics workers relay to, by incarnation (`feed_topics`, migration 0022): the one module that reads
and writes that table.

Who calls it: the ingest service's topic watch (pipeline/ingest/watch.py), which notes each relayed
topic's id as the broker gives it and says when it changed.
"""

from __future__ import annotations

import uuid

import asyncpg

__all__ = ["note"]


async def note(conn: asyncpg.Connection, topic: str, topic_id: uuid.UUID) -> uuid.UUID | None:
    """Record `topic_id` as the topic's; the id it had before when that was another (None: the same, or
    the topic is seen for the first time). Of several workers noting the same change, one is told."""
    async with conn.transaction():
        before: uuid.UUID | None = await conn.fetchval(
            "SELECT topic_id FROM feed_topics WHERE topic = $1 FOR UPDATE", topic
        )
        if before == topic_id:
            return None
        await conn.execute(
            """INSERT INTO feed_topics (topic, topic_id) VALUES ($1, $2)
               ON CONFLICT (topic) DO UPDATE SET topic_id = EXCLUDED.topic_id, seen_at = now()""",
            topic,
            topic_id,
        )
    return before
