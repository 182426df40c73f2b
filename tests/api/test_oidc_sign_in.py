"""Single sign-on against a real OpenID Connect provider (mock-oauth2-server, run here: oidc_provider.py).

Each test signs in the way a browser does: the console's start route, the provider's login form, the
provider's redirect back to the callback, then reads with the session cookie it got. The database
verifies the ID token itself with the keys `roomlogs api trust-key` installed (`install_oidc`).
"""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import time
from collections.abc import Iterator
from html.parser import HTMLParser
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import asyncpg
import httpx
import jwt
import pytest
from api_world import World, bearer
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from oidc_provider import OidcProvider, ec_jwk, rsa_jwk

from pipeline.api.context import ApiState
from pipeline.api.errors import InvalidToken
from pipeline.api.queries.sessions import end_all_sessions
from pipeline.api.security.headers import PAGE_SECURITY_HEADERS
from pipeline.api.trust import install_oidc, oidc_keys
from pipeline.console.pages import CONTENT_SECURITY_POLICY

CLIENT_ID = "roomlogs-console"
CALLBACK = "http://api/v1/session/oidc/callback"
STAFF = {"roles": ["support_staff"]}


@pytest.fixture(scope="module")
def provider(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OidcProvider]:
    running = OidcProvider(tmp_path_factory.mktemp("oidc"))
    running.start()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def es256_provider(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OidcProvider]:
    """A provider whose only key is a P-256 key: it signs ID tokens with ES256."""
    running = OidcProvider(tmp_path_factory.mktemp("oidc-es256"), algorithm="ES256")
    running.start()
    try:
        yield running
    finally:
        running.stop()


async def _trust(world: World, provider: OidcProvider, state: ApiState) -> None:
    """`roomlogs api trust-key`'s single sign-on half, as the schema's owner."""
    async with httpx.AsyncClient(timeout=10) as http:
        jwks = (await http.get(provider.issuer + "/jwks")).json()
    conn = await world.admin()
    try:
        await install_oidc(conn, state.settings, provider.issuer, oidc_keys(jwks))
    finally:
        await conn.close()


async def _app(
    app_factory: Any, world: World, provider: OidcProvider, **overrides: Any
) -> tuple[httpx.AsyncClient, ApiState]:
    settings = {
        "oidc_issuer": provider.issuer,
        "oidc_client_id": CLIENT_ID,
        "oidc_redirect_url": CALLBACK,
        "oidc_jwks_refetch_seconds": 0.0,
        "session_cookie_secure": False,
        **overrides,
    }
    client, state = await app_factory(world, **settings)
    await _trust(world, provider, state)
    return client, state


async def _start(client: httpx.AsyncClient, next_page: str = "/console/") -> str:
    started = await client.get("/v1/session/oidc/start", params={"next": next_page})
    assert started.status_code == 302, started.text
    return started.headers["location"]


async def _sign_in(
    client: httpx.AsyncClient, provider: OidcProvider, user: str, claims: dict[str, object] | None = None
) -> httpx.Response:
    back = provider.log_in(await _start(client), user, claims or {})
    return await client.get(back)


def _with_query(url: str, **changes: str) -> str:
    parts = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    return urlunsplit(parts._replace(query=urlencode({**query, **changes})))


async def test_sign_in_end_to_end(app_factory: Any, small_world: World, provider: OidcProvider) -> None:
    client, _ = await _app(app_factory, small_world, provider)
    info = (await client.get("/v1/session/oidc")).json()
    assert info["enabled"] and info["provider"] == urlsplit(provider.issuer).netloc
    assert info["end_session_url"].startswith(provider.issuer + "/endsession?")
    assert "post_logout_redirect_uri=http%3A%2F%2Fapi%2Fconsole%2Fsign-in" in info["end_session_url"]
    authorize = await _start(client, "/console/rooms/room-a/")
    query = parse_qs(urlsplit(authorize).query)
    assert query["code_challenge_method"] == ["S256"] and query["client_id"] == [CLIENT_ID]
    assert query["scope"][0].split()[0] == "openid" and len(query["nonce"][0]) >= 32
    back = await client.get(provider.log_in(authorize, "u-owner", {}))
    assert back.status_code == 303 and back.headers["location"] == "/console/rooms/room-a/", back.text
    assert "HttpOnly" in back.headers["set-cookie"] and back.headers["cache-control"] == "no-store"
    me = (await client.get("/v1/session")).json()
    assert (me["subject"], me["kind"], me["session"]) == ("u-owner", "user", True)
    rooms = await client.get("/v1/me/rooms")
    assert rooms.status_code == 200 and "room-a" in rooms.text
    [row] = await small_world.fetch(
        "SELECT subject, identity_type, outcome FROM access_audit WHERE request_id = $1",
        back.headers["x-request-id"],
    )
    assert (row["subject"], row["identity_type"], row["outcome"]) == ("u-owner", "user", "ok")


