"""What the worker knows about rooms: privacy and size (hence retention class), cached in memory.

The authoritative copy is the `rooms` table, written in each batch's transaction from the room's own
settings events. The cache is bounded; rooms not in it are read from PostgreSQL once per batch in one query.
A room changing class affects events from that change on; rows already stored keep the class (and so the
retention) they were written with, which is documented in README.md.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import asyncpg


@dataclass(slots=True)
class RoomState:
    privacy: str | None
    max_occupancy: int | None
    retention_class: str


class RoomDirectory:
    def __init__(self, *, default_class: str, busy_min_occupancy: int, capacity: int = 200_000) -> None:
        self.default_class = default_class
        self.busy_min_occupancy = busy_min_occupancy
        self.capacity = capacity
        self._rooms: dict[str, RoomState] = {}

    def classify(self, privacy: str | None, max_occupancy: int | None) -> str:
        if privacy == "private":
            return "private"
        if privacy == "public":
            if max_occupancy is not None and max_occupancy >= self.busy_min_occupancy:
                return "busy_public"
            return "public"
        return self.default_class

    def unknown(self, room_ids: Iterable[str]) -> set[str]:
        rooms = self._rooms
        return {r for r in room_ids if r not in rooms}

    async def load(self, conn: asyncpg.Connection, room_ids: set[str]) -> None:
        """Read the rooms this batch needs and the cache lacks; unknown to PostgreSQL too -> default class."""
        if len(self._rooms) + len(room_ids) > self.capacity:
            self._rooms.clear()  # simple and bounded; the next batches re-read what they need
        rows = await conn.fetch(
            """SELECT room_id, privacy, max_occupancy, retention_class
                 FROM rooms WHERE room_id = ANY($1::text[])""",
            list(room_ids),
        )
        for r in rows:
            self._rooms[r["room_id"]] = RoomState(r["privacy"], r["max_occupancy"], r["retention_class"])
        for room_id in room_ids:
            if room_id not in self._rooms:
                self._rooms[room_id] = RoomState(None, None, self.default_class)

    def class_of(self, room_id: str) -> str:
        return self._rooms[room_id].retention_class

    def apply_settings(self, room_id: str, privacy: str | None, max_occupancy: int | None) -> RoomState:
        state = self._rooms[room_id]
        if privacy is not None:
            state.privacy = privacy
        if max_occupancy is not None:
            state.max_occupancy = max_occupancy
        state.retention_class = self.classify(state.privacy, state.max_occupancy)
        return state

    def clear(self) -> None:
        self._rooms.clear()

    def __len__(self) -> int:
        return len(self._rooms)
