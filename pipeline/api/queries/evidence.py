"""Evidence seals as the API reads them: the public keys, a room's seals over a range of days, one
room-day's seal, its sealed leaves, and the day's events in leaf order.

Called by ``GET /v1/seal-keys`` (public), ``GET /v1/rooms/{room_id}/days`` (each day's seal, after
authorization) and ``GET /v1/rooms/{room_id}/evidence`` (after authorization, inside one read-only
snapshot, so the seal, its leaves and the rows are read as of one moment). The seal tables' owner,
`pipeline.storage.seals`, holds their SQL; this module picks what the API reads.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import date, timedelta

import asyncpg

from pipeline.api.queries.events import COLUMNS
from pipeline.evidence.statements import DayLeaves
from pipeline.storage import seals
from pipeline.storage.classes import retention_days
from pipeline.storage.partitions import day_start
from pipeline.storage.seals import StoredSeal

__all__ = [
    "day_events",
    "day_sealed",
    "deleted_by",
    "retention_days",
    "room_seal",
    "seal_keys",
    "seal_states",
    "sealed_leaves",
]


async def seal_keys(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    """Every key seals were ever signed with (raw public key), oldest first."""
    return await seals.key_list(conn)


async def seal_states(
    conn: asyncpg.Connection, room_id: str, first: date, last: date
) -> dict[date, asyncpg.Record]:
    """The room's seals of the days first..last (inclusive), by day: when, which key, how many events."""
    return await seals.room_days(conn, room_id, first, last)


async def room_seal(conn: asyncpg.Connection, room_id: str, day: date) -> StoredSeal | None:
    found = await seals.seals(conn, room=room_id, day=day)
    return found[0] if found else None


async def day_sealed(conn: asyncpg.Connection, day: date) -> bool:
    """Whether the day is sealed (for every room: a day's seals and its head are one transaction)."""
    return bool(await seals.heads(conn, day=day))


async def sealed_leaves(conn: asyncpg.Connection, seal: StoredSeal) -> DayLeaves | None:
    """The seal's leaves, while they are kept."""
    return await seals.leaves_of(conn, seal.seal_id)


async def deleted_by(conn: asyncpg.Connection, event_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, str]:
    """For each of the events an audited deletion removed, the request that did (its id, or "unknown")."""
    found = await seals.deleted(conn, event_ids)
    return {e: "unknown" if r is None else str(r) for e, r in found.items()}


async def day_events(
    conn: asyncpg.Connection, room_id: str, day: date, event_ids: Sequence[uuid.UUID] | None = None
) -> list[asyncpg.Record]:
    """The room's stored events of the UTC day (only `event_ids`, when given) in leaf order, with the
    columns an export has."""
    since = day_start(day)
    sql = (
        f"SELECT {COLUMNS} FROM events WHERE room_id = $1 AND occurred_at >= $2 AND occurred_at < $3 "
        "AND ($4::uuid[] IS NULL OR event_id = ANY($4::uuid[])) ORDER BY occurred_at, event_id"
    )
    ids = None if event_ids is None else list(event_ids)
    return list(await conn.fetch(sql, room_id, since, since + timedelta(days=1), ids))