async def test_wrong_state_is_refused(app_factory: Any, small_world: World, provider: OidcProvider) -> None:
    client, _ = await _app(app_factory, small_world, provider)
    back = provider.log_in(await _start(client), "u-owner", {})
    refused = await client.get(_with_query(back, state="someone-elses-state"))
    assert refused.status_code == 401 and "state" in refused.json()["error"]["message"]
    # a callback in a browser that started no sign-in
    client.cookies.clear()
    assert (await client.get(back)).status_code == 401
    assert (await client.get("/v1/session")).status_code == 401


async def test_wrong_nonce_is_refused(app_factory: Any, small_world: World, provider: OidcProvider) -> None:
    client, _ = await _app(app_factory, small_world, provider)
    authorize = _with_query(await _start(client), nonce="a-nonce-of-another-sign-in-" + "x" * 20)
    refused = await client.get(provider.log_in(authorize, "u-owner", {}))
    assert refused.status_code == 401 and "nonce" in refused.json()["error"]["message"], refused.text


async def test_a_replayed_code_opens_no_second_session(
    app_factory: Any, small_world: World, provider: OidcProvider
) -> None:
    client, _ = await _app(app_factory, small_world, provider)
    back = provider.log_in(await _start(client), "u-owner", {})
    login_cookies = dict(client.cookies)
    assert (await client.get(back)).status_code == 303
    # the same redirect again, with the login cookie put back (an attacker holding both)
    replay = httpx.AsyncClient(transport=client._transport, base_url="http://api", cookies=login_cookies)
    async with replay:
        again = await replay.get(back)
    # refused either way: this provider drops the nonce from a second exchange of a code (the ID token is
    # not for this sign-in), another may give the same nonce again (the database has it as used)
    assert again.status_code == 401, again.text
    assert any(w in again.json()["error"]["message"] for w in ("nonce", "already opened a session"))
    [n] = [r["n"] for r in await small_world.fetch("SELECT count(*) AS n FROM console_sessions")]
    assert n == 1


async def test_an_expired_id_token_is_refused(
    app_factory: Any, small_world: World, provider: OidcProvider
) -> None:
    client, _ = await _app(app_factory, small_world, provider)
    hour_ago = int(time.time()) - 3600
    refused = await _sign_in(client, provider, "u-owner", {"exp": hour_ago, "iat": hour_ago - 60})
    assert refused.status_code == 401, refused.text
    assert refused.json()["error"]["code"] == "token_expired"


async def test_a_key_rotation_refetches_the_keys_once_and_an_unknown_key_is_refused(
    app_factory: Any, small_world: World, provider: OidcProvider
) -> None:
    client, state = await _app(app_factory, small_world, provider, oidc_jwks_refetch_seconds=60.0)
    oidc = state.oidc
    assert oidc is not None
    assert (await _sign_in(client, provider, "u-owner")).status_code == 303
    assert oidc.jwks_fetches == 1
    # a token signed by a key the provider does not publish: the keys are fetched again once, then refused
    private, _ = rsa_jwk()
    now = int(time.time())
    claims = {"sub": "u-owner", "iss": provider.issuer, "aud": CLIENT_ID, "iat": now, "exp": now + 60}
    forged = jwt.encode({**claims, "nonce": "n"}, private, algorithm="RS256", headers={"kid": "rotated-away"})
    oidc._keys_fetched_at = float("-inf")  # as if the last fetch were long ago
    with pytest.raises(InvalidToken, match="does not publish"):
        await oidc.verify_id_token(forged, "n")
    assert oidc.jwks_fetches == 2
    with pytest.raises(InvalidToken):  # and not again within oidc_jwks_refetch_seconds
        await oidc.verify_id_token(forged, "n")
    assert oidc.jwks_fetches == 2
    # the provider rotates its signing key: the API fetches the new key once and verifies with it; the
    # database does not know it until `roomlogs api trust-key` runs again (503, with that fix)
    provider.restart()
    oidc._keys_fetched_at = float("-inf")
    client.cookies.clear()
    unknown_to_db = await _sign_in(client, provider, "u-owner")
    assert oidc.jwks_fetches == 3
    assert unknown_to_db.status_code == 503 and "trust-key" in unknown_to_db.json()["error"]["message"]
    await _trust(small_world, provider, state)
    assert (await _sign_in(client, provider, "u-owner")).status_code == 303
    assert oidc.jwks_fetches == 3


