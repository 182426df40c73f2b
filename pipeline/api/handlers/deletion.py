"""Deletion, only through authorized and recorded requests. Logs are never edited.

- A room's owner, or support staff with a ticket, deletes a room's logs:
  ``POST /v1/rooms/{room_id}/deletions``.
- Support staff with a ticket erase one user's chat text (an erasure request): that user's chat.message
  rows are deleted in every room: ``POST /v1/users/{user_id}/erasures``.

The API's role cannot DELETE from `events`. It calls `api_delete_room_logs` / `api_erase_user_chat`
(migrations 0003, 0010), SECURITY DEFINER functions that check the grant themselves: the API passes the
caller's proof of identity (the bearer token as sent, or the console session cookie's value), which the
function verifies with the identity provider's key only the schema's owner can read, then decides from
the room's current owner or the staff role. They delete under the `roomlogs.authorized_deletion` setting
the events trigger requires and write the `deletion_requests` ledger row; the access-audit row is
written in the same transaction, so a deletion is recorded twice or not done at all. Both are keyed by
the server's request id (a client's X-Request-Id is only a label, so a retried or reused one can neither
collide with another request nor name it). Refusals (403, a legal hold's 409, a bad body's 400) are
raised and audited by the gate.
"""

from __future__ import annotations

from typing import Any

import asyncpg
from starlette.responses import Response

from pipeline.api.context import Call, JSONResponse
from pipeline.api.errors import Forbidden, InvalidBody, LegalHold
from pipeline.api.params import storable
from pipeline.api.queries import deletion as deletion_rows
from pipeline.api.security.access import Action, Grant
from pipeline.api.security.sessions import database_checks_proof, identity_proof

__all__ = ["NOTE_MAX_CHARS", "delete_room_logs", "erase_user_chat"]

_MAX_BODY_BYTES = 4096
NOTE_MAX_CHARS = 500


async def delete_room_logs(call: Call) -> Response:
    """POST /v1/rooms/{room_id}/deletions"""
    room_id = call.path("room_id")
    call.params.done()
    note = await _note(call)
    asked = {"note": note} if note else {}
    async with call.connection() as conn:
        grant = await call.authorize_room(conn, room_id, Action.DELETE, asked)
        reason = grant.staff_reason if grant.basis == "staff" else (note or "owner request")
        proof = identity_proof(call.state, call.request)
        with database_checks_proof():
            try:
                async with conn.transaction():
                    await deletion_rows.long_statement(conn, call.settings.long_statement_timeout_seconds)
                    deleted = await deletion_rows.delete_room_logs(
                        conn, call.request_id, room_id, proof, grant.basis, reason
                    )
                    await call.audit(
                        conn, call.entry(http_status=201, grant=grant, filters=asked, row_count=deleted)
                    )
            # caught inside database_checks_proof: ObjectInUseError is an ObjectNotInPrerequisiteStateError
            except asyncpg.ObjectInUseError:  # raised by api_delete_room_logs for a room under legal hold
                raise LegalHold(f"room {room_id!r} is under legal hold; its logs cannot be deleted") from None
            except asyncpg.InsufficientPrivilegeError:  # the owner changed since authorize_room looked
                raise Forbidden("only the room's owner or support staff may delete its logs") from None
    return _deleted(call, "room_logs", {"room_id": room_id}, grant.basis, reason, deleted)


async def erase_user_chat(call: Call) -> Response:
    """POST /v1/users/{user_id}/erasures"""
    user_id = call.path("user_id")
    call.params.done()
    note = await _note(call)
    asked = {"note": note} if note else {}
    call.asking(asked)
    ticket = call.state.policy.staff_reason(call.identity, call.stated_reason)
    grant = call.granted(Grant("staff", ticket))
    proof = identity_proof(call.state, call.request)
    with database_checks_proof():
        try:
            async with call.connection() as conn, conn.transaction():
                await deletion_rows.long_statement(conn, call.settings.long_statement_timeout_seconds)
                deleted = await deletion_rows.erase_user_chat(conn, call.request_id, user_id, proof, ticket)
                await call.audit(
                    conn, call.entry(http_status=201, grant=grant, filters=asked, row_count=deleted)
                )
        except asyncpg.InsufficientPrivilegeError:  # the database's own check of the caller refused
            raise Forbidden("only support staff with a ticket may erase a user's chat") from None
    return _deleted(call, "user_chat_erasure", {"user_id": user_id}, "staff", ticket, deleted)


def _deleted(
    call: Call, kind: str, subject: dict[str, str], basis: str, reason: str | None, rows: int
) -> Response:
    """201: what was deleted, on whose authority, why (the OpenAPI `Deletion`)."""
    return JSONResponse(
        {"request_id": call.request_id, "kind": kind, **subject, "basis": basis, "reason": reason,
         "rows_deleted": rows},
        status_code=201,
    )  # fmt: skip


async def _note(call: Call) -> str | None:
    """The optional JSON body ``{"note": "..."}``: the requester's own words, kept with the request."""
    body: Any = await call.json_body(_MAX_BODY_BYTES)
    if body is None:
        return None
    if not isinstance(body, dict) or set(body) - {"note"}:
        raise InvalidBody('the body must be a JSON object with at most a "note"')
    note = body.get("note")
    if note is None:
        return None
    if not isinstance(note, str) or not 0 < len(note) <= NOTE_MAX_CHARS or not storable(note):
        raise InvalidBody(f"note must be 1..{NOTE_MAX_CHARS} characters, without NUL")
    return note
