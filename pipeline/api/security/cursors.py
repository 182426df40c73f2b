"""Pagination cursors that cannot be moved: signed (HMAC-SHA256), bound, and short-lived.

A cursor is bound to the route, the room or user, every filter, the order and the caller (`binding`): a
cursor minted for room A does not open room B, and it expires. It carries the query's time range, so a
page of "until now" stays put. Minted and read by the paginated handlers; a cursor that fails any check is
InvalidCursor (400, audited as a denied access).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from pipeline.api.errors import InvalidCursor
from pipeline.api.queries.events import Position

__all__ = ["CursorCodec", "binding"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def binding(*parts: Any) -> str:
    """A digest of everything a cursor must not be replayed across (route, room/user, filters, caller)."""
    return hashlib.sha256(orjson.dumps(parts, option=orjson.OPT_SORT_KEYS)).hexdigest()[:32]


class CursorCodec:
    def __init__(self, key: bytes, ttl_seconds: int, clock: Callable[[], float] = time.time) -> None:
        self._key = key
        self._ttl = ttl_seconds
        self._clock = clock

    def encode(self, bound_to: str, position: Position, rng: tuple[datetime, datetime]) -> str:
        """A cursor for the page after `position`, carrying the query's range (so "until now" stays put)."""
        moment, event_id = position
        payload = orjson.dumps(
            {
                "v": 1,
                "b": bound_to,
                "t": _micros(moment),
                "i": str(event_id),
                "r": [_micros(rng[0]), _micros(rng[1])],
                "x": int(self._clock()) + self._ttl,
            }
        )
        return f"{_b64(payload)}.{_b64(self._sign(payload))}"

    def decode(self, token: str, bound_to: str) -> tuple[Position, tuple[datetime, datetime]]:
        """(position, time range) of a cursor this API issued for the same query; InvalidCursor otherwise."""
        body, _, signature = token.partition(".")
        try:
            payload = _unb64(body)
            given = _unb64(signature)
        except ValueError:
            raise InvalidCursor("the cursor is malformed") from None
        if not hmac.compare_digest(given, self._sign(payload)):
            raise InvalidCursor("the cursor was not issued by this API")
        try:
            doc = orjson.loads(payload)
            if doc["v"] != 1:
                raise InvalidCursor("the cursor version is not supported")
            bound, event_id, expires = doc["b"], uuid.UUID(doc["i"]), int(doc["x"])
            moment = _from_micros(doc["t"])
            rng = (_from_micros(doc["r"][0]), _from_micros(doc["r"][1]))
        except (orjson.JSONDecodeError, KeyError, IndexError, TypeError, ValueError, OverflowError):
            raise InvalidCursor("the cursor is malformed") from None
        if not hmac.compare_digest(str(bound), bound_to):
            raise InvalidCursor("the cursor belongs to another query (room, user, filters or caller)")
        if expires < self._clock():
            raise InvalidCursor("the cursor has expired; start again from the first page")
        return (moment, event_id), rng

    def _sign(self, payload: bytes) -> bytes:
        return hmac.new(self._key, payload, hashlib.sha256).digest()


def _micros(moment: datetime) -> int:
    return (moment - _EPOCH) // timedelta(microseconds=1)


def _from_micros(value: object) -> datetime:
    if type(value) is not int:
        raise TypeError("not an integer")
    return _EPOCH + timedelta(microseconds=value)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    if not text or len(text) > 1024:
        raise ValueError("bad length")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (ValueError, TypeError) as e:
        raise ValueError(str(e)) from e