async def test_a_user_whose_staff_role_was_removed_signs_in_as_a_user(
    app_factory: Any, small_world: World, provider: OidcProvider
) -> None:
    client, _ = await _app(app_factory, small_world, provider)
    assert (await _sign_in(client, provider, "s-staff", STAFF)).status_code == 303
    assert (await client.get("/v1/session")).json()["kind"] == "staff"
    client.cookies.clear()
    assert (await _sign_in(client, provider, "s-staff", {"roles": []})).status_code == 303
    me = (await client.get("/v1/session")).json()
    assert (me["subject"], me["kind"]) == ("s-staff", "user")
    csrf = {"X-CSRF-Token": me["csrf_token"]}
    stated = await client.put("/v1/session/reason", json={"reason": "SUP-1"}, headers=csrf)
    assert stated.status_code == 403


async def test_after_end_sessions_an_id_token_issued_before_opens_no_session(
    app_factory: Any, small_world: World, provider: OidcProvider
) -> None:
    """`roomlogs api end-sessions` (after a restore from a backup, which forgets the sign-ins used since):
    single sign-on refuses an ID token issued before it, as the bearer path does (migration 0023)."""
    client, _ = await _app(app_factory, small_world, provider)
    assert (await _sign_in(client, provider, "u-owner")).status_code == 303
    conn = await small_world.admin()
    try:
        assert await end_all_sessions(conn) == 1
    finally:
        await conn.close()
    assert (await client.get("/v1/session")).status_code == 401
    client.cookies.clear()
    early = await _sign_in(client, provider, "u-owner", {"iat": int(time.time()) - 5})
    assert early.status_code == 401 and "signed out" in early.json()["error"]["message"], early.text
    client.cookies.clear()
    await asyncio.sleep(1.1)  # iat has whole seconds
    assert (await _sign_in(client, provider, "u-owner")).status_code == 303


# --- ES256: a provider that signs with a P-256 key only -----------------------------------------------
#: P-256's group order
P256_N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


def _raw_signature(key: ec.EllipticCurvePrivateKey, message: bytes) -> bytes:
    """The JWS form of an ES256 signature: r || s, 32 bytes each."""
    r, s = decode_dss_signature(key.sign(message, ec.ECDSA(hashes.SHA256())))
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _resigned(id_token: str, key: ec.EllipticCurvePrivateKey, **claims: object) -> str:
    """The ID token with `claims` changed, signed by `key` (the provider's key id kept)."""
    header, payload, _ = id_token.split(".")
    body = json.loads(base64.urlsafe_b64decode(payload + "=="))
    payload = _b64(json.dumps({**body, **claims}).encode())
    return f"{header}.{payload}." + _b64(_raw_signature(key, f"{header}.{payload}".encode()))


def _provider_id_token(provider: OidcProvider, user: str, nonce: str) -> str:
    """An ID token exactly as the provider issues it: its login form, then its token endpoint."""
    authorize = provider.issuer + "/authorize?" + urlencode(
        {"client_id": CLIENT_ID, "redirect_uri": CALLBACK, "response_type": "code", "scope": "openid",
         "state": "s", "nonce": nonce}
    )  # fmt: skip
    code = parse_qs(urlsplit(provider.log_in(authorize, user, {})).query)["code"][0]
    answer = httpx.post(
        provider.issuer + "/token",
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": CALLBACK,
            "client_id": CLIENT_ID,
        },
        timeout=10,
    )
    assert answer.status_code == 200, answer.text
    return str(answer.json()["id_token"])


