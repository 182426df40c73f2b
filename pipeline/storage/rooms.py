"""Room state in PostgreSQL (`rooms`, `room_moderator_grants`, the `room_moderators` view): its one owner.

Room state is derived from the room's own events: privacy and size (hence retention class) from
room.settings_changed, owner and moderators from room.permissions_changed. Kafka re-delivers, producers
resend and replays come late, so the state must be a function of the events' identity and event time, not
of their arrival order. Every piece of state carries the version of the event that set it, and a change is
applied only where its version is newer:

- version = (event time, event id) for privacy, size and owner: last writer wins by event time, ties broken
  by event id, so every order of the same events converges on one state;
- a moderator grant's version is (event time, rank, event id) with rank 1 for a removal and 0 for a grant:
  on equal event times the removal wins (never re-grant on a tie);
- a removed moderator keeps a row (`active = false`) with the removal's version, so an older grant arriving
  later (a replay, a late event) cannot re-grant access.

Who calls it: the ingest writer, inside each batch's transaction (`apply_room_changes`), and the ingest
room cache (`fetch_rooms`). The API reads `rooms` and the `room_moderators` view.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Any

import asyncpg

from pipeline.storage.batch import RoomChange

SettingsVersion = tuple[datetime, str]
Classify = Callable[[str | None, int | None], str]
GrantVersion = tuple[datetime, int, str]

GRANT, REVOKE = 0, 1
_KIND_RANK = {"moderator_added": GRANT, "moderator_removed": REVOKE}


def grant_version(change: RoomChange) -> GrantVersion:
    return change.occurred_at, _KIND_RANK[change.kind], change.event_id


def settings_version(change: RoomChange) -> SettingsVersion:
    return change.occurred_at, change.event_id


async def fetch_rooms(conn: asyncpg.Connection, room_ids: Iterable[str]) -> list[asyncpg.Record]:
    return list(
        await conn.fetch(
            """SELECT room_id, privacy, max_occupancy, retention_class,
                      privacy_version_at, privacy_version_id::text AS privacy_version_id,
                      occupancy_version_at, occupancy_version_id::text AS occupancy_version_id
                 FROM rooms WHERE room_id = ANY($1::text[])""",
            list(room_ids),
        )
    )


def fold(
    changes: Sequence[RoomChange],
) -> tuple[
    dict[str, RoomChange], dict[str, RoomChange], dict[str, RoomChange], dict[tuple[str, str], RoomChange]
]:
    """The newest change per piece of state in one batch: (privacy, size, owner, moderator grants)."""
    privacy: dict[str, RoomChange] = {}
    size: dict[str, RoomChange] = {}
    owners: dict[str, RoomChange] = {}
    grants: dict[tuple[str, str], RoomChange] = {}
    for ch in changes:
        if ch.kind == "settings":
            if ch.privacy is not None:
                _keep_newest(privacy, ch.room_id, ch, settings_version)
            if ch.max_occupancy is not None:
                _keep_newest(size, ch.room_id, ch, settings_version)
        elif ch.kind == "owner_transferred" and ch.user_id is not None:
            _keep_newest(owners, ch.room_id, ch, settings_version)
        elif ch.kind in _KIND_RANK and ch.user_id is not None:
            _keep_newest(grants, (ch.room_id, ch.user_id), ch, grant_version)
    return privacy, size, owners, grants


def _keep_newest(into: dict[Any, RoomChange], key: Any, ch: RoomChange, version: Callable[..., Any]) -> None:
    held = into.get(key)
    if held is None or version(ch) > version(held):
        into[key] = ch


async def apply_room_changes(
    conn: asyncpg.Connection,
    changes: Sequence[RoomChange],
    classify: Classify,
) -> None:
    """Fold a batch's room changes into PostgreSQL, each only where it is newer than what is stored.

    A handful of round trips per batch whatever the number of changes (arrays, not one statement each).
    `classify(privacy, max_occupancy)` is the retention-class rule (`ClassRule`).
    """
    if not changes:
        return
    first: dict[str, RoomChange] = {}
    for ch in changes:
        first.setdefault(ch.room_id, ch)
    await conn.execute(
        """INSERT INTO rooms (room_id, retention_class, updated_at)
           SELECT * FROM unnest($1::text[], $2::text[], $3::timestamptz[])
           ON CONFLICT (room_id) DO NOTHING""",
        list(first),
        [c.retention_class for c in first.values()],
        [c.occurred_at for c in first.values()],
    )
    privacy, size, owners, grants = fold(changes)
    if privacy or size:
        await _apply_settings(conn, privacy, size, classify)
    if owners:
        await conn.execute(
            """UPDATE rooms r
                  SET owner_id = c.owner_id, owner_version_at = c.at, owner_version_id = c.id,
                      updated_at = greatest(r.updated_at, c.at)
                 FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::uuid[])
                      AS c(room_id, owner_id, at, id)
                WHERE r.room_id = c.room_id
                  AND (c.at, c.id) > (coalesce(r.owner_version_at, '-infinity'), r.owner_version_id)""",
            list(owners),
            [c.user_id for c in owners.values()],
            [c.occurred_at for c in owners.values()],
            [c.event_id for c in owners.values()],
        )
    if grants:
        values = list(grants.values())
        await conn.execute(
            """INSERT INTO room_moderator_grants AS g
                      (room_id, user_id, since, active, version_at, version_rank, version_id)
               SELECT room_id, user_id, at, rank = 0, at, rank, id
                 FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::smallint[], $5::uuid[])
                      AS c(room_id, user_id, at, rank, id)
               ON CONFLICT (room_id, user_id) DO UPDATE
                  SET since = EXCLUDED.since, active = EXCLUDED.active, version_at = EXCLUDED.version_at,
                      version_rank = EXCLUDED.version_rank, version_id = EXCLUDED.version_id
                WHERE (EXCLUDED.version_at, EXCLUDED.version_rank, EXCLUDED.version_id)
                    > (g.version_at, g.version_rank, g.version_id)""",
            [c.room_id for c in values],
            [c.user_id for c in values],
            [c.occurred_at for c in values],
            [_KIND_RANK[c.kind] for c in values],
            [c.event_id for c in values],
        )


async def _apply_settings(
    conn: asyncpg.Connection,
    privacy: dict[str, RoomChange],
    size: dict[str, RoomChange],
    classify: Classify,
) -> None:
    touched: set[str] = set()
    for column, changes, value in (
        ("privacy", privacy, "text"),
        ("occupancy", size, "integer"),
    ):
        if not changes:
            continue
        target = "privacy" if column == "privacy" else "max_occupancy"
        rows = await conn.fetch(
            f"""UPDATE rooms r
                   SET {target} = c.value, {column}_version_at = c.at, {column}_version_id = c.id,
                       updated_at = greatest(r.updated_at, c.at)
                  FROM unnest($1::text[], $2::{value}[], $3::timestamptz[], $4::uuid[])
                       AS c(room_id, value, at, id)
                 WHERE r.room_id = c.room_id
                   AND (c.at, c.id) > (coalesce(r.{column}_version_at, '-infinity'), r.{column}_version_id)
             RETURNING r.room_id""",
            list(changes),
            [c.privacy if column == "privacy" else c.max_occupancy for c in changes.values()],
            [c.occurred_at for c in changes.values()],
            [c.event_id for c in changes.values()],
        )
        touched.update(r["room_id"] for r in rows)
    if not touched:
        return
    rows = await conn.fetch(
        "SELECT room_id, privacy, max_occupancy, retention_class FROM rooms WHERE room_id = ANY($1::text[])",
        list(touched),
    )
    moved = [
        (r["room_id"], cls)
        for r in rows
        if (cls := classify(r["privacy"], r["max_occupancy"])) != r["retention_class"]
    ]
    if moved:
        await conn.execute(
            """UPDATE rooms r SET retention_class = c.cls
                 FROM unnest($1::text[], $2::text[]) AS c(room_id, cls) WHERE r.room_id = c.room_id""",
            [m[0] for m in moved],
            [m[1] for m in moved],
        )
