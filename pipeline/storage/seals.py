"""The seal tables (migration 0014): the one module that reads and writes `seal_keys`, `seals`,
`seal_leaves`, `seal_heads`, `seal_head_publications`, and reads `deleted_events`.

Who calls it: the sealing run (pipeline/sealing: writes seals and heads, inside one transaction per day),
the search indexes of sealed days (pipeline/storage/search_index.py: which days are sealed),
`roomlogs verify` and `roomlogs seals` (read), the query API (a day's seal for an export; the public keys).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from datetime import date, datetime

import asyncpg

from pipeline.evidence.statements import DayLeaves
from pipeline.storage import catalog
from pipeline.storage.partitions import parse_day

__all__ = [
    "UNKNOWN_TOPIC_ID",
    "Incarnation",
    "StoredHead",
    "StoredSeal",
    "add_key",
    "day_rows",
    "deleted",
    "dropped_by_retention",
    "forget_leaves",
    "heads",
    "incarnations",
    "insert_head",
    "insert_seal",
    "last_head",
    "last_seals",
    "leaves_of",
    "name_incarnation",
    "public_keys",
    "publications",
    "published",
    "record_publication",
    "rooms_with_rows",
    "sealed_days",
    "seals",
    "stored_rows",
    "unsealed_days",
]


#: The seal lock: the sealing run holds it exclusively while it reads a closed day's rows and seals them
#: (pipeline/sealing/run.py); an ingest transaction storing rows of a day that may be closed holds it shared
#: while it asks whether the day is sealed, and until it commits (pipeline/storage/writer.py). So a day's
#: seal covers every row the writers stored for it, and no row is stored after it.
SEAL_LOCK = "SELECT pg_advisory_xact_lock(hashtextextended(current_schema() || ':roomlogs.seals', 0))"
SEAL_LOCK_SHARED = (
    "SELECT pg_advisory_xact_lock_shared(hashtextextended(current_schema() || ':roomlogs.seals', 0))"
)


@dataclass(frozen=True, slots=True)
class StoredSeal:
    seal_id: int
    room_id: str
    day: date
    seq: int
    tree_size: int
    root: bytes
    statement: bytes
    statement_hash: bytes
    key_id: str
    signature: bytes
    sealed_at: datetime


@dataclass(frozen=True, slots=True)
class StoredHead:
    head_id: int
    day: date
    seq: int
    tree_size: int
    root: bytes
    statement: bytes
    statement_hash: bytes
    key_id: str
    signature: bytes
    sealed_at: datetime


_SEAL = "seal_id, room_id, day, seq, tree_size, root, statement, statement_hash, key_id, signature, sealed_at"
_HEAD = "head_id, day, seq, tree_size, root, statement, statement_hash, key_id, signature, sealed_at"


def _seal(r: asyncpg.Record) -> StoredSeal:
    return StoredSeal(*(r[k] for k in _SEAL.split(", ")))


def _head(r: asyncpg.Record) -> StoredHead:
    return StoredHead(*(r[k] for k in _HEAD.split(", ")))


# --- keys ------------------------------------------------------------------------------------------------
async def add_key(conn: asyncpg.Connection, key_id: str, public_raw: bytes) -> None:
    """Register a signing key's public half (once; a key already known is left as it is)."""
    await conn.execute(
        """INSERT INTO seal_keys (key_id, algorithm, public_key) VALUES ($1, 'ed25519', $2)
           ON CONFLICT (key_id) DO NOTHING""",
        key_id,
        public_raw,
    )


async def public_keys(conn: asyncpg.Connection) -> dict[str, bytes]:
    return {
        r["key_id"]: r["public_key"] for r in await conn.fetch("SELECT key_id, public_key FROM seal_keys")
    }


