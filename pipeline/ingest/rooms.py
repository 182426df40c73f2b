"""What the worker knows about rooms: privacy and size (hence retention class), cached in memory.

The authoritative copy is the `rooms` table (pipeline/storage/rooms.py), written in each batch's
transaction from the room's own settings events, each field only by an event newer (event time, then event
id) than the one that set it. The cache follows the same rule, so a replayed or late settings event cannot
move a room back to an older class. The rooms of each batch are read again from PostgreSQL in one query
before it is classified (after the previous batch committed): a producer that does not key by room spreads
a room over partitions, so another worker may have moved its state since. The cache carries the batch's own
changes, in event order, and is bounded.

A room's class applies to the events written while it holds: rows already stored keep the class (and so the
retention) they were written with, which is documented in README.md.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from pipeline.retention_rules import ClassRule
from pipeline.storage.rooms import fetch_rooms

Version = tuple[datetime, str]


@dataclass(slots=True)
class RoomState:
    privacy: str | None
    max_occupancy: int | None
    retention_class: str
    privacy_version: Version | None = None
    occupancy_version: Version | None = None


class RoomDirectory:
    def __init__(self, *, default_class: str, busy_min_occupancy: int, capacity: int = 200_000) -> None:
        self.default_class = default_class
        self.classify = ClassRule(default_class, busy_min_occupancy)
        self.capacity = capacity
        self._rooms: dict[str, RoomState] = {}

    def unknown(self, room_ids: Iterable[str]) -> set[str]:
        rooms = self._rooms
        return {r for r in room_ids if r not in rooms}

    async def load(self, conn: asyncpg.Connection, room_ids: set[str]) -> None:
        """(Re-)read the rooms this batch needs; unknown to PostgreSQL too -> default class."""
        if len(self._rooms) + len(self.unknown(room_ids)) > self.capacity:
            self._rooms.clear()  # simple and bounded; the next batches re-read what they need
        for r in await fetch_rooms(conn, room_ids):
            self._rooms[r["room_id"]] = RoomState(
                r["privacy"],
                r["max_occupancy"],
                r["retention_class"],
                _version(r["privacy_version_at"], r["privacy_version_id"]),
                _version(r["occupancy_version_at"], r["occupancy_version_id"]),
            )
        for room_id in room_ids:
            if room_id not in self._rooms:
                self._rooms[room_id] = RoomState(None, None, self.default_class)

    def class_of(self, room_id: str) -> str:
        return self._rooms[room_id].retention_class

    def apply_settings(
        self, room_id: str, privacy: str | None, max_occupancy: int | None, version: Version
    ) -> RoomState:
        """Apply a settings event to the cached room, field by field, where it is the newest seen."""
        state = self._rooms[room_id]
        if privacy is not None and (state.privacy_version is None or version > state.privacy_version):
            state.privacy, state.privacy_version = privacy, version
        if max_occupancy is not None and (
            state.occupancy_version is None or version > state.occupancy_version
        ):
            state.max_occupancy, state.occupancy_version = max_occupancy, version
        state.retention_class = self.classify(state.privacy, state.max_occupancy)
        return state

    def forget(self, room_ids: Iterable[str]) -> None:
        """Drop rooms whose cached state may differ from PostgreSQL's (re-read on next use)."""
        for room_id in room_ids:
            self._rooms.pop(room_id, None)

    def clear(self) -> None:
        self._rooms.clear()

    def __len__(self) -> int:
        return len(self._rooms)


def _version(at: datetime | None, event_id: str) -> Version | None:
    return None if at is None else (at, event_id)
