"""Operators' detector settings (`detector_settings`, migration 0017) and their audit trail
(`detector_setting_changes`): read by the worker's detectors, written by `roomlogs detectors set/reset`.

A row overrides a detector's built-in parameters (pipeline.detectors.params) for a retention class
(scope 'class') or one room (scope 'room'); `enabled` NULL leaves enabling to the scope below. Every change
appends who made it, when, why, and the row before and after, in the same transaction.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

import asyncpg

__all__ = ["SCOPES", "Override", "changes", "load", "reset", "set_override"]

SCOPES = ("class", "room")


@dataclass(frozen=True, slots=True)
class Override:
    scope: str
    scope_id: str
    detector: str
    enabled: bool | None
    params: Mapping[str, int]
    updated_at: datetime | None = None
    updated_by: str | None = None


async def load(conn: asyncpg.Connection) -> list[Override]:
    """Every override (a few rows: read whole, cached by the worker)."""
    rows = await conn.fetch(
        """SELECT scope, scope_id, detector, enabled, params, updated_at, updated_by FROM detector_settings
            ORDER BY detector, scope, scope_id"""
    )
    return [
        Override(
            r["scope"],
            r["scope_id"],
            r["detector"],
            r["enabled"],
            dict(r["params"]),
            r["updated_at"],
            r["updated_by"],
        )
        for r in rows
    ]


async def set_override(
    conn: asyncpg.Connection,
    scope: str,
    scope_id: str,
    detector: str,
    *,
    enabled: bool | None,
    params: Mapping[str, int],
    changed_by: str,
    reason: str,
) -> Override:
    """Merge `params` into the scope's override (make it when missing); `enabled` None keeps what it was.
    Appends the change. Returns the override now stored."""
    async with conn.transaction():
        before = await conn.fetchrow(
            """SELECT enabled, params FROM detector_settings
                WHERE detector = $1 AND scope = $2 AND scope_id = $3 FOR UPDATE""",
            detector,
            scope,
            scope_id,
        )
        merged = {**(dict(before["params"]) if before else {}), **params}
        now_enabled = enabled if enabled is not None else (before["enabled"] if before else None)
        row = await conn.fetchrow(
            """INSERT INTO detector_settings (scope, scope_id, detector, enabled, params, updated_by)
               VALUES ($1, $2, $3, $4, $5, $6)
               ON CONFLICT (detector, scope, scope_id) DO UPDATE
                  SET enabled = excluded.enabled, params = excluded.params, updated_at = now(),
                      updated_by = excluded.updated_by
               RETURNING updated_at""",
            scope,
            scope_id,
            detector,
            now_enabled,
            merged,
            changed_by,
        )
        await _append(conn, changed_by, reason, "set", scope, scope_id, detector, before, now_enabled, merged)
    assert row is not None
    return Override(scope, scope_id, detector, now_enabled, merged, row["updated_at"], changed_by)


async def reset(
    conn: asyncpg.Connection, scope: str, scope_id: str, detector: str, *, changed_by: str, reason: str
) -> bool:
    """Remove the scope's override (back to the defaults below it); False: there was none."""
    async with conn.transaction():
        before = await conn.fetchrow(
            """DELETE FROM detector_settings WHERE detector = $1 AND scope = $2 AND scope_id = $3
               RETURNING enabled, params""",
            detector,
            scope,
            scope_id,
        )
        if before is None:
            return False
        await _append(conn, changed_by, reason, "reset", scope, scope_id, detector, before, None, None)
    return True


async def changes(conn: asyncpg.Connection, limit: int = 50) -> list[asyncpg.Record]:
    """The latest changes, newest first."""
    return list(
        await conn.fetch("SELECT * FROM detector_setting_changes ORDER BY change_id DESC LIMIT $1", limit)
    )


async def _append(
    conn: asyncpg.Connection,
    changed_by: str,
    reason: str,
    action: str,
    scope: str,
    scope_id: str,
    detector: str,
    before: asyncpg.Record | None,
    enabled_after: bool | None,
    params_after: Mapping[str, int] | None,
) -> None:
    await conn.execute(
        """INSERT INTO detector_setting_changes (changed_by, reason, action, scope, scope_id, detector,
                                                  enabled_before, params_before, enabled_after, params_after)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)""",
        changed_by,
        reason,
        action,
        scope,
        scope_id,
        detector,
        before["enabled"] if before else None,
        dict(before["params"]) if before else None,
        enabled_after,
        dict(params_after) if params_after is not None else None,
    )
