"""Deliberately bad events, each labelled with the Reason the ingest worker must give it.

What a careless or broken room server might send: broken JSON, a JSON value that is not an object, wrong
types, unknown event types, missing fields, oversize events, timestamps in the future or unreadable,
unsupported schema versions, invalid values, and whispers or direct messages (never stored).
They are drawn from the world's random generator and clock, between its valid events.
"""

from __future__ import annotations

import time
from bisect import bisect_right
from collections.abc import Callable
from itertools import accumulate
from typing import Any

import orjson

from pipeline.events.contract import EventType
from pipeline.events.reasons import Reason
from pipeline.publisher.events import envelope
from pipeline.publisher.world import TEXT_POOL_SIZE, World

#: Bad events by the reason they must get, and how often (relative weights).
_BAD_WEIGHTS = {
    Reason.INVALID_JSON: 10,
    Reason.NOT_AN_OBJECT: 3,
    Reason.WRONG_TYPE: 14,
    Reason.UNKNOWN_TYPE: 8,
    Reason.MISSING_FIELD: 14,
    Reason.OVERSIZE: 2,
    Reason.TIMESTAMP_IN_FUTURE: 8,
    Reason.PRIVATE_MESSAGE: 12,
    Reason.UNSUPPORTED_VERSION: 4,
    Reason.INVALID_TIMESTAMP: 8,
    Reason.INVALID_VALUE: 12,
}
_BAD_KINDS = tuple(_BAD_WEIGHTS)
_BAD_CUMULATIVE = tuple(accumulate(_BAD_WEIGHTS.values()))
_CHAT, _LEFT = EventType.CHAT_MESSAGE.value, EventType.USER_LEFT.value
_GIFT = EventType.GIFT_SENT.value


