"""Single sign-on with the platform's identity provider: OpenID Connect, authorization code flow with PKCE.

Who calls it: the sign-in routes (`pipeline.api.handlers.oidc`), built once per app when
ROOMLOGS_API_OIDC_ISSUER is set (`OidcClient.from_settings`). The flow:

1. `begin(next_page)`: a fresh ``state``, ``nonce`` and PKCE verifier (S256), kept in a short-lived login
   cookie signed with the cursor key (`LoginState`), and the provider's authorization URL to send the
   browser to;
2. `finish(code, state, cookie)`: the ``state`` must be the cookie's (else 401: another browser's or a
   forged callback), the code is exchanged at the token endpoint with the verifier (and the client secret
   of a confidential client), and the ID token is verified (`verify_id_token`): signature by the provider's
   JWKS (RS256/ES256; the ``alg`` must be the key's), ``iss``, ``aud`` (the client id), ``exp``/``iat``
   with the leeway, and the ``nonce`` of this login. Staff are the users whose `oidc_staff_claim` is, or
   lists, `oidc_staff_value` (ROOMLOGS_API_OIDC_STAFF_CLAIM/_VALUE), read at every sign-in: a user whose
   role was removed at the provider is a user at their next sign-in.

Keys: the JWKS is fetched on first use and kept; a token signed by a key id not in it refetches the JWKS
once (a rotation), at most every `oidc_jwks_refetch_seconds`, and is refused when the key is still unknown.
The database then opens the session only after verifying the same ID token itself with the keys
`roomlogs api trust-key` installed (migration 0019): a rotation needs that command run again.

Failures: what the caller or the provider's answer got wrong is `InvalidToken`/`Unauthenticated` (401); a
provider that cannot be reached or answers nonsense is `Unavailable` (503).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx
import jwt

from pipeline.api.errors import InvalidToken, TokenExpired, Unauthenticated, Unavailable
from pipeline.api.security.auth import Identity, IdentityKind
from pipeline.api.settings import ApiSettings
from pipeline.events.identifiers import ID_MAX_CHARS, is_identifier
from pipeline.settings import Secret

__all__ = ["ID_TOKEN_ALGORITHMS", "LoginState", "OidcClient", "ProviderMetadata", "SignedIn"]

#: What an ID token may be signed with.
ID_TOKEN_ALGORITHMS = frozenset({"RS256", "ES256"})
_MAX_COOKIE_CHARS = 2048


@dataclass(frozen=True, slots=True)
class ProviderMetadata:
    """The parts of /.well-known/openid-configuration the API uses."""

    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str
    end_session_endpoint: str | None


@dataclass(frozen=True, slots=True)
class LoginState:
    """One started sign-in, carried by the browser in a signed cookie until the provider sends it back."""

    state: str
    nonce: str
    verifier: str
    next_page: str
    expires: float

    @staticmethod
    def new(next_page: str, ttl_seconds: float, now: float) -> LoginState:
        return LoginState(
            secrets.token_urlsafe(32), secrets.token_urlsafe(32), secrets.token_urlsafe(48), next_page,
            now + ttl_seconds,
        )  # fmt: skip

    def seal(self, key: bytes) -> str:
        body = _b64(
            json.dumps([self.state, self.nonce, self.verifier, self.next_page, self.expires]).encode()
        )
        return body + "." + _b64(hmac.new(key, body.encode(), hashlib.sha256).digest())

    @staticmethod
    def open(sealed: str, key: bytes, now: float) -> LoginState:
        """The cookie's login; Unauthenticated when it is missing, forged or stale."""
        body, _, mac = sealed.partition(".")
        expected = _b64(hmac.new(key, body.encode(), hashlib.sha256).digest())
        if not sealed or len(sealed) > _MAX_COOKIE_CHARS or not hmac.compare_digest(mac, expected):
            raise Unauthenticated("no sign-in was started in this browser (or it was altered); sign in again")
        state, nonce, verifier, next_page, expires = json.loads(base64.urlsafe_b64decode(body + "=="))
        if now > float(expires):
            raise Unauthenticated("the sign-in took too long; sign in again")
        return LoginState(str(state), str(nonce), str(verifier), str(next_page), float(expires))

    def challenge(self) -> str:
        """PKCE S256 (RFC 7636): what the provider is told now, to check the verifier against later."""
        return _b64(hashlib.sha256(self.verifier.encode()).digest())


@dataclass(frozen=True, slots=True)
class SignedIn:
    identity: Identity
    id_token: str
    next_page: str


