"""The deletion functions check the grant themselves (migration 0010): the API's database role alone, with
no valid token or session of the owner or of staff, cannot delete a room's logs or erase anyone's chat."""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from collections.abc import Callable
from typing import Any

import asyncpg
import jwt
import pytest
from api_world import JWT_KEY, STAFF_TICKET, World, api_settings, bearer, token
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec as ec_key
from cryptography.hazmat.primitives.asymmetric import rsa

from pipeline.api.trust import install, token_trust
from pipeline.cli.api import COMMANDS, add_commands
from pipeline.errors import ConfigurationError
from pipeline.settings import Secret, Settings

DELETE = "SELECT api_delete_room_logs($1, 'room-a', $2, $3, $4, $5)"
ERASE = "SELECT api_erase_user_chat($1, 'u-chat', $2, $3, $4)"


async def _count(world: World, sql: str = "SELECT count(*) AS n FROM events") -> int:
    return int((await world.fetch(sql))[0]["n"])


def _claims(sub: str, **extra: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"sub": sub, "iat": now, "exp": now + 300, **extra}


# proofs are made when a test runs (lambdas), so each is refused for its own reason, not for its age
@pytest.mark.parametrize(
    ("why", "kind", "proof"),
    [
        ("signed with another key", "bearer", lambda: token("u-owner", key="another-key-" + "x" * 60)),
        ("expired", "bearer", lambda: token("u-owner", ttl=-120)),
        ("alg none", "bearer", lambda: jwt.encode(_claims("u-owner"), None, algorithm="none")),
        ("another algorithm", "bearer", lambda: token("u-owner", key=JWT_KEY + "x" * 64, algorithm="HS512")),
        ("no exp", "bearer", lambda: jwt.encode({"sub": "u-owner"}, JWT_KEY, algorithm="HS256")),
        ("not a JWT", "bearer", lambda: "u-owner"),
        ("a signature cut off", "bearer", lambda: token("u-owner").rsplit(".", 1)[0] + "."),
        ("an invented session", "session", lambda: "A" * 43),
        ("a subject, not a proof", "claimed", lambda: "u-owner"),
    ],
)
async def test_a_proof_that_proves_nothing_deletes_nothing(
    small_world: World, why: str, kind: str, proof: Callable[[], str]
) -> None:
    async with small_world.api_pool.acquire() as conn:
        with pytest.raises(asyncpg.InvalidAuthorizationSpecificationError):
            await conn.fetchval(DELETE, uuid.uuid4(), kind, proof(), "owner", "x")
        with pytest.raises(asyncpg.InvalidAuthorizationSpecificationError):
            await conn.fetchval(ERASE, uuid.uuid4(), kind, proof(), STAFF_TICKET)
    assert await _count(small_world) == 60, why
    assert await small_world.fetch("SELECT * FROM deletion_requests") == []


async def test_the_api_role_alone_cannot_delete_in_anyones_name(small_world: World) -> None:
    async with small_world.api_pool.acquire() as conn:
        # real tokens, wrong people: a moderator is no owner, a user is no staff
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="current owner"):
            await conn.fetchval(DELETE, uuid.uuid4(), "bearer", token("u-mod"), "owner", "x")
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="staff identity"):
            await conn.fetchval(DELETE, uuid.uuid4(), "bearer", token("u-owner-b"), "staff", STAFF_TICKET)
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="staff identity"):
            await conn.fetchval(ERASE, uuid.uuid4(), "bearer", token("u-owner"), STAFF_TICKET)
        staff_token = token("s-staff", roles=["support_staff"])
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="ticket"):
            await conn.fetchval(ERASE, uuid.uuid4(), "bearer", staff_token, "")
        service = token("svc", kind="service", scope="rooms:read")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.fetchval(DELETE, uuid.uuid4(), "bearer", service, "staff", STAFF_TICKET)
        # nor can it make itself a session, change whose one is, or read or replace the key
        for sql in (
            "INSERT INTO console_sessions (session_hash, subject, identity_type, expires_at) "
            "VALUES (sha256('x'), 'u-owner', 'user', now() + interval '1 hour')",
            "UPDATE console_sessions SET subject = 'u-owner'",
            "UPDATE console_sessions SET staff_reason = 'SUP-1'",
            "SELECT * FROM token_trust",
            "UPDATE token_trust SET hmac_key = 'mine'",
            "INSERT INTO token_trust (algorithm, hmac_key, staff_role, session_max_seconds) "
            "VALUES ('HS256', 'mine', 'support_staff', 60)",
            "SELECT * FROM verified_token_identity('x')",
        ):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute(sql)
    assert await _count(small_world) == 60
    # the owner's own token is the proof; what is recorded comes from it, not from the API
    async with small_world.api_pool.acquire() as conn:
        deleted = await conn.fetchval(DELETE, uuid.uuid4(), "bearer", token("u-owner"), "owner", "mine")
    assert deleted == 30
    ledger = await small_world.fetch("SELECT requested_by, identity_type, basis FROM deletion_requests")
    assert [tuple(r.values()) for r in ledger] == [("u-owner", "user", "owner")]


