"""A sign-in opens at most one console session (migration 0019); sign-in links point at the API's port.

Before, a token kept opening sessions after its session was signed out, for its whole lifetime: a sign-in
link left in a browser's history signed in whoever found it.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any
from urllib.parse import urlsplit

import jwt
import pytest
from api_world import JWT_KEY, World, api_settings, token

from pipeline.api.queries.sessions import end_all_sessions
from pipeline.api.trust import install, token_trust
from pipeline.cli.api import COMMANDS, add_commands
from pipeline.settings import Secret, Settings


async def test_a_token_opens_one_session_even_after_signing_out(app_factory: Any, small_world: World) -> None:
    client, _ = await app_factory(small_world, session_cookie_secure=False)
    once = token("u-owner")
    first = await client.post("/v1/session", headers={"Authorization": f"Bearer {once}"})
    assert first.status_code == 201, first.text
    csrf = first.json()["csrf_token"]
    assert (await client.delete("/v1/session", headers={"X-CSRF-Token": csrf})).status_code == 204
    client.cookies.clear()
    again = await client.post("/v1/session", headers={"Authorization": f"Bearer {once}"})
    assert again.status_code == 401 and again.json()["error"]["code"] == "invalid_token", again.text
    assert "already opened a session" in again.json()["error"]["message"]
    # the refusal is audited like any other
    [row] = await small_world.fetch(
        "SELECT outcome, http_status FROM access_audit WHERE request_id = $1", again.headers["x-request-id"]
    )
    assert (row["outcome"], row["http_status"]) == ("denied", 401)
    # a new sign-in (a new token) is welcome; the same token still works as a bearer token for reads
    fresh = await client.post("/v1/session", headers={"Authorization": f"Bearer {token('u-owner')}"})
    assert fresh.status_code == 201
    client.cookies.clear()
    reads = await client.get("/v1/me/rooms", headers={"Authorization": f"Bearer {once}"})
    assert reads.status_code == 200


async def test_a_token_without_jti_is_known_by_its_hash(app_factory: Any, small_world: World) -> None:
    client, _ = await app_factory(small_world, session_cookie_secure=False)
    now = int(time.time())
    bare = jwt.encode({"sub": "u-owner", "iat": now, "exp": now + 60}, JWT_KEY, algorithm="HS256")
    assert (await client.post("/v1/session", headers={"Authorization": f"Bearer {bare}"})).status_code == 201
    client.cookies.clear()
    assert (await client.post("/v1/session", headers={"Authorization": f"Bearer {bare}"})).status_code == 401
    # what was recorded is forgotten once the token has expired (plus the leeway)
    [until] = [r["used_until"] for r in await small_world.fetch("SELECT used_until FROM used_sign_ins")][-1:]
    assert abs(until.timestamp() - (now + 60 + 30)) < 2


@pytest.mark.parametrize(
    ("environ", "argv", "netloc"),
    [
        ({}, [], "127.0.0.1:8080"),
        ({"ROOMLOGS_API_PORT": "8443"}, [], "127.0.0.1:8443"),
        ({"ROOMLOGS_API_PORT": "8443", "ROOMLOGS_API_HOST": "0.0.0.0"}, ["--port", "9100"], "127.0.0.1:9100"),
    ],
)
def test_sign_in_link_uses_the_port_the_api_serves_on(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    environ: dict[str, str],
    argv: list[str],
    netloc: str,
) -> None:
    monkeypatch.setenv("ROOMLOGS_API_JWT_KEY", JWT_KEY)
    monkeypatch.setenv("ROOMLOGS_API_JWT_ALGORITHM", "HS256")
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    parser = argparse.ArgumentParser(prog="roomlogs")
    add_commands(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["api", "sign-in-link", "--sub", "u-owner", *argv])
    assert COMMANDS["api"](Settings(), args) == 0
    link = capsys.readouterr().out.strip()
    assert urlsplit(link).netloc == netloc
    claims = jwt.decode(link.partition("#token=")[2], JWT_KEY, algorithms=["HS256"])
    assert len(claims["jti"]) >= 16  # its one session is recorded by this id


async def test_after_a_restore_or_a_new_token_key_end_sessions_signs_everyone_out(
    app_factory: Any, small_world: World
) -> None:
    """A database restored from a backup forgets what happened since: sessions signed out are live again and
    tokens used are unused again (until they expire). A token key replaced with `trust-key` leaves the
    sessions it opened open. `roomlogs api end-sessions` (the owner) signs every session out (README)."""
    client, _ = await app_factory(small_world, session_cookie_secure=False)
    once = token("u-owner")
    opened = await client.post("/v1/session", headers={"Authorization": f"Bearer {once}"})
    assert opened.status_code == 201
    cookies = dict(client.cookies)
    signed_out = await client.delete("/v1/session", headers={"X-CSRF-Token": opened.json()["csrf_token"]})
    assert signed_out.status_code == 204

    async def session_of(jar: dict[str, str]) -> int:
        client.cookies.clear()
        client.cookies.update(jar)
        return (await client.get("/v1/session")).status_code

    assert await session_of(cookies) == 401
    # what a restore from a backup taken before the sign-out and the sign-in gives back
    await small_world.fetch("UPDATE console_sessions SET ended_at = NULL")
    await small_world.fetch("DELETE FROM used_sign_ins")
    assert await session_of(cookies) == 200, "signed out, live again"
    client.cookies.clear()
    second = await client.post("/v1/session", headers={"Authorization": f"Bearer {once}"})
    assert second.status_code == 201, "the token opens a second session within its lifetime"

    # a new token key: sessions opened with the old one stay open (a rotation signs nobody out) ...
    conn = await small_world.admin()
    try:
        await install(conn, token_trust(api_settings(jwt_key=Secret("another-key-" + "n" * 52))))
        assert await session_of(cookies) == 200
        # ... until the owner signs everyone out
        assert await end_all_sessions(conn) == 2
        assert await end_all_sessions(conn) == 0
        await install(conn, token_trust(api_settings()))
    finally:
        await conn.close()
    assert await session_of(cookies) == 401
    # and no token issued before opens a session any more (used or not: the database cannot tell after a
    # restore); a token issued afterwards does (iat has whole seconds)
    client.cookies.clear()
    unused = token("u-owner")
    for old in (once, unused):
        refused = await client.post("/v1/session", headers={"Authorization": f"Bearer {old}"})
        assert refused.status_code == 401 and "signed out" in refused.json()["error"]["message"], refused.text
    await asyncio.sleep(1.1)
    assert (
        await client.post("/v1/session", headers={"Authorization": f"Bearer {token('u-owner')}"})
    ).status_code == 201