class OidcClient:
    def __init__(
        self,
        settings: ApiSettings,
        *,
        state_key: bytes,
        http: httpx.AsyncClient | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self._state_key = hmac.new(state_key, b"roomlogs oidc login", hashlib.sha256).digest()
        self._secret: Secret = settings.oidc_client_secret()
        self._http = http or httpx.AsyncClient(timeout=settings.oidc_http_timeout_seconds)
        self._clock = clock
        self._metadata: ProviderMetadata | None = None
        self._keys: dict[str, jwt.PyJWK] = {}
        self._keys_fetched_at = float("-inf")
        #: how often the provider's keys were fetched (for tests and the log)
        self.jwks_fetches = 0

    @property
    def provider_name(self) -> str:
        return self.settings.oidc_provider_name or urlsplit(self.settings.oidc_issuer).netloc

    async def aclose(self) -> None:
        await self._http.aclose()

    # --- the flow ------------------------------------------------------------------------------------------
    async def begin(self, next_page: str) -> tuple[str, str]:
        """(the provider's authorization URL, the login cookie's value) of a new sign-in."""
        meta = await self.metadata()
        login = LoginState.new(next_page, self.settings.oidc_login_ttl_seconds, self._clock())
        scopes = ["openid", *(s for s in self.settings.oidc_scopes.split() if s != "openid")]
        query = {
            "response_type": "code",
            "client_id": self.settings.oidc_client_id,
            "redirect_uri": self.settings.oidc_redirect_url,
            "scope": " ".join(scopes),
            "state": login.state,
            "nonce": login.nonce,
            "code_challenge": login.challenge(),
            "code_challenge_method": "S256",
        }
        separator = "&" if "?" in meta.authorization_endpoint else "?"
        return meta.authorization_endpoint + separator + urlencode(query), login.seal(self._state_key)

    async def finish(self, code: str, state: str, cookie: str) -> SignedIn:
        """The verified identity of a callback (see the module docstring)."""
        login = LoginState.open(cookie, self._state_key, self._clock())
        if not hmac.compare_digest(state.encode(), login.state.encode()):
            raise Unauthenticated("the sign-in's state does not match this browser's; sign in again")
        if not code or len(code) > 4096:
            raise Unauthenticated("the provider sent no authorization code")
        id_token = await self._exchange(code, login.verifier)
        identity = await self.verify_id_token(id_token, login.nonce)
        return SignedIn(identity, id_token, login.next_page)

    async def end_session_url(self, after_sign_out: str, id_token_hint: str | None = None) -> str | None:
        """Where to send the browser to end the provider's session too (None: the provider has no
        end_session_endpoint). With `id_token_hint`, the ID token the session was opened with (OpenID
        Connect RP-Initiated Logout 1.0), the provider knows whose session to end and may skip asking,
        and sends the browser back to `after_sign_out`."""
        meta = await self.metadata()
        if meta.end_session_endpoint is None:
            return None
        hint = {"id_token_hint": id_token_hint} if id_token_hint else {}
        query = urlencode(
            {**hint, "client_id": self.settings.oidc_client_id, "post_logout_redirect_uri": after_sign_out}
        )
        separator = "&" if "?" in meta.end_session_endpoint else "?"
        return meta.end_session_endpoint + separator + query

    # --- the provider ---------------------------------------------------------------------------------------
    async def metadata(self) -> ProviderMetadata:
        if self._metadata is None:
            issuer = self.settings.oidc_issuer.rstrip("/")
            doc = await self._get_json(issuer + "/.well-known/openid-configuration")
            try:
                meta = ProviderMetadata(
                    issuer=str(doc["issuer"]),
                    authorization_endpoint=str(doc["authorization_endpoint"]),
                    token_endpoint=str(doc["token_endpoint"]),
                    jwks_uri=str(doc["jwks_uri"]),
                    end_session_endpoint=str(doc["end_session_endpoint"])
                    if doc.get("end_session_endpoint")
                    else None,
                )
            except KeyError as e:
                raise Unavailable(f"the identity provider's configuration has no {e}") from None
            if meta.issuer.rstrip("/") != issuer:
                raise Unavailable(f"the identity provider names itself {meta.issuer!r}, not {issuer!r}")
            self._metadata = meta
        return self._metadata

    async def jwks(self) -> dict[str, Any]:
        """The provider's key set as published now (`roomlogs api trust-key` installs it)."""
        return await self._get_json((await self.metadata()).jwks_uri)

    async def verify_id_token(self, id_token: str, nonce: str) -> Identity:
        try:
            header = jwt.get_unverified_header(id_token)
        except jwt.InvalidTokenError:
            raise InvalidToken("the ID token is not a JWT") from None
        kid = header.get("kid")
        key = await self._key(kid if isinstance(kid, str) else "")
        if header.get("alg") not in ID_TOKEN_ALGORITHMS or header.get("alg") != key.algorithm_name:
            raise InvalidToken(f"ID tokens must be signed with {' or '.join(sorted(ID_TOKEN_ALGORITHMS))}")
        meta = await self.metadata()
        try:
            claims = self._decode(id_token, key, meta)
        except jwt.InvalidSignatureError:
            # the provider may have replaced the key under the same id: fetch the keys once more
            if not self._may_refetch():
                raise InvalidToken("the ID token's signature does not verify") from None
            await self._refresh_keys()
            key = await self._key(kid if isinstance(kid, str) else "")
            try:
                claims = self._decode(id_token, key, meta)
            except jwt.InvalidSignatureError:
                raise InvalidToken("the ID token's signature does not verify") from None
        if not hmac.compare_digest(str(claims["nonce"]).encode(), nonce.encode()):
            raise InvalidToken("the ID token is not for this sign-in (nonce)")
        return self._identity(claims)

    def _decode(self, id_token: str, key: jwt.PyJWK, meta: ProviderMetadata) -> dict[str, Any]:
        try:
            claims: dict[str, Any] = jwt.decode(
                id_token,
                key.key,
                algorithms=[key.algorithm_name],
                audience=self.settings.oidc_client_id,
                issuer=meta.issuer,
                leeway=self.settings.jwt_leeway_seconds,
                options={"require": ["exp", "iat", "sub", "iss", "aud", "nonce"]},
            )
        except jwt.ExpiredSignatureError:
            raise TokenExpired("the ID token has expired") from None
        except jwt.InvalidSignatureError:
            raise
        except jwt.InvalidTokenError as e:
            raise InvalidToken(f"the ID token was refused: {e}") from None
        return claims

    def _identity(self, claims: dict[str, Any]) -> Identity:
        subject = claims["sub"]
        if not isinstance(subject, str) or not is_identifier(subject):
            raise InvalidToken(f"sub must be 1..{ID_MAX_CHARS} printable characters")
        said = claims.get(self.settings.oidc_staff_claim) if self.settings.oidc_staff_claim else None
        wanted = self.settings.oidc_staff_value
        staff = said == wanted or (isinstance(said, list) and wanted in said)
        return Identity(subject, IdentityKind.STAFF if staff else IdentityKind.USER)

    async def _key(self, kid: str) -> jwt.PyJWK:
        key = self._keys.get(kid)
        if key is None and self._may_refetch():
            await self._refresh_keys()  # a key not seen before: the provider may have rotated its keys
            key = self._keys.get(kid)
        if key is None:
            raise InvalidToken("the ID token is signed by a key the identity provider does not publish")
        return key

    def _may_refetch(self) -> bool:
        return self._clock() - self._keys_fetched_at >= self.settings.oidc_jwks_refetch_seconds

    async def _refresh_keys(self) -> None:
        doc = await self.jwks()
        self.jwks_fetches += 1
        self._keys_fetched_at = self._clock()
        keys: dict[str, jwt.PyJWK] = {}
        for entry in doc.get("keys", []) if isinstance(doc.get("keys"), list) else []:
            if not isinstance(entry, dict) or entry.get("use", "sig") != "sig" or "kid" not in entry:
                continue
            try:
                keys[str(entry["kid"])] = jwt.PyJWK(entry, algorithm=entry.get("alg"))
            except jwt.PyJWTError:
                continue  # a key of a kind we do not verify with
        self._keys = keys

    async def _exchange(self, code: str, verifier: str) -> str:
        meta = await self.metadata()
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": self.settings.oidc_redirect_url,
            "client_id": self.settings.oidc_client_id,
            "code_verifier": verifier,
        }
        auth: httpx.Auth | httpx._client.UseClientDefault = httpx.USE_CLIENT_DEFAULT
        if self._secret.get():
            auth = httpx.BasicAuth(self.settings.oidc_client_id, self._secret.get())  # client_secret_basic
        try:
            answer = await self._http.post(meta.token_endpoint, data=form, auth=auth)
        except httpx.HTTPError as e:
            raise Unavailable(f"the identity provider cannot be reached: {type(e).__name__}") from None
        if answer.status_code in (400, 401):
            raise InvalidToken(
                "the identity provider refused the authorization code (used, expired or forged)"
            )
        if answer.status_code != 200:
            raise Unavailable(f"the identity provider's token endpoint answered {answer.status_code}")
        try:
            id_token = answer.json()["id_token"]
        except (ValueError, KeyError):
            raise Unavailable("the identity provider sent no ID token") from None
        if not isinstance(id_token, str):
            raise Unavailable("the identity provider sent no ID token")
        return id_token

    async def _get_json(self, url: str) -> dict[str, Any]:
        try:
            answer = await self._http.get(url)
            answer.raise_for_status()
            doc = answer.json()
        except (httpx.HTTPError, ValueError) as e:
            raise Unavailable(f"the identity provider's {urlsplit(url).path} cannot be read: {e}") from None
        if not isinstance(doc, dict):
            raise Unavailable(f"the identity provider's {urlsplit(url).path} is not a JSON object")
        return doc

    @staticmethod
    def from_settings(settings: ApiSettings, state_key: bytes) -> OidcClient | None:
        return OidcClient(settings, state_key=state_key) if settings.oidc_issuer else None


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()
