"""A user's moderation history across rooms: ``GET /v1/users/{user_id}/moderation``'s SQL.

Called after authorization; `restrict_to_rooms_of` confines a caller without a grant for every room to
the rooms they own or moderate.
"""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from pipeline.api.params import MODERATION_TYPE_VALUES, TimeRange
from pipeline.api.queries.events import Position, Sql, ordered_select, within
from pipeline.api.queries.rooms import ROOMS_OF_USER_SQL

__all__ = ["moderation_history"]


async def moderation_history(
    conn: asyncpg.Connection,
    user_id: str,
    role: str,
    rng: TimeRange,
    types: Sequence[str],
    restrict_to_rooms_of: str | None,
    order: str,
    after: Position | None,
    limit: int,
) -> list[asyncpg.Record]:
    """Moderation events about (`role` target), by (actor) or either (any) the user, `limit` + 1 at most.

    `restrict_to_rooms_of`: only rooms this user owns or moderates (None: every room).
    """
    q = Sql()
    u = q.param(user_id)
    q.where.append(
        {"target": f"target_id = {u}", "actor": f"actor_id = {u}"}.get(
            role, f"(target_id = {u} OR actor_id = {u})"
        )
    )
    q.where.append(f"event_type = ANY({q.param(list(types or MODERATION_TYPE_VALUES))}::text[])")
    # repeats the predicate of the partial index events_moderator_time (actor_id, occurred_at), so the
    # planner can use it for role=actor
    q.where.append("event_type LIKE 'moderation.%'")
    within(q, rng, order, after)
    if restrict_to_rooms_of is not None:
        q.where.append(f"room_id IN ({ROOMS_OF_USER_SQL.format(p=q.param(restrict_to_rooms_of))})")
    return list(await conn.fetch(ordered_select(q, order, limit + 1), *q.args))