async def test_the_database_verifies_p256_signatures(small_world: World) -> None:
    """The database's ES256 arithmetic (migration 0025) against signatures made by `cryptography`."""
    conn = await small_world.admin()
    try:

        async def verifies(x: int, y: int, signature: bytes, message: bytes) -> bool:
            return bool(
                await conn.fetchval(
                    "SELECT roomlogs_p256_verify($1::text::numeric, $2::text::numeric, $3, $4)",
                    str(x),
                    str(y),
                    signature,
                    message,
                )
            )

        other = ec.generate_private_key(ec.SECP256R1()).public_key().public_numbers()
        for _ in range(4):
            key = ec.generate_private_key(ec.SECP256R1())
            point = key.public_key().public_numbers()
            message = secrets.token_bytes(secrets.randbelow(300) + 1)
            signature = _raw_signature(key, message)
            r, s = int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
            started = time.perf_counter()
            assert await verifies(point.x, point.y, signature, message)
            print(f"ES256 verified in SQL in {(time.perf_counter() - started) * 1000:.0f} ms")
            assert not await verifies(point.x, point.y, signature, message + b"!")
            assert not await verifies(other.x, other.y, signature, message)
            flipped = bytes([signature[0] ^ 1]) + signature[1:]
            assert not await verifies(point.x, point.y, flipped, message)
            tail_flipped = signature[:-1] + bytes([signature[-1] ^ 1])
            assert not await verifies(point.x, point.y, tail_flipped, message)
            assert not await verifies(point.x, point.y, signature[:63], message)
            for bad_r, bad_s in ((0, s), (r, 0), (r + P256_N, s), (r, s + P256_N)):
                if bad_r < 2**256 and bad_s < 2**256:
                    forged = bad_r.to_bytes(32, "big") + bad_s.to_bytes(32, "big")
                    assert not await verifies(point.x, point.y, forged, message)
            assert not await verifies(point.x, point.y + 1, signature, message)  # a point off the curve
    finally:
        await conn.close()


async def test_an_es256_provider_signs_in_end_to_end(
    app_factory: Any, small_world: World, es256_provider: OidcProvider
) -> None:
    client, _ = await _app(app_factory, small_world, es256_provider)
    [key] = await small_world.fetch("SELECT kid, algorithm, ec_x, rsa_n FROM token_trust_oidc_keys")
    assert (key["algorithm"], key["rsa_n"]) == ("ES256", None) and key["ec_x"] is not None
    back = await _sign_in(client, es256_provider, "u-owner")
    assert back.status_code == 303 and back.headers["location"] == "/console/", back.text
    me = (await client.get("/v1/session")).json()
    assert (me["subject"], me["kind"], me["session"]) == ("u-owner", "user", True)
    rooms = await client.get("/v1/me/rooms")
    assert rooms.status_code == 200 and "room-a" in rooms.text
    client.cookies.clear()
    staff = await _sign_in(client, es256_provider, "s-staff", STAFF)
    assert staff.status_code == 303 and (await client.get("/v1/session")).json()["kind"] == "staff"


async def test_the_database_opens_sessions_only_for_es256_id_tokens_the_provider_signed(
    app_factory: Any, small_world: World, es256_provider: OidcProvider
) -> None:
    """The API's own role, holding an ID token the provider really issued, cannot change who it names or
    sign one of its own: the database verifies ES256 itself."""
    _, state = await _app(app_factory, small_world, es256_provider)
    genuine = _provider_id_token(es256_provider, "u-guest", secrets.token_urlsafe(16))
    assert jwt.get_unverified_header(genuine)["alg"] == "ES256"
    impostor, _ = ec_jwk()
    header, payload, signature = genuine.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    as_owner = f"{header}.{_b64(json.dumps({**claims, 'sub': 'u-owner'}).encode())}.{signature}"
    forged = [
        as_owner,  # the provider's signature over other claims
        _resigned(genuine, impostor, sub="u-owner", nonce=secrets.token_urlsafe(16)),  # another key
        _resigned(genuine, impostor, nonce=secrets.token_urlsafe(16)),
    ]
    async with small_world.api_pool.acquire() as conn:
        for token in forged:
            with pytest.raises(
                asyncpg.InvalidAuthorizationSpecificationError, match="signature does not verify"
            ):
                await conn.fetchval(
                    "SELECT api_open_oidc_session($1, $2, 60)", token, secrets.token_bytes(32)
                )
        opened = await conn.fetchval(
            "SELECT api_open_oidc_session($1, $2, 60)", genuine, secrets.token_bytes(32)
        )
    assert opened is not None
    [row] = await small_world.fetch("SELECT subject FROM console_sessions")
    assert row["subject"] == "u-guest"
    assert state.oidc is not None


