"""Evidence of a room's logs: the public keys seals are signed with, and evidence bundles.

- ``GET /v1/seal-keys`` (public: a third party checking a bundle needs the keys, and they are no log):
  every key a seal was ever signed with, as PEM; cacheable, not audited.
- ``GET /v1/rooms/{room_id}/evidence?day=D[&event_id=...]``: one sealed room-day as an evidence bundle
  (pipeline/evidence/bundle.py, FORMAT) that `roomlogs verify FILE --key PEM` checks offline: the whole
  day, or the asked events each with its inclusion proof. Access, rate cost and audit as an export (its
  events are the export's fields); built in memory from one read-only snapshot, then audited (one `ok`
  row with the events it holds) before it is answered.

The answers for a day that cannot be proven (see `handlers.proofs`): no seal yet, 404 `not_sealed` with
when the day closes; the rows no longer give the sealed tree head (retention, an audited deletion, a
change) and the seal's leaves are no longer kept, 409 `not_provable`; leaves kept, the events still
stored and unchanged with their proofs, and the rest listed under `omitted` (409 when none is left).
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
import uuid
from collections.abc import Mapping, Sequence
from datetime import date, datetime, timedelta
from typing import Any

import asyncpg
from starlette.responses import Response

from pipeline.api.context import Call, dumps
from pipeline.api.errors import ExportTooLarge, InvalidParameter, NotFound, NotProvable, NotSealed
from pipeline.api.handlers import proofs
from pipeline.api.handlers.proofs import Omitted, SealedLeaves
from pipeline.api.queries import evidence as q
from pipeline.api.queries.export import limit_stream_time
from pipeline.api.security.access import Action
from pipeline.evidence.bundle import FORMAT, day_bundle
from pipeline.evidence.keys import public_key_pem
from pipeline.retention_rules import is_expired
from pipeline.storage.partitions import day_start
from pipeline.storage.seals import StoredSeal

__all__ = ["MAX_EVENT_IDS", "closes_at", "room_evidence", "seal_keys"]

#: Most events one request may name (`event_id` repeated): a page of the console, and a URL that fits.
MAX_EVENT_IDS = 200
#: How long a copy of the public keys may be used without asking again (keys are only ever added).
KEYS_MAX_AGE_SECONDS = 300
_FILE_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def closes_at(day: date, late_window_seconds: float) -> datetime:
    """When a UTC day closes: the late window after it ends (then it is sealed at the next run)."""
    return day_start(day) + timedelta(days=1, seconds=late_window_seconds)


async def seal_keys(call: Call) -> Response:
    """GET /v1/seal-keys"""
    call.params.done()
    async with call.connection() as conn:
        rows = await q.seal_keys(conn)
    body = dumps(
        {
            "keys": [
                {
                    "key_id": r["key_id"],
                    "algorithm": r["algorithm"],
                    "public_key_pem": public_key_pem(r["public_key"]),
                    "added_at": r["added_at"],
                }
                for r in rows
            ]
        }
    )
    etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
    headers = {"Cache-Control": f"public, max-age={KEYS_MAX_AGE_SECONDS}", "ETag": etag}
    if call.request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    return Response(body, media_type="application/json", headers=headers)


async def room_evidence(call: Call) -> Response:
    """GET /v1/rooms/{room_id}/evidence"""
    room_id = call.path("room_id")
    p = call.params
    day = p.date("day")
    event_ids = p.uuids("event_id", max_count=MAX_EVENT_IDS)
    p.done()
    if day is None:
        raise InvalidParameter("day is required: a UTC date such as 2024-05-01", details={"parameter": "day"})
    s = call.settings
    call.state.limiter.take(call.identity.caller_key, s.export_rate_cost - 1)  # the request cost 1
    asked: dict[str, Any] = {"day": day.isoformat()}
    if event_ids:
        asked["event_ids"] = [str(e) for e in event_ids]
    async with call.connection() as conn:
        grant = await call.authorize_room(conn, room_id, Action.EXPORT, asked)
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            await limit_stream_time(conn, s.long_statement_timeout_seconds)
            proven = await _day(call, conn, room_id, day, event_ids)
        await call.audit(conn, call.entry(grant=grant, filters=asked, row_count=len(proven["events"])))
    call.state.metrics.rows.labels(call.route).inc(len(proven["events"]))
    name = f"roomlogs-evidence-{_FILE_NAME_UNSAFE.sub('_', room_id)[:64]}-{day.isoformat()}.json"
    return Response(
        dumps({"format": FORMAT, "days": [proven]}),
        media_type="application/json",
        headers={
            "Content-Disposition": f'attachment; filename="{name}"',
            "Cache-Control": "no-store",
            "X-Content-Type-Options": "nosniff",
        },
    )


async def _day(
    call: Call, conn: asyncpg.Connection, room_id: str, day: date, event_ids: Sequence[uuid.UUID]
) -> dict[str, Any]:
    """The bundle's day, or why there is none (raised)."""
    seal = await q.room_seal(conn, room_id, day)
    if seal is None:
        raise await _no_seal(call, conn, day)
    if event_ids:
        return await _some(call, conn, seal, event_ids)
    return await _whole(call, conn, seal)