async def key_list(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    """Every key seals were ever signed with (key_id, algorithm, raw public_key, added_at), oldest first."""
    return list(
        await conn.fetch(
            "SELECT key_id, algorithm, public_key, added_at FROM seal_keys ORDER BY added_at, key_id"
        )
    )


async def room_days(
    conn: asyncpg.Connection, room_id: str, first: date, last: date
) -> dict[date, asyncpg.Record]:
    """The room's seals of the days first..last (inclusive), by day: sealed_at, key_id, tree_size."""
    rows = await conn.fetch(
        """SELECT day, sealed_at, key_id, tree_size FROM seals
            WHERE room_id = $1 AND day >= $2 AND day <= $3""",
        room_id,
        first,
        last,
    )
    return {r["day"]: r for r in rows}


# --- what to seal ------------------------------------------------------------------------------------------
async def unsealed_days(conn: asyncpg.Connection, before: date) -> list[date]:
    """Days before `before` that have an `events` partition and no daily head yet, oldest first. (A day
    gets its head in the transaction that seals all its rooms, so a day with a head is sealed whole.)"""
    days = {
        day
        for child in await catalog.children(conn)
        if child.parent.startswith("events_") and (day := parse_day(child.name)) is not None and day < before
    }
    headed = {r["day"] for r in await conn.fetch("SELECT day FROM seal_heads")}
    return sorted(days - headed)


async def headed_days(conn: asyncpg.Connection, days: Iterable[date]) -> set[date]:
    """Those of `days` that are sealed (have their daily head). Read under `SEAL_LOCK_SHARED` for an answer
    that holds until the caller's commit."""
    rows = await conn.fetch("SELECT day FROM seal_heads WHERE day = ANY($1::date[])", sorted(days))
    return {r["day"] for r in rows}


async def sealed_days(conn: asyncpg.Connection) -> list[date]:
    """Days sealed whole (every room of the day: a day has a head once all its rooms are sealed), newest
    first."""
    return [r["day"] for r in await conn.fetch("SELECT day FROM seal_heads ORDER BY day DESC")]


async def rooms_with_rows(conn: asyncpg.Connection, day: date) -> list[str]:
    rows = await conn.fetch(
        """SELECT DISTINCT room_id FROM events
            WHERE occurred_at >= $1::date::timestamp AT TIME ZONE 'UTC'
              AND occurred_at < ($1::date + 1)::timestamp AT TIME ZONE 'UTC' ORDER BY 1""",
        day,
    )
    return [r["room_id"] for r in rows]


async def day_rows(
    conn: asyncpg.Connection, day: date, rooms: Iterable[str] | None = None
) -> AsyncIterator[asyncpg.Record]:
    """The event rows of `day` (of the rooms asked, or all), by room then leaf order (inside a transaction:
    a cursor)."""
    async for r in conn.cursor(
        """SELECT event_id, occurred_at, room_id, event_type, schema_version, actor_id, target_id, body,
                  payload, retention_class, ingested_at
             FROM events
            WHERE occurred_at >= $1::date::timestamp AT TIME ZONE 'UTC'
              AND occurred_at < ($1::date + 1)::timestamp AT TIME ZONE 'UTC'
              AND ($2::text[] IS NULL OR room_id = ANY($2))
            ORDER BY room_id, occurred_at, event_id""",
        day,
        None if rooms is None else list(rooms),
        prefetch=2000,
    ):
        yield r


async def stored_rows(
    conn: asyncpg.Connection, day: date, rooms: Iterable[str] | None
) -> list[asyncpg.Record]:
    """A day's rows as they are stored now, in `events` or (a room under legal hold whose day retention
    dropped) in `held_events`, with `held` saying which."""
    return list(
        await conn.fetch(
            """SELECT event_id, occurred_at, room_id, event_type, schema_version, actor_id, target_id, body,
                      payload, retention_class, false AS held
                 FROM events
                WHERE occurred_at >= $1::date::timestamp AT TIME ZONE 'UTC'
                  AND occurred_at < ($1::date + 1)::timestamp AT TIME ZONE 'UTC'
                  AND ($2::text[] IS NULL OR room_id = ANY($2))
               UNION ALL
               SELECT event_id, occurred_at, room_id, event_type, schema_version, actor_id, target_id, body,
                      payload, retention_class, true
                 FROM held_events
                WHERE occurred_at >= $1::date::timestamp AT TIME ZONE 'UTC'
                  AND occurred_at < ($1::date + 1)::timestamp AT TIME ZONE 'UTC'
                  AND ($2::text[] IS NULL OR room_id = ANY($2))""",
            day,
            None if rooms is None else list(rooms),
        )
    )


async def dropped_by_retention(conn: asyncpg.Connection, day: date) -> dict[str, str]:
    """Retention classes whose rows of `day` retention removed (a partition dropped, or held rows purged),
    with what the ledger says of it."""
    rows = await conn.fetch(
        """SELECT retention_class, action, table_name, run_id, dropped_at FROM deletion_ledger
            WHERE day = $1 AND table_name IN ('events', 'held_events') AND retention_class IS NOT NULL
            ORDER BY entry_id""",
        day,
    )
    return {
        r["retention_class"]: (
            f"{r['action']} of {r['table_name']} by run {r['run_id']} at {r['dropped_at']:%Y-%m-%d %H:%M:%S}"
        )
        for r in rows
    }


# --- seals -------------------------------------------------------------------------------------------------
async def last_seals(conn: asyncpg.Connection, rooms: Iterable[str]) -> dict[str, StoredSeal]:
    """Each room's newest seal (the one the next seal of the room chains to)."""
    rows = await conn.fetch(
        f"""SELECT DISTINCT ON (room_id) {_SEAL} FROM seals WHERE room_id = ANY($1::text[])
             ORDER BY room_id, seq DESC""",
        list(rooms),
    )
    return {r["room_id"]: _seal(r) for r in rows}


async def insert_seal(conn: asyncpg.Connection, seal: StoredSeal, leaves: DayLeaves) -> int:
    blob, classes = leaves.encode()
    seal_id: int = await conn.fetchval(
        """INSERT INTO seals (room_id, day, seq, tree_size, root, statement, statement_hash, key_id,
                              signature, sealed_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING seal_id""",
        seal.room_id,
        seal.day,
        seal.seq,
        seal.tree_size,
        seal.root,
        seal.statement,
        seal.statement_hash,
        seal.key_id,
        seal.signature,
        seal.sealed_at,
    )
    await conn.execute(
        "INSERT INTO seal_leaves (seal_id, day, leaves, classes) VALUES ($1, $2, $3, $4)",
        seal_id,
        seal.day,
        blob,
        classes,
    )
    return seal_id


async def seals(
    conn: asyncpg.Connection, *, room: str | None = None, day: date | None = None
) -> list[StoredSeal]:
    """Seals of a room and/or day (all when neither), by room and seq."""
    rows = await conn.fetch(
        f"""SELECT {_SEAL} FROM seals
             WHERE ($1::text IS NULL OR room_id = $1) AND ($2::date IS NULL OR day = $2)
             ORDER BY room_id, seq""",
        room,
        day,
    )
    return [_seal(r) for r in rows]


async def leaves_of(conn: asyncpg.Connection, seal_id: int) -> DayLeaves | None:
    """A seal's leaves (None once maintenance removed them: every row they speak of is past retention)."""
    row = await conn.fetchrow("SELECT leaves, classes FROM seal_leaves WHERE seal_id = $1", seal_id)
    return None if row is None else DayLeaves.decode(row["leaves"], row["classes"])


async def deleted(
    conn: asyncpg.Connection, event_ids: Iterable[uuid.UUID]
) -> dict[uuid.UUID, uuid.UUID | None]:
    """For each event id an authorized deletion removed, the request that did (None: a deletion whose
    request row is not there, which should not happen)."""
    rows = await conn.fetch(
        """SELECT d.event_id, r.request_id FROM deleted_events d
             LEFT JOIN deletion_requests r ON r.txid = d.txid
            WHERE d.event_id = ANY($1::uuid[])""",
        list(event_ids),
    )
    return {r["event_id"]: r["request_id"] for r in rows}


# --- daily heads -------------------------------------------------------------------------------------------
async def last_head(conn: asyncpg.Connection) -> StoredHead | None:
    row = await conn.fetchrow(f"SELECT {_HEAD} FROM seal_heads ORDER BY seq DESC LIMIT 1")
    return None if row is None else _head(row)


async def insert_head(conn: asyncpg.Connection, head: StoredHead) -> int:
    head_id: int = await conn.fetchval(
        """INSERT INTO seal_heads (day, seq, tree_size, root, statement, statement_hash, key_id, signature,
                                   sealed_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING head_id""",
        head.day,
        head.seq,
        head.tree_size,
        head.root,
        head.statement,
        head.statement_hash,
        head.key_id,
        head.signature,
        head.sealed_at,
    )
    return head_id


async def heads(conn: asyncpg.Connection, *, day: date | None = None) -> list[StoredHead]:
    rows = await conn.fetch(
        f"SELECT {_HEAD} FROM seal_heads WHERE ($1::date IS NULL OR day = $1) ORDER BY seq", day
    )
    return [_head(r) for r in rows]


#: The topic id a publication carries when the broker gave none (or it was recorded before migration 0020).
UNKNOWN_TOPIC_ID = uuid.UUID(int=0)


@dataclass(frozen=True, slots=True)
class Incarnation:
    """One incarnation of the witness topic, as the publications recorded it."""

    topic_id: uuid.UUID
    #: daily heads it acknowledged
    heads: int
    first_at: datetime
    last_at: datetime


async def incarnations(conn: asyncpg.Connection, topic: str) -> list[Incarnation]:
    """The incarnations of `topic` heads were published to, the one published to last at the end."""
    rows = await conn.fetch(
        """SELECT topic_id, count(*) AS heads, min(published_at) AS first_at, max(published_at) AS last_at
             FROM seal_head_publications WHERE topic = $1
            GROUP BY topic_id ORDER BY max(published_at), topic_id""",
        topic,
    )
    return [Incarnation(r["topic_id"], r["heads"], r["first_at"], r["last_at"]) for r in rows]


async def published(
    conn: asyncpg.Connection, topic: str, topic_ids: Iterable[uuid.UUID] | None = None
) -> set[int]:
    """The heads acknowledged by `topic` (by any of its incarnations, or by those of `topic_ids`)."""
    ids = None if topic_ids is None else list(topic_ids)
    rows = await conn.fetch(
        """SELECT head_id FROM seal_head_publications
            WHERE topic = $1 AND ($2::uuid[] IS NULL OR topic_id = ANY($2::uuid[]))""",
        topic,
        ids,
    )
    return {r["head_id"] for r in rows}


async def publications(conn: asyncpg.Connection, topic: str) -> dict[int, list[tuple[uuid.UUID, datetime]]]:
    """Per head, each (topic id, when) `topic` acknowledged it, oldest first."""
    out: dict[int, list[tuple[uuid.UUID, datetime]]] = {}
    for r in await conn.fetch(
        """SELECT head_id, topic_id, published_at FROM seal_head_publications WHERE topic = $1
            ORDER BY published_at, topic_id""",
        topic,
    ):
        out.setdefault(r["head_id"], []).append((r["topic_id"], r["published_at"]))
    return out


async def record_publication(
    conn: asyncpg.Connection, head_id: int, topic: str, topic_id: uuid.UUID = UNKNOWN_TOPIC_ID
) -> None:
    await conn.execute(
        """INSERT INTO seal_head_publications (head_id, topic, topic_id) VALUES ($1, $2, $3)
           ON CONFLICT DO NOTHING""",
        head_id,
        topic,
        topic_id,
    )


async def name_incarnation(conn: asyncpg.Connection, topic: str, topic_id: uuid.UUID) -> int:
    """Give the publications recorded without a topic id (before migration 0020) the id of the topic they
    were found on; the number of heads named."""
    done: str = await conn.execute(
        """UPDATE seal_head_publications p SET topic_id = $2
            WHERE topic = $1 AND topic_id = $3
              AND NOT EXISTS (SELECT 1 FROM seal_head_publications q
                               WHERE q.head_id = p.head_id AND q.topic = $1 AND q.topic_id = $2)""",
        topic,
        topic_id,
        UNKNOWN_TOPIC_ID,
    )
    return int(done.split()[-1])


async def forget_leaves(conn: asyncpg.Connection, before: date) -> int:
    """Remove the leaves of seals of days before `before` (every row they speak of is past retention),
    except where a legal hold keeps rows of the room-day (`held_events`): a hold keeps rows and leaves
    together, so that `verify` still names each held row. The seals stay. Returns how many."""
    status = await conn.execute(
        """DELETE FROM seal_leaves l
            WHERE l.day < $1
              AND NOT EXISTS (
                  SELECT 1 FROM seals s JOIN held_events h
                      ON h.room_id = s.room_id
                     AND h.occurred_at >= s.day::timestamp AT TIME ZONE 'UTC'
                     AND h.occurred_at < (s.day + 1)::timestamp AT TIME ZONE 'UTC'
                   WHERE s.seal_id = l.seal_id)""",
        before,
    )
    return int(status.rsplit(" ", 1)[-1])