# --- refusals a person's browser meets: a page, not JSON ------------------------------------------------
BROWSER = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,*/*;q=0.8"}


class _Page(HTMLParser):
    """What a person sees on a page: its text by element id, its links, and every tag used."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.links: list[str] = []
        self.text: dict[str, str] = {}
        self._open: list[str | None] = []
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        named = dict(attrs)
        if tag == "a" and named.get("href"):
            self.links.append(str(named["href"]))
        if tag not in ("meta", "link", "br"):
            self._open.append(named.get("id"))

    def handle_endtag(self, tag: str) -> None:
        if self._open and tag not in ("meta", "link", "br"):
            self._open.pop()

    def handle_data(self, data: str) -> None:
        for element in self._open:
            if element:
                self.text[element] = self.text.get(element, "") + data


def _shown(answer: httpx.Response) -> _Page:
    assert answer.headers["content-type"].startswith("text/html"), answer.text
    for name, value in PAGE_SECURITY_HEADERS.items():  # the console's page headers, its strict CSP
        assert answer.headers[name.lower()] == value
    assert answer.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert answer.headers["x-frame-options"] == "DENY"
    assert answer.headers["cache-control"] == "no-store"
    page = _Page(answer.text)
    assert "script" not in page.tags and "/console/sign-in" in page.links
    assert answer.headers["x-request-id"] in answer.text  # a reference to quote
    return page


async def test_a_browser_is_told_in_plain_words_why_sign_in_failed(
    app_factory: Any, small_world: World, provider: OidcProvider
) -> None:
    client, _ = await _app(app_factory, small_world, provider)
    # the provider refused (the person cancelled), with markup in what it sent back: shown as text
    client.cookies.clear()
    await _start(client)
    denied = await client.get(
        "/v1/session/oidc/callback", params={"error": "access_denied<b>x</b>", "state": "s"}, headers=BROWSER
    )
    assert denied.status_code == 401
    page = _shown(denied)
    assert "b" not in page.tags
    said = "(the identity provider said: access_denied<b>x</b>)."
    assert page.text["what-happened"] == f"{urlsplit(provider.issuer).netloc} did not sign you in {said}"
    denied = await client.get(
        "/v1/session/oidc/callback", params={"error": "access_denied", "state": "s"}, headers=BROWSER
    )
    assert "cancelled, or refused" in _shown(denied).text["what-happened"]
    # another browser's state
    back = provider.log_in(await _start(client), "u-owner", {})
    wrong = await client.get(_with_query(back, state="someone-elses-state"), headers=BROWSER)
    assert wrong.status_code == 401
    assert _shown(wrong).text["what-happened"] == (
        "The sign-in's state does not match this browser's; sign in again."
    )
    # an ID token that expired before it reached the console
    hour_ago = int(time.time()) - 3600
    back = provider.log_in(await _start(client), "u-owner", {"exp": hour_ago, "iat": hour_ago - 60})
    expired = await client.get(back, headers=BROWSER)
    assert expired.status_code == 401
    assert _shown(expired).text["what-happened"] == "The ID token has expired."
    # the code used once already: the redirect back again (the browser's Back button, a copied address)
    back = provider.log_in(await _start(client), "u-owner", {})
    assert (await client.get(back, headers=BROWSER)).status_code == 303
    replayed = await client.get(back, headers=BROWSER)
    assert replayed.status_code == 401
    assert "sign in again" in _shown(replayed).text["what-happened"]
    # each refusal is audited as the JSON answer was
    rows = await small_world.fetch(
        "SELECT http_status, outcome FROM access_audit WHERE action = 'session.oidc_callback' "
        "AND http_status = 401"
    )
    assert len(rows) == 5 and {r["outcome"] for r in rows} == {"denied"}


async def test_a_client_asking_for_json_gets_the_json_error(
    app_factory: Any, small_world: World, provider: OidcProvider
) -> None:
    client, _ = await _app(app_factory, small_world, provider)
    await _start(client)
    for accept in (
        "application/json",
        "application/json, text/html",
        "*/*",
        "text/html;q=0.5, application/json",
    ):
        answer = await client.get(
            "/v1/session/oidc/callback",
            params={"error": "access_denied", "state": "s"},
            headers={"Accept": accept},
        )
        assert answer.status_code == 401 and answer.headers["content-type"] == "application/json", accept
        assert "cancelled, or refused" in answer.json()["error"]["message"]
    # a browser's navigation elsewhere in the API still gets JSON: only sign-in's pages are for people
    assert (await client.get("/v1/me/rooms", headers=BROWSER)).headers["content-type"] == "application/json"


