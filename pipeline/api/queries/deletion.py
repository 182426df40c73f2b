"""Deletion's SQL: the SECURITY DEFINER functions that delete (migrations 0003, 0010), never a DELETE.

Called by ``POST /v1/rooms/{room_id}/deletions`` and ``POST /v1/users/{user_id}/erasures`` inside the
transaction that also writes the access-audit row. The functions verify the caller's proof of identity
themselves and raise: InsufficientPrivilegeError (the caller may not), ObjectInUseError (a legal hold),
InvalidAuthorizationSpecificationError / ObjectNotInPrerequisiteStateError (the proof, or no key).
"""

from __future__ import annotations

import uuid

import asyncpg

__all__ = ["Proof", "delete_room_logs", "erase_user_chat", "long_statement"]

#: (kind, value): ("bearer", the token as sent) or ("session", the session cookie's value)
Proof = tuple[str, str]


async def long_statement(conn: asyncpg.Connection, seconds: float) -> None:
    """This transaction's statements may run `seconds` (a deletion spans many partitions)."""
    await conn.execute(f"SET LOCAL statement_timeout = {int(seconds * 1000)}")


async def delete_room_logs(
    conn: asyncpg.Connection,
    request_id: uuid.UUID,
    room_id: str,
    proof: Proof,
    basis: str,
    reason: str | None,
) -> int:
    """Delete the room's logs; the rows deleted."""
    deleted: int = await conn.fetchval(
        "SELECT api_delete_room_logs($1, $2, $3, $4, $5, $6)", request_id, room_id, *proof, basis, reason
    )
    return deleted


async def erase_user_chat(
    conn: asyncpg.Connection, request_id: uuid.UUID, user_id: str, proof: Proof, ticket: str
) -> int:
    """Erase the user's chat text in every room; the rows deleted."""
    deleted: int = await conn.fetchval(
        "SELECT api_erase_user_chat($1, $2, $3, $4, $5)", request_id, user_id, *proof, ticket
    )
    return deleted