def _signing_key(algorithm: str) -> Any:
    """A fresh private key of the kind `algorithm` signs with: RSA 2048, or P-256 for ES256."""
    if algorithm == "ES256":
        return ec_key.generate_private_key(ec_key.SECP256R1())
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.mark.parametrize("algorithm", ["RS256", "RS512", "ES256"])
async def test_public_key_tokens_are_verified_by_the_database(
    app_factory: Any, small_world: World, algorithm: str
) -> None:
    key = _signing_key(algorithm)
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    overrides = {"jwt_algorithm": algorithm, "jwt_key": Secret(public.decode())}
    conn = await small_world.admin()
    try:
        await install(conn, token_trust(api_settings(**overrides)))
    finally:
        await conn.close()
    client, _ = await app_factory(small_world, **overrides)
    owner = jwt.encode(_claims("u-owner"), key, algorithm=algorithm)
    r = await client.post("/v1/rooms/room-a/deletions", headers={"Authorization": f"Bearer {owner}"})
    assert (r.status_code, r.json().get("rows_deleted")) == (201, 30), r.text
    # signed by another key, or its signature altered: the API refuses it, and so does the database on its own
    forged = jwt.encode(_claims("u-owner-b"), _signing_key(algorithm), algorithm=algorithm)
    head, claims, sig = jwt.encode(_claims("u-owner-b"), key, algorithm=algorithm).split(".")
    flipped = f"{head}.{claims}.{sig[:10]}{'A' if sig[10] != 'A' else 'B'}{sig[11:]}"
    async with small_world.api_pool.acquire() as api_conn:
        for bad in (forged, flipped, f"{head}.{claims}.{sig[:40]}"):
            with pytest.raises(asyncpg.InvalidAuthorizationSpecificationError, match="signature"):
                await api_conn.fetchval(
                    "SELECT api_delete_room_logs($1, 'room-b', 'bearer', $2, 'owner', 'x')", uuid.uuid4(), bad
                )
        # a token of another algorithm (an HS256 one under the shared secret of the tests' world) is refused
        with pytest.raises(asyncpg.InvalidAuthorizationSpecificationError, match=f"signed with {algorithm}"):
            await api_conn.fetchval(
                "SELECT api_delete_room_logs($1, 'room-b', 'bearer', $2, 'owner', 'x')",
                uuid.uuid4(),
                token("u-owner-b"),
            )
    assert await _count(small_world) == 30


async def test_a_console_session_is_the_proof_and_only_a_verified_token_opens_one(
    app_factory: Any, small_world: World
) -> None:
    client, _ = await app_factory(small_world, session_cookie_secure=False)
    signed_in = await client.post("/v1/session", headers=bearer("u-owner"))
    assert signed_in.status_code == 201, signed_in.text
    csrf = signed_in.json()["csrf_token"]
    r = await client.post("/v1/rooms/room-a/deletions", headers={"X-CSRF-Token": csrf})
    assert (r.status_code, r.json().get("rows_deleted")) == (201, 30), r.text
    # staff state their case on the session, then erase through it
    staff_client, _ = await app_factory(small_world, session_cookie_secure=False)
    staff_in = await staff_client.post("/v1/session", headers=bearer("s-staff", roles=["support_staff"]))
    staff_csrf = staff_in.json()["csrf_token"]
    stated = await staff_client.put(
        "/v1/session/reason", json={"reason": STAFF_TICKET}, headers={"X-CSRF-Token": staff_csrf}
    )
    assert stated.status_code == 200, stated.text
    erased = await staff_client.post("/v1/users/u-chat/erasures", headers={"X-CSRF-Token": staff_csrf})
    assert erased.status_code == 201, erased.text
    ledger = await small_world.fetch(
        "SELECT kind, requested_by, identity_type, reason FROM deletion_requests ORDER BY seq"
    )
    assert [tuple(d.values()) for d in ledger] == [
        ("room_logs", "u-owner", "user", "owner request"),
        ("user_chat_erasure", "s-staff", "staff", STAFF_TICKET),
    ]
    sessions = await small_world.fetch(
        "SELECT subject, identity_type FROM console_sessions ORDER BY created_at"
    )
    assert [tuple(s.values()) for s in sessions] == [("u-owner", "user"), ("s-staff", "staff")]
    # a token the database's key does not verify opens no session, even through the API's own role
    async with small_world.api_pool.acquire() as conn:
        with pytest.raises(asyncpg.InvalidAuthorizationSpecificationError):
            await conn.fetchval(
                "SELECT api_open_session($1, sha256('y'), 3600)", token("u-owner", key="k" * 64)
            )