class BadEvents:
    """Bad events for random rooms of `world`; `draw()` gives the next one."""

    def __init__(self, world: World, max_event_bytes: int) -> None:
        self._world = world
        self._rng = world.rng
        #: The worker's limit (Settings.max_event_bytes): oversize events are just above it.
        self._max_event_bytes = max_event_bytes
        self._oversize: bytes | None = None
        self._makers: dict[Reason, Callable[[dict[str, Any], float], bytes | dict[str, Any]]] = {
            Reason.INVALID_JSON: self._invalid_json,
            Reason.NOT_AN_OBJECT: self._not_an_object,
            Reason.WRONG_TYPE: self._wrong_type,
            Reason.UNKNOWN_TYPE: self._unknown_type,
            Reason.MISSING_FIELD: self._missing_field,
            Reason.TIMESTAMP_IN_FUTURE: self._timestamp_in_future,
            Reason.PRIVATE_MESSAGE: self._private_message,
            Reason.UNSUPPORTED_VERSION: self._unsupported_version,
            Reason.INVALID_TIMESTAMP: self._invalid_timestamp,
            Reason.INVALID_VALUE: self._invalid_value,
        }

    def draw(self) -> tuple[bytes, bytes, Reason]:
        """(key, value, Reason): a deliberately broken event for a random room, on the world's clock."""
        world, rng = self._world, self._rng
        room = world.rooms[rng.randrange(len(world.rooms))]
        event_id, occurred_at, t = world.stamp()
        actor = world.random_user()
        doc = envelope(_CHAT, room.room_id, actor, {"text": world.texts[rng.randrange(TEXT_POOL_SIZE)]},
                       event_id=event_id, occurred_at=occurred_at)  # fmt: skip
        kind = _BAD_KINDS[bisect_right(_BAD_CUMULATIVE, rng.random() * _BAD_CUMULATIVE[-1])]
        if kind is Reason.OVERSIZE:
            return room.key, self._oversize_event(doc), kind
        value = self._makers[kind](doc, t)
        return room.key, value if type(value) is bytes else orjson.dumps(value), kind

    def _oversize_event(self, doc: dict[str, Any]) -> bytes:
        # One shared blob per run: the worker reads no further than its length, and a benchmark that
        # keeps every generated event in memory pays for it once.
        if self._oversize is None:
            doc["data"] = {"text": "x" * self._max_event_bytes}
            self._oversize = orjson.dumps(doc)
        return self._oversize

    def _invalid_json(self, doc: dict[str, Any], t: float) -> bytes:
        raw = orjson.dumps(doc)
        variant = self._rng.randrange(4)
        if variant == 0:
            return raw[: len(raw) // 2]  # cut off mid-event
        if variant == 1:
            return b"\xff\xfe" + raw  # not UTF-8
        if variant == 2:
            return raw.replace(b'"', b"'")  # single quotes
        return raw[:-1] + b",}"  # trailing comma

    def _not_an_object(self, doc: dict[str, Any], t: float) -> bytes:
        return self._rng.choice((b"[" + orjson.dumps(doc) + b"]", b'"chat.message"', b"null", b"42"))

    def _wrong_type(self, doc: dict[str, Any], t: float) -> dict[str, Any]:
        variant = self._rng.randrange(5)
        if variant == 0:
            doc["data"] = {"text": 12345}
        elif variant == 1:
            doc["actor"] = doc["actor"]["user_id"]  # a bare id instead of a user object
        elif variant == 2:
            doc["occurred_at"] = int(t)  # epoch seconds instead of RFC 3339
        elif variant == 3:
            doc["room_id"] = 4242
        else:
            doc["data"] = [doc["data"]["text"]]
        return doc

    def _unknown_type(self, doc: dict[str, Any], t: float) -> dict[str, Any]:
        doc["type"] = self._rng.choice(
            ("chat.reaction", "room.teleport", "user.afk", "emote.played", "CHAT.MESSAGE")
        )
        return doc

    def _missing_field(self, doc: dict[str, Any], t: float) -> dict[str, Any]:
        name = self._rng.choice(
            ("type", "schema_version", "event_id", "room_id", "occurred_at", "actor", "text")
        )
        if name == "text":
            doc["data"] = {}
        else:
            del doc[name]
        return doc

    def _timestamp_in_future(self, doc: dict[str, Any], t: float) -> dict[str, Any]:
        ahead = t + self._rng.choice((3600, 6 * 3600, 86400, 30 * 86400))
        doc["occurred_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ahead))
        return doc

    def _private_message(self, doc: dict[str, Any], t: float) -> dict[str, Any]:
        recipient = self._world.random_user()
        variant = self._rng.randrange(4)
        if variant == 0:
            doc["type"] = "chat.whisper"
            doc["data"]["recipient"] = recipient
        elif variant == 1:
            doc["type"] = "chat.direct_message"
            doc["data"]["to"] = recipient["user_id"]
        else:  # a whisper disguised as a chat message
            doc["data"]["recipient" if variant == 2 else "whisper_to"] = recipient
        return doc

    def _unsupported_version(self, doc: dict[str, Any], t: float) -> dict[str, Any]:
        doc["schema_version"] = self._rng.choice((2, 0, "1"))
        return doc

    def _invalid_timestamp(self, doc: dict[str, Any], t: float) -> dict[str, Any]:
        stamp = doc["occurred_at"]
        doc["occurred_at"] = self._rng.choice(
            ("yesterday", "2024-13-45T25:00:00Z", stamp[:-1], "1999-12-31T23:59:59Z")
        )
        return doc

    def _invalid_value(self, doc: dict[str, Any], t: float) -> dict[str, Any]:
        rng = self._rng
        variant = rng.randrange(6)
        if variant == 0:
            doc["data"] = {"text": ""}
        elif variant == 1:
            doc["event_id"] = "not-a-uuid"
        elif variant == 2:
            doc["room_id"] = ""
        elif variant == 3:
            doc["type"], doc["data"] = _LEFT, {"how": "teleported"}
        elif variant == 4:
            doc["type"] = _GIFT
            doc["data"] = {"recipient": self._world.random_user(), "item": {"item_id": "rose"}, "credits": -5}
        else:
            doc["type"] = EventType.MOD_BAN.value
            doc["data"] = {"target": self._world.random_user(), "reason": "spam", "duration_seconds": 0}
        return doc
