"""Each kind of caller against each endpoint, tokens that must be refused, cursors that must not move.

Every answer, allowed or refused, leaves its audit rows (checked for each case).
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import httpx
import jwt
import pytest
from api_world import JWT_KEY, RANGE, STAFF_TICKET, World, bearer, service, staff, token
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

CALLERS: dict[str, dict[str, str]] = {
    "owner": bearer("u-owner"),
    "moderator": bearer("u-mod"),
    "revoked_moderator": bearer("u-revoked"),
    "regular_user": bearer("u-guest"),
    "staff_with_reason": staff(),
    "staff_without_reason": staff(reason=None),
    "staff_with_bad_reason": staff(reason="because I can"),
    "service_read": service("svc-trust", "rooms:read"),
    "service_export": service("svc-archive", "rooms:export"),
    "service_tail": service("svc-live", "rooms:tail"),
    "service_no_scope": service("svc-nothing"),
}

ALLOWED = {"owner", "moderator", "staff_with_reason"}
#: endpoint -> (path, query, service caller allowed)
ENDPOINTS: dict[str, tuple[str, dict[str, Any], str]] = {
    "events": ("/v1/rooms/room-1/events", RANGE, "service_read"),
    "event": ("/v1/rooms/room-1/events/{chat0}", {}, "service_read"),
    "days": ("/v1/rooms/room-1/days", {}, "service_read"),
    "export": ("/v1/rooms/room-1/export", RANGE, "service_export"),
    "tail": ("/v1/rooms/room-1/tail", {}, "service_tail"),
}

EXPECTED_CODE = {
    "revoked_moderator": "forbidden",
    "regular_user": "forbidden",
    "staff_without_reason": "reason_required",
    "staff_with_bad_reason": "reason_required",
    "service_no_scope": "insufficient_scope",
}


@pytest.mark.parametrize("endpoint", sorted(ENDPOINTS))
@pytest.mark.parametrize("caller", sorted(CALLERS))
async def test_role_against_endpoint(
    app_factory: Any, pipeline_world: World, caller: str, endpoint: str
) -> None:
    client, _ = await app_factory(pipeline_world, tail_max_seconds=0.2)
    path, query, allowed_service = ENDPOINTS[endpoint]
    path = path.format(chat0=pipeline_world.ids["chat0"])
    r = await client.get(path, params=query, headers=CALLERS[caller])
    audit = await pipeline_world.audit_rows(r.headers["x-request-id"])
    if caller in ALLOWED or caller == allowed_service:
        assert r.status_code == 200, r.text
        if endpoint in ("export", "tail"):
            assert [a["outcome"] for a in audit] == ["started", "finished"]
            assert audit[1]["row_count"] == (pipeline_world.counts["room-1"] if endpoint == "export" else 0)
        else:
            assert [a["outcome"] for a in audit] == ["ok"]
        basis = {"owner": "owner", "moderator": "moderator", "staff_with_reason": "staff"}.get(
            caller, "service"
        )
        assert {a["basis"] for a in audit} == {basis}
        assert audit[0]["staff_reason"] == (STAFF_TICKET if caller == "staff_with_reason" else None)
    else:
        assert r.status_code == 403, r.text
        code = EXPECTED_CODE.get(
            caller, "insufficient_scope" if caller.startswith("service") else "forbidden"
        )
        assert r.json()["error"]["code"] == code
        assert [(a["outcome"], a["detail"], a["room_id"]) for a in audit] == [("denied", code, "room-1")]
    assert {a["subject"] for a in audit} == {_subject(CALLERS[caller])}


def _subject(headers: dict[str, str]) -> str:
    claims = jwt.decode(headers["Authorization"].split()[1], options={"verify_signature": False})
    return str(claims["sub"])


async def test_a_moderator_of_another_room_sees_nothing_here(api: httpx.AsyncClient) -> None:
    r = await api.get("/v1/rooms/room-3/events", params=RANGE, headers=bearer("u-mod"))
    assert r.status_code == 403
    # the same answer whether the room exists or not
    r2 = await api.get("/v1/rooms/no-such-room/events", params=RANGE, headers=bearer("u-mod"))
    assert (r2.status_code, r2.json()["error"]["code"]) == (403, r.json()["error"]["code"])


async def test_moderation_history_needs_the_scope_for_services(api: httpx.AsyncClient) -> None:
    r = await api.get("/v1/users/u-target/moderation", headers=service("svc-trust", "rooms:read"))
    assert (r.status_code, r.json()["error"]["code"]) == (403, "insufficient_scope")
    r = await api.get("/v1/users/u-target/moderation", headers=service("svc-ts", "moderation:read"))
    assert r.status_code == 200 and r.json()["scope"] == "all_rooms"


# --- tokens ---------------------------------------------------------------------------------------------
def _rsa_token() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return jwt.encode({"sub": "u-owner", "exp": int(time.time()) + 60}, pem, algorithm="RS256")


def _unsigned(claims: dict[str, Any]) -> str:
    return jwt.encode(claims, None, algorithm="none")


BAD_TOKENS: dict[str, tuple[str | None, str]] = {
    "missing": (None, "unauthenticated"),
    "not_bearer": ("Basic dXNlcjpwYXNz", "unauthenticated"),
    "garbage": ("Bearer not.a.jwt", "invalid_token"),
    "forged": (f"Bearer {token('u-owner', key='another-key-' + 'x' * 60)}", "invalid_token"),
    "expired": (f"Bearer {token('u-owner', ttl=-120)}", "token_expired"),
    "alg_none": (f"Bearer {_unsigned({'sub': 'u-owner', 'exp': int(time.time()) + 60})}", "invalid_token"),
    "alg_none_staff": (
        f"Bearer {_unsigned({'sub': 's', 'roles': ['support_staff'], 'exp': int(time.time()) + 60})}",
        "invalid_token",
    ),
    "other_algorithm": (f"Bearer {token('u-owner', algorithm='HS512')}", "invalid_token"),
    "rs256_when_hs256_pinned": (f"Bearer {_rsa_token()}", "invalid_token"),
    "no_exp": (f"Bearer {jwt.encode({'sub': 'u-owner'}, JWT_KEY, algorithm='HS256')}", "invalid_token"),
    "no_sub": (
        f"Bearer {jwt.encode({'exp': int(time.time()) + 60}, JWT_KEY, algorithm='HS256')}",
        "invalid_token",
    ),
    "not_yet_valid": (f"Bearer {token('u-owner', nbf=int(time.time()) + 3600)}", "invalid_token"),
    "service_with_roles": (
        f"Bearer {token('svc', kind='service', roles=['support_staff'])}",
        "invalid_token",
    ),
    "unknown_kind": (f"Bearer {token('u-owner', kind='admin')}", "invalid_token"),
}


@pytest.mark.parametrize("case", sorted(BAD_TOKENS))
async def test_bad_tokens_are_refused(app_factory: Any, pipeline_world: World, case: str) -> None:
    client, state = await app_factory(pipeline_world)
    header, code = BAD_TOKENS[case]
    headers = {"Authorization": header} if header else {}
    r = await client.get("/v1/rooms/room-1/events", headers=headers)
    assert r.status_code == 401, r.text
    assert r.json()["error"]["code"] == code
    assert r.headers["www-authenticate"].startswith("Bearer")
    denials = state.metrics.registry.get_sample_value("roomlogs_api_denials_total", {"reason": code})
    assert denials == 1.0


async def test_issuer_and_audience_are_enforced_when_configured(
    app_factory: Any, pipeline_world: World
) -> None:
    client, _ = await app_factory(pipeline_world, jwt_issuer="https://id.example", jwt_audience="roomlogs")
    ok = bearer("u-owner", iss="https://id.example", aud="roomlogs")
    assert (await client.get("/v1/rooms/room-1/days", headers=ok)).status_code == 200
    for claims in ({"iss": "https://evil.example", "aud": "roomlogs"}, {"iss": "https://id.example"}, {}):
        r = await client.get("/v1/rooms/room-1/days", headers=bearer("u-owner", **claims))
        assert r.status_code == 401, claims


# --- cursors --------------------------------------------------------------------------------------------
async def _first_page(api: httpx.AsyncClient, room: str, headers: dict[str, str], **extra: Any) -> str:
    r = await api.get(f"/v1/rooms/{room}/events", params={**RANGE, "limit": 2, **extra}, headers=headers)
    assert r.status_code == 200, r.text
    cursor = r.json()["next_cursor"]
    assert cursor
    return str(cursor)


async def test_a_cursor_replayed_on_another_room_is_refused(
    api: httpx.AsyncClient, pipeline_world: World
) -> None:
    mod = bearer("u-mod")  # moderates room-1 and room-2: allowed in both, so only the cursor can say no
    cursor = await _first_page(api, "room-1", mod)
    r = await api.get("/v1/rooms/room-2/events", params={"cursor": cursor, "limit": 2}, headers=mod)
    assert (r.status_code, r.json()["error"]["code"]) == (400, "invalid_cursor")
    audit = await pipeline_world.fetch(
        "SELECT count(*) AS n FROM access_audit WHERE request_id = $1 AND outcome = 'ok'",
        uuid.UUID(r.headers["x-request-id"]),
    )
    assert audit[0]["n"] == 0  # nothing was read


async def test_a_cursor_on_another_room_without_access_is_forbidden_first(api: httpx.AsyncClient) -> None:
    cursor = await _first_page(api, "room-1", bearer("u-owner"))
    r = await api.get("/v1/rooms/room-3/events", params={"cursor": cursor}, headers=bearer("u-owner"))
    assert (r.status_code, r.json()["error"]["code"]) == (403, "forbidden")


async def test_cursors_are_bound_to_filters_order_caller_and_signature(api: httpx.AsyncClient) -> None:
    owner, mod = bearer("u-owner"), bearer("u-mod")
    cursor = await _first_page(api, "room-1", owner)
    body, _, sig = cursor.partition(".")
    tampered = body[:-2] + ("AA" if body[-2:] != "AA" else "BB") + "." + sig
    for params, headers in (
        ({"cursor": cursor, "type": "chat.message"}, owner),  # other filters
        ({"cursor": cursor, "order": "asc"}, owner),  # other order
        ({"cursor": cursor}, mod),  # another caller
        ({"cursor": tampered}, owner),
        ({"cursor": cursor + "x"}, owner),
        ({"cursor": "bm90IGEgY3Vyc29y"}, owner),
        ({"cursor": cursor, "since": "2020-01-01T00:00:00Z"}, owner),  # another range
    ):
        r = await api.get("/v1/rooms/room-1/events", params={"limit": 2, **params}, headers=headers)
        assert (r.status_code, r.json()["error"]["code"]) == (400, "invalid_cursor"), params
    r = await api.get("/v1/rooms/room-1/events", params={"cursor": cursor, "limit": 2}, headers=owner)
    assert r.status_code == 200


async def test_an_expired_cursor_is_refused(app_factory: Any, pipeline_world: World) -> None:
    client, state = await app_factory(pipeline_world)
    cursor = await _first_page(client, "room-1", bearer("u-owner"))
    real = state.cursors._clock
    state.cursors._clock = lambda: real() + 7200
    r = await client.get("/v1/rooms/room-1/events", params={"cursor": cursor}, headers=bearer("u-owner"))
    assert (r.status_code, r.json()["error"]["code"]) == (400, "invalid_cursor")
    assert "expired" in r.json()["error"]["message"]


async def test_moderation_cursor_is_bound_to_the_user(api: httpx.AsyncClient) -> None:
    headers = staff()
    r = await api.get("/v1/users/u-target/moderation", params={"limit": 1}, headers=headers)
    cursor = r.json()["next_cursor"]
    assert cursor
    r = await api.get("/v1/users/u-mod/moderation", params={"limit": 1, "cursor": cursor}, headers=headers)
    assert (r.status_code, r.json()["error"]["code"]) == (400, "invalid_cursor")