async def test_without_a_key_in_the_database_deletion_and_sign_in_say_what_to_run(
    app_factory: Any, small_world: World
) -> None:
    conn = await small_world.admin()
    try:
        await conn.execute("DELETE FROM token_trust")
    finally:
        await conn.close()
    client, _ = await app_factory(small_world, session_cookie_secure=False)
    for r in (
        await client.post("/v1/rooms/room-a/deletions", headers=bearer("u-owner")),
        await client.post("/v1/session", headers=bearer("u-owner")),
    ):
        assert (r.status_code, r.json()["error"]["code"]) == (503, "unavailable")
        assert "roomlogs api trust-key" in r.json()["error"]["message"]
    assert await _count(small_world) == 60


def _trust_key(settings: Settings) -> int:
    parser = argparse.ArgumentParser(prog="roomlogs")
    add_commands(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["api", "trust-key"])
    return COMMANDS["api"](settings, args)


async def test_trust_key_installs_the_apis_key_as_the_owner_only(
    small_world: World, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    monkeypatch.setenv("ROOMLOGS_API_JWT_ALGORITHM", "RS256")
    monkeypatch.setenv("ROOMLOGS_API_JWT_KEY", public.decode())
    monkeypatch.setenv("ROOMLOGS_API_SESSION_TTL_SECONDS", "600")
    owner = Settings(postgres_dsn=Secret(small_world.dsn), postgres_schema=small_world.schema)
    assert await asyncio.to_thread(_trust_key, owner) == 0
    assert "the database now verifies RS256 tokens" in capsys.readouterr().out
    rows = await small_world.fetch("SELECT algorithm, rsa_e, rsa_bytes, session_max_seconds FROM token_trust")
    assert [tuple(r.values()) for r in rows] == [("RS256", 65537, 256, 600)]
    # the owner's RS256 token now deletes; the old HS256 key no longer proves anything
    async with small_world.api_pool.acquire() as conn:
        with pytest.raises(asyncpg.InvalidAuthorizationSpecificationError):
            await conn.fetchval(DELETE, uuid.uuid4(), "bearer", token("u-owner"), "owner", "x")
        owner_token = jwt.encode(_claims("u-owner"), key, algorithm="RS256")
        assert await conn.fetchval(DELETE, uuid.uuid4(), "bearer", owner_token, "owner", "x") == 30
    # the API's own role may not install a key
    as_api = owner.replace(postgres_dsn=Secret(small_world.api_dsn))
    with pytest.raises(ConfigurationError, match="only the schema's owner"):
        await asyncio.to_thread(_trust_key, as_api)
    # keys the database cannot verify are refused with the reason: ES384 (P-384), and ES256 with a P-384 key
    ec = ec_key.generate_private_key(ec_key.SECP384R1()).public_key()
    pem = ec.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    monkeypatch.setenv("ROOMLOGS_API_JWT_KEY", pem.decode())
    monkeypatch.setenv("ROOMLOGS_API_JWT_ALGORITHM", "ES384")
    with pytest.raises(ConfigurationError, match="RS256/384/512 and ES256 tokens only"):
        await asyncio.to_thread(_trust_key, owner)
    monkeypatch.setenv("ROOMLOGS_API_JWT_ALGORITHM", "ES256")
    with pytest.raises(ConfigurationError, match="needs a P-256"):
        await asyncio.to_thread(_trust_key, owner)
    # a P-256 key is installed as its point: an owner's ES256 token deletes (room-b: room-a's logs are gone)
    p256 = ec_key.generate_private_key(ec_key.SECP256R1())
    pem = p256.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    monkeypatch.setenv("ROOMLOGS_API_JWT_KEY", pem.decode())
    assert await asyncio.to_thread(_trust_key, owner) == 0
    assert "the database now verifies ES256 tokens" in capsys.readouterr().out
    rows = await small_world.fetch("SELECT algorithm, ec_x, ec_y, rsa_n FROM token_trust")
    point = p256.public_key().public_numbers()
    assert [tuple(r.values()) for r in rows] == [("ES256", point.x, point.y, None)]
    async with small_world.api_pool.acquire() as conn:
        with pytest.raises(asyncpg.InvalidAuthorizationSpecificationError, match="signed with ES256"):
            await conn.fetchval(DELETE, uuid.uuid4(), "bearer", owner_token, "owner", "x")
        es_token = jwt.encode(_claims("u-owner-b"), p256, algorithm="ES256")
        room_b = "SELECT api_delete_room_logs($1, 'room-b', 'bearer', $2, 'owner', 'x')"
        assert await conn.fetchval(room_b, uuid.uuid4(), es_token) == 30
