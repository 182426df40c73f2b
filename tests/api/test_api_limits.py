"""Limits and bad input: clear 4xx errors with stable codes, rate limits, and a database role that cannot
edit what it reads or what it records."""

from __future__ import annotations

from typing import Any

import asyncpg
import httpx
import pytest
from api_world import RANGE, World, api_settings, bearer, staff
from prometheus_client import CollectorRegistry

from pipeline.api import create_app, open_pool
from pipeline.api.errors import ERROR_CODES
from pipeline.errors import ConfigurationError
from pipeline.settings import Secret

OWNER = bearer("u-owner")

BAD_PARAMS: dict[str, tuple[dict[str, Any], str]] = {
    "range_over_31_days": (
        {"since": "2024-01-01T00:00:00Z", "until": "2024-03-01T00:00:00Z"},
        "range_too_large",
    ),
    "since_after_until": (
        {"since": "2024-01-02T00:00:00Z", "until": "2024-01-01T00:00:00Z"},
        "invalid_parameter",
    ),
    "naive_timestamp": ({"since": "2024-01-01T00:00:00"}, "invalid_parameter"),
    "not_a_timestamp": ({"since": "yesterday"}, "invalid_parameter"),
    "year_1": ({"since": "0001-01-01T00:00:00Z"}, "invalid_parameter"),
    "page_too_big": ({"limit": "501"}, "invalid_parameter"),
    "page_zero": ({"limit": "0"}, "invalid_parameter"),
    "page_not_a_number": ({"limit": "10; DROP TABLE events"}, "invalid_parameter"),
    "unknown_type": ({"type": "chat.whisper"}, "invalid_parameter"),
    "unknown_parameter": ({"room": "room-2"}, "invalid_parameter"),
    "misspelt_filter": ({"actors": "u-guest"}, "invalid_parameter"),
    "repeated_single_parameter": ({"actor": ["a", "b"]}, "invalid_parameter"),
    "search_too_short": ({"q": "hi"}, "invalid_parameter"),
    "search_too_long": ({"q": "x" * 201}, "invalid_parameter"),
    "order_sideways": ({"order": "random()"}, "invalid_parameter"),
    "actor_with_control_chars": ({"actor": "u\x00-guest"}, "invalid_parameter"),
    "actor_too_long": ({"actor": "u" * 65}, "invalid_parameter"),
    "huge_cursor": ({"cursor": "c" * 2000}, "invalid_parameter"),
}


@pytest.mark.parametrize("case", sorted(BAD_PARAMS))
async def test_bad_parameters_get_a_400_with_a_stable_code(api: httpx.AsyncClient, case: str) -> None:
    params, code = BAD_PARAMS[case]
    r = await api.get("/v1/rooms/room-1/events", params=params, headers=OWNER)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["code"] == code and error["code"] in ERROR_CODES
    assert error["request_id"] == r.headers["x-request-id"]


INJECTIONS = [
    "' OR 1=1 --",
    "u-guest' OR 'a'='a",
    'u-guest"; DROP TABLE events; --',
    "$1::text",
    "u-guest) OR (1=1",
]


@pytest.mark.parametrize("value", INJECTIONS)
async def test_injection_looking_filters_match_literally(
    api: httpx.AsyncClient, pipeline_world: World, value: str
) -> None:
    for name in ("actor", "target"):
        r = await api.get("/v1/rooms/room-1/events", params={**RANGE, name: value}, headers=OWNER)
        assert r.status_code == 200, r.text
        assert r.json()["events"] == []
    r = await api.get("/v1/rooms/room-1/events", params={**RANGE, "q": value}, headers=OWNER)
    assert r.status_code == 200 and r.json()["events"] == []
    r = await api.get(f"/v1/rooms/{value}/events", params=RANGE, headers=OWNER)
    assert r.status_code in (403, 404)
    rows = await pipeline_world.fetch("SELECT count(*) AS n FROM events")
    assert rows[0]["n"] == sum(pipeline_world.counts.values())


async def test_day_summary_range_is_capped(api: httpx.AsyncClient) -> None:
    r = await api.get(
        "/v1/rooms/room-1/days", params={"from": "2020-01-01", "to": "2024-01-01"}, headers=OWNER
    )
    assert (r.status_code, r.json()["error"]["code"]) == (400, "range_too_large")
    r = await api.get("/v1/rooms/room-1/days", params={"from": "2024-02-30"}, headers=OWNER)
    assert (r.status_code, r.json()["error"]["code"]) == (400, "invalid_parameter")


async def test_unknown_routes_and_methods_answer_in_the_same_shape(api: httpx.AsyncClient) -> None:
    r = await api.get("/v1/nothing-here", headers=OWNER)
    assert (r.status_code, r.json()["error"]["code"]) == (404, "not_found")
    r = await api.delete("/v1/rooms/room-1/events", headers=OWNER)
    assert (r.status_code, r.json()["error"]["code"]) == (405, "method_not_allowed")
    r = await api.get("/v1/rooms/room-1/events/not-a-uuid", headers=OWNER)
    assert (r.status_code, r.json()["error"]["code"]) == (400, "invalid_parameter")