async def _no_seal(call: Call, conn: asyncpg.Connection, day: date) -> NotFound:
    if await q.day_sealed(conn, day):
        return NotFound(
            f"the room has no events of {day}: the day is sealed, and had none of this room",
            details={"day": day.isoformat()},
        )
    closing = closes_at(day, call.settings.seal_late_window_seconds)
    when = f"{closing:%Y-%m-%d %H:%M:%S} UTC"
    if closing > call.params.now:
        message = (
            f"{day} is not sealed yet: it closes at {when}, "
            f"{call.settings.seal_late_window_seconds:g} s after it ends, and is sealed by the next "
            "sealing run after that"
        )
    else:
        message = f"{day} closed at {when} and is not sealed yet: the next sealing run seals it"
    return NotSealed(message, details={"day": day.isoformat(), "closes_at": closing.isoformat()})


async def _whole(call: Call, conn: asyncpg.Connection, seal: StoredSeal) -> dict[str, Any]:
    _check_size(call, seal)
    stored = proofs.exported(await q.day_events(conn, seal.room_id, seal.day))
    if proofs.intact(seal, stored):
        return day_bundle(
            statement=seal.statement,
            signature=seal.signature,
            key_id=seal.key_id,
            day_events=stored,
            exported=stored,
        )
    leaves = proofs.verified_leaves(seal, await q.sealed_leaves(conn, seal))
    if leaves is None:
        raise _not_provable(seal, len(stored))
    sealed = set(leaves.event_ids)
    added = [e for e in (uuid.UUID(x["event_id"]) for x in stored) if e not in sealed]
    return await _proven(call, conn, seal, leaves, stored, [*leaves.event_ids, *added])


async def _some(
    call: Call, conn: asyncpg.Connection, seal: StoredSeal, event_ids: Sequence[uuid.UUID]
) -> dict[str, Any]:
    stored = proofs.exported(await q.day_events(conn, seal.room_id, seal.day, event_ids))
    leaves = proofs.verified_leaves(seal, await q.sealed_leaves(conn, seal))
    if leaves is None:  # not kept: the whole stored day gives them, while it is the sealed day
        _check_size(call, seal)
        day = proofs.exported(await q.day_events(conn, seal.room_id, seal.day))
        if not proofs.intact(seal, day):
            raise _not_provable(seal, len(day))
        leaves = proofs.leaves_of_events(day)
    return await _proven(call, conn, seal, leaves, stored, event_ids)


def _not_provable(seal: StoredSeal, stored: int) -> NotProvable:
    return NotProvable(
        f"the stored events of {seal.day} ({stored:,}) are no longer the {seal.tree_size:,} it was sealed "
        "with (retention or an audited deletion removed some, or they changed), and the seal's leaves, "
        "which would prove the rest one by one, are no longer kept",
        details={"day": seal.day.isoformat(), "stored": stored, "sealed": seal.tree_size},
    )


async def _proven(
    call: Call,
    conn: asyncpg.Connection,
    seal: StoredSeal,
    leaves: SealedLeaves,
    stored: Sequence[Mapping[str, Any]],
    wanted: Sequence[uuid.UUID],
) -> dict[str, Any]:
    events, omitted, unknown = proofs.sort_out(leaves, stored, wanted)
    if unknown:
        raise NotFound(
            f"{len(unknown)} of the events asked for are not among the room's events of {seal.day}",
            details={"event_ids": [str(e) for e in unknown[:10]]},
        )
    omitted = await _why_not_stored(call, conn, seal, leaves, omitted)
    if not events:
        raise NotProvable(
            f"none of the events asked for can be proven: {omitted[0].detail}"
            + (f" (and {len(omitted) - 1:,} more)" if len(omitted) > 1 else ""),
            details={"day": seal.day.isoformat(), "omitted": [o.as_json() for o in omitted[:10]]},
        )
    return proofs.proven_day(seal, leaves, events, omitted)


async def _why_not_stored(
    call: Call, conn: asyncpg.Connection, seal: StoredSeal, leaves: SealedLeaves, omitted: list[Omitted]
) -> list[Omitted]:
    """Sealed events that are not stored: deleted by which audited request, or past their retention."""
    gone = [o.event_id for o in omitted if o.reason == "not_stored"]
    if not gone:
        return omitted
    deleted = await q.deleted_by(conn, gone)
    kept = await q.retention_days(conn)
    class_of = dict(zip(leaves.event_ids, leaves.classes, strict=False))
    today = call.params.now.date()
    out = []
    for o in omitted:
        request = deleted.get(o.event_id)
        cls = class_of.get(o.event_id)
        if request is not None:
            o = dataclasses.replace(o, reason="deleted_by_request", detail=f"deleted by request {request}")
        elif o.reason == "not_stored" and cls in kept and is_expired(seal.day, today, kept[cls]):
            o = dataclasses.replace(
                o, detail=f"no longer stored: past the {kept[cls]} days of its retention class {cls}"
            )
        out.append(o)
    return out


def _check_size(call: Call, seal: StoredSeal) -> None:
    cap = call.settings.evidence_max_events
    if seal.tree_size > cap:
        raise ExportTooLarge(
            f"{seal.day} has {seal.tree_size:,} sealed events, more than a bundle of a whole day holds "
            f"({cap:,}): ask for the events you need (event_id)",
            details={"max_rows": cap},
        )
