"""Export of a room's filtered time range as NDJSON or CSV, streamed, size-capped, audited.

Before the first byte: authorization, the cap (more matching rows than `export_max_rows` and no `limit`
is a 413 `export_too_large`), and a `started` audit row. The rows then stream from a server-side cursor
in a read-only transaction; the stream ends with a `finished` audit row carrying the row count, or an
`aborted` one (client gone, timeout) with what was sent. A stream that fails midway is cut off without
the closing chunk, so a client cannot mistake a partial export for a complete one.
"""

from __future__ import annotations

import csv
import io
import logging
import time
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from typing import Any

import anyio
import asyncpg
import orjson
from starlette.responses import Response, StreamingResponse

from pipeline.api.context import Call, dumps
from pipeline.api.errors import ExportTooLarge, Unavailable
from pipeline.api.params import EventFilters, TimeRange
from pipeline.api.queries.export import count_capped, limit_stream_time, stream_room_events
from pipeline.api.security.access import Action, Grant

log = logging.getLogger("roomlogs.api.export")

FORMATS = ("ndjson", "csv")
#: `order` of an export: oldest first unless asked
ORDERS = ("asc", "desc")
CSV_COLUMNS = (
    "event_id",
    "occurred_at",
    "room_id",
    "type",
    "actor_id",
    "target_id",
    "body",
    "payload",
    "retention_class",
    "ingested_at",
)
_CHUNK_ROWS = 1_000
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_DEFAULT_SPAN_DAYS = 1


async def export_events(call: Call) -> Response:
    """GET /v1/rooms/{room_id}/export"""
    room_id = call.path("room_id")
    s = call.settings
    p = call.params
    rng = p.time_range(default=timedelta(days=_DEFAULT_SPAN_DAYS), max_days=s.max_range_days)
    filters = p.filters()
    fmt = p.choice("format", FORMATS, "ndjson")
    order = p.choice("order", ORDERS, "asc")
    limit = p.integer("limit", default=None, low=1, high=s.export_max_rows)
    p.done()
    caller = call.identity.caller_key
    call.state.limiter.take(caller, s.export_rate_cost - 1)  # the request itself already cost 1
    asked: dict[str, Any] = {
        **rng.as_dict(),
        **filters.as_dict(),
        "format": fmt,
        "order": order,
        "limit": limit,
    }
    async with call.opening_stream() as conn:
        grant = await call.authorize_room(conn, room_id, Action.EXPORT, asked)
        if limit is None:
            matching = await count_capped(conn, room_id, rng, filters, s.export_max_rows)
            _check_cap(matching, s.export_max_rows)
        await call.audit(conn, call.entry(grant=grant, filters=asked, outcome="started"))
    encode = _ndjson if fmt == "ndjson" else _csv
    body = _stream(call, grant, room_id, rng, filters, order, limit, encode, asked)
    media = "application/x-ndjson" if fmt == "ndjson" else "text/csv; charset=utf-8"
    return StreamingResponse(
        body,
        media_type=media,
        headers={
            "Content-Disposition": f'attachment; filename="roomlogs-export.{fmt}"',
            "Cache-Control": "no-store",
        },
    )


async def _stream(
    call: Call,
    grant: Grant,
    room_id: str,
    rng: TimeRange,
    filters: EventFilters,
    order: str,
    limit: int | None,
    encode: Callable[[list[asyncpg.Record], bool], bytes],
    asked: dict[str, Any],
) -> AsyncIterator[bytes]:
    state = call.state
    s = state.settings
    sent = 0
    outcome, detail = "aborted", "client_disconnected"
    deadline = time.monotonic() + s.long_statement_timeout_seconds
    try:
        pool = state.pool
        if pool is None:
            raise Unavailable("the API is stopping")
        async with pool.acquire() as conn, conn.transaction(readonly=True):
            await limit_stream_time(conn, s.long_statement_timeout_seconds)
            chunk: list[asyncpg.Record] = []
            first = True
            async for record in stream_room_events(conn, room_id, rng, filters, order, limit):
                chunk.append(record)
                if len(chunk) >= _CHUNK_ROWS:
                    yield encode(chunk, first)
                    sent += len(chunk)
                    chunk.clear()
                    first = False
                    if time.monotonic() > deadline:
                        detail = "export_deadline"
                        raise TimeoutError("export took longer than the long statement timeout")
            if chunk or first:
                yield encode(chunk, first)
                sent += len(chunk)
        outcome, detail = "finished", "complete"
    except asyncpg.QueryCanceledError:
        detail = "query_timeout"
        raise
    finally:
        with anyio.CancelScope(shield=True):
            await _audit_end(call, grant, asked, sent, outcome, detail)
        state.streams.release(call.identity.caller_key)
        state.metrics.rows.labels(call.route).inc(sent)


async def _audit_end(
    call: Call, grant: Grant, asked: dict[str, Any], sent: int, outcome: str, detail: str
) -> None:
    # the `started` row stands; if this one cannot be written, record_apart logs it and counts it
    await call.state.record_apart(
        call.entry(grant=grant, filters=asked, row_count=sent, outcome=outcome, detail=detail)
    )


def _check_cap(matching: int, cap: int) -> None:
    if matching > cap:
        raise ExportTooLarge(
            f"more than {cap} events match; narrow the range or filters, or give a limit",
            details={"max_rows": cap},
        )


def _ndjson(rows: list[asyncpg.Record], first: bool) -> bytes:
    return b"".join(dumps(dict(r.items())) + b"\n" for r in rows)


def _csv(rows: list[asyncpg.Record], first: bool) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    if first:
        writer.writerow(CSV_COLUMNS)
    for r in rows:
        writer.writerow(
            (
                str(r["event_id"]),
                _iso(r["occurred_at"]),
                _cell(r["room_id"]),
                r["type"],
                _cell(r["actor_id"]),
                _cell(r["target_id"]),
                _cell(r["body"]),
                orjson.dumps(r["payload"]).decode(),
                r["retention_class"],
                _iso(r["ingested_at"]),
            )
        )
    return out.getvalue().encode()


def _iso(moment: Any) -> str:
    return str(moment.isoformat().replace("+00:00", "Z"))


def _cell(value: str | None) -> str:
    """Chat text opened in a spreadsheet must not run as a formula (CSV injection)."""
    if value is None:
        return ""
    return "'" + value if value.startswith(_FORMULA_START) else value