# --- signing out ends the provider's session too ------------------------------------------------------
async def test_signing_out_sends_the_browser_to_end_the_provider_session_with_its_id_token(
    app_factory: Any, small_world: World, provider: OidcProvider
) -> None:
    client, _ = await _app(app_factory, small_world, provider)
    assert (await _sign_in(client, provider, "u-owner")).status_code == 303
    csrf = {"X-CSRF-Token": (await client.get("/v1/session")).json()["csrf_token"]}
    signed_out = await client.delete("/v1/session", headers=csrf)
    assert signed_out.status_code == 200, signed_out.text
    end_session = signed_out.json()["end_session_url"]
    assert end_session.startswith(provider.issuer + "/endsession?")
    query = parse_qs(urlsplit(end_session).query)
    assert query["post_logout_redirect_uri"] == ["http://api/console/sign-in?signed_out=provider"]
    # the hint is the ID token the provider issued for this sign-in: its signature, this client, this user
    async with httpx.AsyncClient(timeout=10) as http:
        keys = jwt.PyJWKSet.from_dict((await http.get(provider.issuer + "/jwks")).json())
        hint = query["id_token_hint"][0]
        claims = jwt.decode(
            hint, keys[jwt.get_unverified_header(hint)["kid"]].key, algorithms=["RS256"], audience=CLIENT_ID
        )
        assert claims["sub"] == "u-owner" and claims["iss"] == provider.issuer
        # the provider takes it and sends the browser back to the console's signed-out page
        ended = await http.get(end_session)
    assert ended.status_code == 302
    assert ended.headers["location"] == "http://api/console/sign-in?signed_out=provider"
    # signed out here, and the hint is gone from the browser
    assert (await client.get("/v1/session")).status_code == 401
    assert not [name for name in client.cookies if "oidc_hint" in name]
    # the hint opens no session: the database let its sign-in open one only
    async with small_world.api_pool.acquire() as conn:
        with pytest.raises(asyncpg.UniqueViolationError, match="already opened a session"):
            await conn.fetchval("SELECT api_open_oidc_session($1, $2, 60)", hint, secrets.token_bytes(32))


async def test_signing_out_of_a_token_session_ends_no_provider_session(
    app_factory: Any, small_world: World, provider: OidcProvider
) -> None:
    """A session opened with a token (development) has no ID token to end the provider's session with:
    204, as before; a single sign-on's hint left in the browser is dropped when a token signs in."""
    client, _ = await _app(app_factory, small_world, provider)
    assert (await _sign_in(client, provider, "u-owner")).status_code == 303
    assert [name for name in client.cookies if "oidc_hint" in name]
    opened = await client.post("/v1/session", headers=bearer("u-owner"))
    assert opened.status_code == 201, opened.text
    assert not [name for name in client.cookies if "oidc_hint" in name]
    signed_out = await client.delete("/v1/session", headers={"X-CSRF-Token": opened.json()["csrf_token"]})
    assert signed_out.status_code == 204


async def test_signing_out_while_the_provider_is_unreachable_still_signs_out_here(
    app_factory: Any, small_world: World, provider: OidcProvider
) -> None:
    client, _ = await _app(app_factory, small_world, provider)
    assert (await _sign_in(client, provider, "u-owner")).status_code == 303
    csrf = {"X-CSRF-Token": (await client.get("/v1/session")).json()["csrf_token"]}
    # an API process started while the provider is down: it cannot learn where its sign-out is
    restarted, _ = await app_factory(
        small_world, oidc_issuer=provider.issuer, oidc_client_id=CLIENT_ID, oidc_redirect_url=CALLBACK,
        session_cookie_secure=False,
    )  # fmt: skip
    restarted.cookies = client.cookies
    provider.stop()
    try:
        signed_out = await restarted.delete("/v1/session", headers=csrf)
    finally:
        provider.start()
    assert signed_out.status_code == 204, signed_out.text
    assert (await client.get("/v1/session")).status_code == 401