async def test_rate_limit_per_caller(app_factory: Any, pipeline_world: World) -> None:
    client, state = await app_factory(pipeline_world, rate_limit_per_second=0.01, rate_limit_burst=3)
    statuses = [(await client.get("/v1/rooms/room-1/days", headers=OWNER)).status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    r = await client.get("/v1/rooms/room-1/days", headers=OWNER)
    assert r.json()["error"]["code"] == "rate_limited" and int(r.headers["retry-after"]) >= 1
    # another caller has a bucket of their own
    assert (await client.get("/v1/rooms/room-1/days", headers=bearer("u-mod"))).status_code == 200
    assert (
        state.metrics.registry.get_sample_value("roomlogs_api_denials_total", {"reason": "rate_limited"})
        == 2.0
    )


async def test_failed_authentication_is_rate_limited_by_address(
    app_factory: Any, pipeline_world: World
) -> None:
    client, _ = await app_factory(pipeline_world, rate_limit_per_second=0.01, rate_limit_burst=2)
    codes = [(await client.get("/v1/rooms/room-1/days")).json()["error"]["code"] for _ in range(3)]
    assert codes == ["unauthenticated", "unauthenticated", "rate_limited"]


async def test_exports_cost_more(app_factory: Any, pipeline_world: World) -> None:
    client, _ = await app_factory(
        pipeline_world, rate_limit_per_second=0.01, rate_limit_burst=12, export_rate_cost=10
    )
    assert (await client.get("/v1/rooms/room-1/export", params=RANGE, headers=OWNER)).status_code == 200
    r = await client.get("/v1/rooms/room-1/export", params=RANGE, headers=OWNER)
    assert r.status_code == 429


async def test_metrics_count_requests_by_route_template(app_factory: Any, pipeline_world: World) -> None:
    client, state = await app_factory(pipeline_world)
    await client.get("/v1/rooms/room-1/days", headers=OWNER)
    await client.get("/v1/rooms/room-2/days", headers=OWNER)
    value = state.metrics.registry.get_sample_value(
        "roomlogs_api_requests_total", {"route": "/v1/rooms/{room_id}/days", "status": "200"}
    )
    assert value == 1.0
    forbidden = state.metrics.registry.get_sample_value(
        "roomlogs_api_requests_total", {"route": "/v1/rooms/{room_id}/days", "status": "403"}
    )
    assert forbidden == 1.0
    text = (await client.get("/metrics")).text
    assert "roomlogs_api_request_duration_seconds_bucket" in text and "room-1" not in text


async def test_openapi_and_health_need_no_token(api: httpx.AsyncClient) -> None:
    doc = (await api.get("/openapi.json")).json()
    assert doc["openapi"].startswith("3.") and "/v1/rooms/{room_id}/events" in doc["paths"]
    assert (await api.get("/healthz")).json() == {"status": "ok"}


# --- the database role -------------------------------------------------------------------------------------
async def test_the_api_role_cannot_edit_or_delete_audit_rows_or_logs(pipeline_world: World) -> None:
    conn = await asyncpg.connect(
        pipeline_world.api_dsn, server_settings={"search_path": pipeline_world.schema}
    )
    try:
        assert await conn.fetchval("SELECT count(*) FROM events") > 0
        for sql in (
            "UPDATE access_audit SET subject = 'someone-else'",
            "DELETE FROM access_audit",
            "TRUNCATE access_audit",
            "SELECT count(*) FROM access_audit",  # append only: it cannot even read the audit back
            "UPDATE events SET body = 'edited'",
            "DELETE FROM events",
            "INSERT INTO events SELECT * FROM events LIMIT 1",
            "INSERT INTO deletion_requests (request_id, kind, room_id, requested_by, identity_type, basis, "
            "reason, "
            "rows_deleted) VALUES (gen_random_uuid(), 'room_logs', 'r', 'me', 'user', 'owner', 'x', 0)",
            "DELETE FROM room_moderators",
            "UPDATE rooms SET owner_id = 'me'",
            "SET roomlogs.authorized_deletion = 'on'; DELETE FROM events",
        ):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute(sql)
        # naming a requester proves nothing: the deletion functions want a token or session (0010)
        for sql in (
            "SELECT api_delete_room_logs(gen_random_uuid(), 'room-1', 'u-guest', 'user', 'owner', 'mine')",
            "SELECT api_erase_user_chat(gen_random_uuid(), 'u-guest', 'u-guest', 'user', 'x')",
        ):
            with pytest.raises(asyncpg.InvalidAuthorizationSpecificationError):
                await conn.execute(sql)
    finally:
        await conn.close()
    assert (await pipeline_world.fetch("SELECT count(*) AS n FROM events"))[0]["n"] == sum(
        pipeline_world.counts.values()
    )


async def test_audit_rows_cannot_be_changed_even_by_the_owner(pipeline_world: World) -> None:
    conn = await pipeline_world.admin()
    try:
        for sql in (
            "UPDATE access_audit SET subject = 'x'",
            "DELETE FROM access_audit",
            "TRUNCATE access_audit",
        ):
            with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
                await conn.execute(sql)
    finally:
        await conn.close()


async def test_the_api_refuses_to_start_on_a_privileged_role(pipeline_world: World) -> None:
    with pytest.raises(ConfigurationError, match="may edit or delete"):
        await open_pool(api_settings(postgres_dsn=Secret(pipeline_world.dsn)), pipeline_world.schema)
    pool = await open_pool(
        api_settings(postgres_dsn=Secret(pipeline_world.api_dsn), statement_timeout_seconds=2.5),
        pipeline_world.schema,
    )
    try:
        async with pool.acquire() as conn:
            assert await conn.fetchval("SHOW statement_timeout") == "2500ms"
    finally:
        await pool.close()
    with pytest.raises(ConfigurationError, match="ROOMLOGS_API_POSTGRES_DSN"):
        await open_pool(api_settings(), pipeline_world.schema)


async def test_the_app_opens_and_closes_its_own_pool(pipeline_world: World) -> None:
    app = create_app(
        api_settings(postgres_dsn=Secret(pipeline_world.api_dsn)),
        pipeline_world.schema,
        registry=CollectorRegistry(),
    )
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://x") as client,
    ):
        r = await client.get("/v1/rooms/room-1/days", headers=staff())
        assert r.status_code == 200, r.text
    assert app.state.api.pool is None
