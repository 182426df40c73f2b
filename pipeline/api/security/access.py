"""Who may read which room, decided on every request.

Deny by default. A room's logs are readable by its current owner and moderators (the `rooms` /
`room_moderators` tables, kept current by the ingest worker from room.permissions_changed events, read
afresh on every request: a revoked moderator loses access at once), by support staff who state a reason
(a ticket or case id), and by services holding the scope for the action. Deleting a room's logs is for
its owner and staff; erasing a user's chat text is for staff.

Called by the handlers through `Call.authorize_room` (and by a live tail on every poll); a refusal is
raised, and the gate answers and audits it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

import asyncpg

from pipeline.api.errors import Forbidden, InsufficientScope, ReasonRequired
from pipeline.api.queries.rooms import room_roles
from pipeline.api.security.auth import Identity, IdentityKind, Scope

__all__ = ["AccessPolicy", "Action", "Grant"]


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
        is_owner, is_moderator = await room_roles(conn, room_id, identity.subject)
        if is_owner:
            return Grant("owner")
        if is_moderator and action is not Action.DELETE:
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
