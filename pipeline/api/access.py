"""Who may read which room, decided on every request, and pagination cursors that cannot be moved.

Deny by default. A room's logs are readable by its current owner and moderators (the `rooms` /
`room_moderators` tables, kept current by the ingest worker from room.permissions_changed events, read
afresh on every request: a revoked moderator loses access at once), by support staff who state a reason
(a ticket or case id), and by services holding the scope for the action. Deleting a room's logs is for
its owner and staff; erasing a user's chat text is for staff.

Cursors are signed (HMAC-SHA256) and bound to the route, the room or user, every filter, the order and the
caller: a cursor minted for room A does not open room B, and it expires.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

import asyncpg
import orjson

from pipeline.api.auth import Identity, IdentityKind, Scope
from pipeline.api.errors import Forbidden, InsufficientScope, InvalidCursor, ReasonRequired


class Action(StrEnum):
    READ = "read"
    EXPORT = "export"
    TAIL = "tail"
    DELETE = "delete"


_SERVICE_SCOPE = {
    Action.READ: Scope.ROOMS_READ,
    Action.EXPORT: Scope.ROOMS_EXPORT,
    Action.TAIL: Scope.ROOMS_TAIL,
}

_ROOM_ROLES_SQL = """
SELECT coalesce((SELECT owner_id = $2 FROM rooms WHERE room_id = $1), false) AS is_owner,
       EXISTS (SELECT 1 FROM room_moderators WHERE room_id = $1 AND user_id = $2) AS is_moderator
"""

#: Rooms a user may read through their own roles (for queries across rooms).
ROOMS_OF_USER_SQL = (
    "SELECT room_id FROM rooms WHERE owner_id = {p} "
    "UNION SELECT room_id FROM room_moderators WHERE user_id = {p}"
)


@dataclass(frozen=True, slots=True)
class Grant:
    """Why a request was allowed: recorded with the read in the access audit."""

    #: owner | moderator | room_roles (rooms the user owns or moderates) | staff | service
    basis: str
    staff_reason: str | None = None

    @property
    def all_rooms(self) -> bool:
        return self.basis in ("staff", "service")


class AccessPolicy:
    def __init__(self, staff_reason_pattern: str) -> None:
        self._reason = re.compile(staff_reason_pattern)

    def staff_reason(self, identity: Identity, stated: str | None) -> str:
        if identity.kind is not IdentityKind.STAFF:
            raise Forbidden("only support staff may do this")
        if not stated:
            raise ReasonRequired("support staff must state a reason: X-Access-Reason: <ticket or case id>")
        if not self._reason.match(stated):
            raise ReasonRequired(
                "X-Access-Reason must be a ticket or case id", details={"pattern": self._reason.pattern}
            )
        return stated

    async def room(
        self, conn: asyncpg.Connection, identity: Identity, room_id: str, action: Action, stated: str | None
    ) -> Grant:
        """The grant for `action` on `room_id`, or Forbidden / ReasonRequired / InsufficientScope."""
        if identity.kind is IdentityKind.SERVICE:
            needed = _SERVICE_SCOPE.get(action)
            if needed is None:
                raise Forbidden("services may not delete room logs")
            if needed not in identity.scopes:
                raise InsufficientScope(
                    f"this needs the {needed.value} scope", details={"scope": needed.value}
                )
            return Grant("service")
        roles = await conn.fetchrow(_ROOM_ROLES_SQL, room_id, identity.subject)
        assert roles is not None
        if roles["is_owner"]:
            return Grant("owner")
        if roles["is_moderator"] and action is not Action.DELETE:
            return Grant("moderator")
        if identity.kind is IdentityKind.STAFF:
            return Grant("staff", self.staff_reason(identity, stated))
        if action is Action.DELETE:
            raise Forbidden("only the room's owner or support staff may delete its logs")
        raise Forbidden("only the room's owner and moderators may read its logs")

    def across_rooms(self, identity: Identity, stated: str | None) -> Grant:
        """Grant for reads across rooms (a user's moderation history)."""
        if identity.kind is IdentityKind.SERVICE:
            if Scope.MODERATION_READ not in identity.scopes:
                raise InsufficientScope(
                    "this needs the moderation:read scope", details={"scope": "moderation:read"}
                )
            return Grant("service")
        if identity.kind is IdentityKind.STAFF and stated:
            return Grant("staff", self.staff_reason(identity, stated))
        return Grant("room_roles")


# --- cursors ------------------------------------------------------------------------------------------------
Position = tuple[datetime, uuid.UUID]
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
