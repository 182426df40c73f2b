"""Every refusal and every error leaves an access-audit row: who (anonymous when no token was verified,
never the token), what, about which room or user, outcome, status and code. 429 floods cost a bounded
number of rows: the first per caller per window, then one row with a count."""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
import pytest
from api_world import RANGE, World, api_settings, bearer, service, staff, token
from prometheus_client import CollectorRegistry

from pipeline.api import create_app
from pipeline.api.security.floods import FloodTally
from pipeline.api.security.gate import flush_floods
from pipeline.settings import Secret

OWNER = bearer("u-owner")
EXPIRED = f"Bearer {token('u-owner', ttl=-120)}"
FORGED = f"Bearer {token('u-owner', key='not-the-key-' + 'x' * 60)}"

#: case -> (method, path, query, headers, status, code, (action, outcome, subject, identity, room, user))
REFUSALS: dict[str, tuple[str, str, dict[str, Any], dict[str, str], int, str, tuple[Any, ...]]] = {
    "no_token": (
        "GET", "/v1/rooms/room-1/events", RANGE, {}, 401, "unauthenticated",
        ("events.list", "denied", "anonymous", "anonymous", "room-1", None),
    ),
    "expired_token": (
        "GET", "/v1/rooms/room-1/days", {}, {"Authorization": EXPIRED}, 401, "token_expired",
        ("days", "denied", "anonymous", "anonymous", "room-1", None),
    ),
    "forged_token": (
        "POST", "/v1/rooms/room-1/deletions", {}, {"Authorization": FORGED}, 401, "invalid_token",
        ("room_logs.delete", "denied", "anonymous", "anonymous", "room-1", None),
    ),
    "bad_parameter": (
        "GET", "/v1/rooms/room-1/events", {"limit": "0"}, OWNER, 400, "invalid_parameter",
        ("events.list", "rejected", "u-owner", "user", "room-1", None),
    ),
    "range_too_large": (
        "GET", "/v1/rooms/room-1/days", {"from": "2020-01-01", "to": "2024-01-01"}, OWNER, 400,
        "range_too_large", ("days", "rejected", "u-owner", "user", "room-1", None),
    ),
    "no_such_event": (
        "GET", f"/v1/rooms/room-1/events/{uuid.UUID(int=7)}", {}, OWNER, 404, "not_found",
        ("events.get", "rejected", "u-owner", "user", "room-1", None),
    ),
    "no_such_route": (
        "GET", "/v1/rooms/room-1/secrets", {}, OWNER, 404, "not_found",
        ("unmatched", "rejected", "u-owner", "user", None, None),
    ),
    "wrong_method": (
        "DELETE", "/v1/rooms/room-1/events", {}, OWNER, 405, "method_not_allowed",
        ("unmatched", "rejected", "u-owner", "user", None, None),
    ),
    "someone_elses_room": (
        "GET", "/v1/rooms/room-3/events", RANGE, OWNER, 403, "forbidden",
        ("events.list", "denied", "u-owner", "user", "room-3", None),
    ),
    "moderation_history_without_the_scope": (
        "GET", "/v1/users/u-target/moderation", {}, service("svc-trust", "rooms:read"), 403,
        "insufficient_scope", ("moderation.history", "denied", "svc-trust", "service", None, "u-target"),
    ),
    "moderation_history_without_a_ticket": (
        "GET", "/v1/users/u-target/moderation", {}, staff(reason="because"), 403, "reason_required",
        ("moderation.history", "denied", "s-staff", "staff", None, "u-target"),
    ),
    "erasure_by_a_user": (
        "POST", "/v1/users/u-guest/erasures", {}, OWNER, 403, "forbidden",
        ("user_chat.erase", "denied", "u-owner", "user", None, "u-guest"),
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(REFUSALS))
async def test_every_refusal_is_audited(app_factory: Any, pipeline_world: World, case: str) -> None:
    method, path, query, headers, status, code, expected = REFUSALS[case]
    client, _ = await app_factory(pipeline_world)
    r = await client.request(method, path, params=query, headers=headers)
    assert (r.status_code, r.json()["error"]["code"]) == (status, code), r.text
    rows = await pipeline_world.audit_rows(r.headers["x-request-id"])
    assert [
        (a["action"], a["outcome"], a["subject"], a["identity_type"], a["room_id"], a["user_id"])
        for a in rows
    ] == [expected]
    assert [(a["http_status"], a["detail"], a["occurrences"]) for a in rows] == [(status, code, 1)]


async def test_a_refused_token_is_never_stored_only_the_subject_it_claimed(
    api: httpx.AsyncClient, pipeline_world: World
) -> None:
    r = await api.get("/v1/rooms/room-1/days", headers={"Authorization": EXPIRED})
    assert r.status_code == 401
    rows = await pipeline_world.audit_rows(r.headers["x-request-id"])
    assert [(a["subject"], a["filters"]) for a in rows] == [("anonymous", {"unverified_subject": "u-owner"})]
    stored = json.dumps([dict(a) for a in rows], default=str)
    for part in EXPIRED.split()[1].split("."):
        assert part not in stored


async def test_a_replayed_cursor_of_an_authorized_caller_is_audited_as_denied(
    api: httpx.AsyncClient, pipeline_world: World
) -> None:
    mod = bearer("u-mod")  # moderates room-1 and room-2: only the cursor can say no
    first = await api.get("/v1/rooms/room-1/events", params={**RANGE, "limit": 2}, headers=mod)
    cursor = first.json()["next_cursor"]
    r = await api.get("/v1/rooms/room-2/events", params={"cursor": cursor, "limit": 2}, headers=mod)
    assert (r.status_code, r.json()["error"]["code"]) == (400, "invalid_cursor")
    rows = await pipeline_world.audit_rows(r.headers["x-request-id"])
    assert [
        (a["action"], a["outcome"], a["detail"], a["basis"], a["room_id"], a["row_count"]) for a in rows
    ] == [("events.list", "denied", "invalid_cursor", "moderator", "room-2", None)]


async def test_an_unexpected_error_is_a_500_and_audited(
    app_factory: Any, pipeline_world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(*args: Any) -> list[Any]:
        raise RuntimeError("a bug")

    monkeypatch.setattr("pipeline.api.queries.days.type_counts", broken)
    client, _ = await app_factory(pipeline_world)
    r = await client.get("/v1/rooms/room-1/days", headers=OWNER)
    assert (r.status_code, r.json()["error"]["code"]) == (500, "internal")
    rows = await pipeline_world.audit_rows(r.headers["x-request-id"])
    assert [(a["action"], a["outcome"], a["detail"], a["http_status"], a["basis"]) for a in rows] == [
        ("days", "error", "internal", 500, "owner")
    ]


async def test_when_the_audit_cannot_be_written_the_refusal_still_answers_and_is_counted(
    app_factory: Any, pipeline_world: World, caplog: pytest.LogCaptureFixture
) -> None:
    client, state = await app_factory(pipeline_world)
    state.pool = None  # the database is out of reach
    r = await client.get("/v1/rooms/room-1/days", headers=OWNER)
    assert (r.status_code, r.json()["error"]["code"]) == (503, "unavailable")
    failures = state.metrics.registry.get_sample_value(
        "roomlogs_api_audit_failures_total", {"outcome": "error"}
    )
    assert failures == 1.0
    assert any(r.headers["x-request-id"] in m for m in caplog.messages)


# --- 429 floods -----------------------------------------------------------------------------------------
async def _rate_limited_rows(world: World, subject: str) -> list[Any]:
    return await world.fetch(
        "SELECT * FROM access_audit WHERE subject = $1 AND outcome = 'rate_limited' ORDER BY audit_id",
        subject,
    )


async def test_a_flood_of_429s_costs_two_audit_rows_per_caller_per_window(
    app_factory: Any, pipeline_world: World
) -> None:
    client, state = await app_factory(pipeline_world, rate_limit_per_second=0.001, rate_limit_burst=1)
    now = [1000.0]
    state.floods = FloodTally(60.0, clock=lambda: now[0])
    subject = f"u-flood-{uuid.uuid4().hex[:8]}"
    caller = bearer(subject)
    assert (await client.get("/v1/rooms/room-1/days", headers=caller)).status_code == 403  # not their room
    flood = [await client.get("/v1/rooms/room-1/days", headers=caller) for _ in range(15)]
    flood += [await client.get("/v1/rooms/room-2/events", headers=caller) for _ in range(5)]
    assert {r.status_code for r in flood} == {429}
    ids = [r.headers["x-request-id"] for r in flood]

    rows = await _rate_limited_rows(pipeline_world, subject)
    assert [(a["request_id"], a["occurrences"], a["action"]) for a in rows] == [
        (uuid.UUID(ids[0]), 1, "days")
    ]

    now[0] += 61  # the window closes; the next 429 writes its tally and opens a new window
    late = await client.get("/v1/rooms/room-1/days", headers=caller)
    assert late.status_code == 429
    rows = await _rate_limited_rows(pipeline_world, subject)
    assert [(a["request_id"], a["occurrences"], a["action"], a["room_id"]) for a in rows] == [
        (uuid.UUID(ids[0]), 1, "days", "room-1"),
        (uuid.UUID(ids[1]), 19, "multiple", None),
        (uuid.UUID(late.headers["x-request-id"]), 1, "days", "room-1"),
    ]
    tally = rows[1]["filters"]
    assert tally["actions"] == {"days": 14, "events.list": 5}
    assert tally["last_request_id"] == ids[-1]
    assert {(a["http_status"], a["detail"]) for a in rows} == {(429, "rate_limited")}
    assert sum(a["occurrences"] for a in rows) == len(flood) + 1  # every 429 is accounted for


async def test_failed_sign_ins_that_hit_the_limit_are_tallied_as_anonymous(
    app_factory: Any, pipeline_world: World
) -> None:
    client, state = await app_factory(pipeline_world, rate_limit_per_second=0.001, rate_limit_burst=1)
    answers = [await client.get("/v1/rooms/room-1/days") for _ in range(4)]
    assert [r.status_code for r in answers] == [401, 429, 429, 429]
    await flush_floods(state, everything=True)  # as the API does at shutdown
    for r, expected in zip(answers[:2], ([("denied", 1)], [("rate_limited", 1)]), strict=True):
        rows = await pipeline_world.audit_rows(r.headers["x-request-id"])
        assert [(a["outcome"], a["occurrences"]) for a in rows] == expected
        assert {(a["subject"], a["identity_type"]) for a in rows} == {("anonymous", "anonymous")}
    tally = await pipeline_world.audit_rows(answers[2].headers["x-request-id"])
    assert [(a["outcome"], a["occurrences"]) for a in tally] == [("rate_limited", 2)]


async def test_shutdown_writes_the_open_tallies(pipeline_world: World) -> None:
    app = create_app(
        api_settings(
            postgres_dsn=Secret(pipeline_world.api_dsn), rate_limit_per_second=0.001, rate_limit_burst=1
        ),
        pipeline_world.schema,
        registry=CollectorRegistry(),
    )
    subject = f"u-flood-{uuid.uuid4().hex[:8]}"
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://x") as client,
    ):
        statuses = [
            (await client.get("/v1/rooms/room-1/days", headers=bearer(subject))).status_code for _ in range(6)
        ]
    assert statuses == [403, 429, 429, 429, 429, 429]
    rows = await _rate_limited_rows(pipeline_world, subject)
    assert [a["occurrences"] for a in rows] == [1, 4]
