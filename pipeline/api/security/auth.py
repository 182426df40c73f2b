"""Who is calling: bearer tokens (JWT) to identities.

Called by the API for every request except /openapi.json, /healthz and /metrics. The key is configured,
the algorithm is pinned (a token whose header names another algorithm, "none" included, is refused before
any verification), `exp` and `sub` are required, `nbf`, `iss` and `aud` are enforced when present or
configured.

Claims the API reads:
- ``sub``: the platform user id, or the service's name (1..64 printable characters);
- ``kind``: ``"user"`` (default) or ``"service"``;
- ``roles``: a user's platform roles; the configured staff role (``support_staff``) makes them support staff;
- ``scope``: a service's space-separated scopes (see `Scope`); services have nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import jwt
from jwt.types import Options

from pipeline.api.errors import InvalidToken, TokenExpired, Unauthenticated
from pipeline.api.settings import ApiSettings
from pipeline.events.identifiers import ID_MAX_CHARS, is_identifier

_MAX_TOKEN_CHARS = 8192


class IdentityKind(StrEnum):
    USER = "user"
    STAFF = "staff"
    SERVICE = "service"


class Scope(StrEnum):
    """What a service identity may do; granted explicitly in its token, never implied."""

    ROOMS_READ = "rooms:read"
    ROOMS_EXPORT = "rooms:export"
    ROOMS_TAIL = "rooms:tail"
    MODERATION_READ = "moderation:read"


@dataclass(frozen=True, slots=True)
class Identity:
    subject: str
    kind: IdentityKind
    scopes: frozenset[Scope] = frozenset()

    @property
    def caller_key(self) -> str:
        """Key of this caller's rate limit and stream quota."""
        return f"{self.kind.value}:{self.subject}"


class TokenVerifier:
    def __init__(self, settings: ApiSettings) -> None:
        self.algorithm = settings.jwt_algorithm
        self._key: Any = jwt.get_algorithm_by_name(self.algorithm).prepare_key(settings.verification_key())
        self._issuer = settings.jwt_issuer or None
        self._audience = settings.jwt_audience or None
        self._leeway = settings.jwt_leeway_seconds
        self._staff_role = settings.staff_role
        required = ["exp", "sub"]
        if self._issuer:
            required.append("iss")
        if self._audience:
            required.append("aud")
        self._options: Options = {"require": required}

    def identify(self, authorization: str | None) -> Identity:
        """The identity an ``Authorization`` header proves; Unauthenticated / InvalidToken / TokenExpired."""
        if not authorization:
            raise Unauthenticated("a bearer token is required (Authorization: Bearer <token>)")
        scheme, _, token = authorization.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise Unauthenticated("use the Bearer scheme: Authorization: Bearer <token>")
        if len(token) > _MAX_TOKEN_CHARS:
            raise InvalidToken("the token is too long")
        try:
            return self._verify(token)
        except InvalidToken as e:
            e.unverified_subject = _claimed_subject(token)
            raise

    def _verify(self, token: str) -> Identity:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError:
            raise InvalidToken("the token is not a JWT") from None
        if header.get("alg") != self.algorithm:
            raise InvalidToken(f"tokens must be signed with {self.algorithm}")
        try:
            claims = jwt.decode(
                token,
                self._key,
                algorithms=[self.algorithm],
                issuer=self._issuer,
                audience=self._audience,
                leeway=self._leeway,
                options=self._options,
            )
        except jwt.ExpiredSignatureError:
            raise TokenExpired("the token has expired") from None
        except jwt.InvalidTokenError as e:
            raise InvalidToken(f"the token was refused: {e}") from None
        return self._identity(claims)

    def _identity(self, claims: dict[str, Any]) -> Identity:
        subject = claims.get("sub")
        if not isinstance(subject, str) or not is_identifier(subject):
            raise InvalidToken(f"sub must be 1..{ID_MAX_CHARS} printable characters")
        kind = claims.get("kind", "user")
        roles = claims.get("roles", [])
        if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
            raise InvalidToken("roles must be a list of strings")
        if kind == "service":
            if roles:
                raise InvalidToken("a service token carries scopes, not roles")
            scope = claims.get("scope", "")
            if not isinstance(scope, str):
                raise InvalidToken("scope must be a space-separated string")
            known = {s.value for s in Scope}
            scopes = frozenset(Scope(s) for s in scope.split() if s in known)
            return Identity(subject, IdentityKind.SERVICE, scopes)
        if kind != "user":
            raise InvalidToken("kind must be 'user' or 'service'")
        staff = self._staff_role in roles
        return Identity(subject, IdentityKind.STAFF if staff else IdentityKind.USER)


def _claimed_subject(token: str) -> str | None:
    """The `sub` a refused token claims, for the audit's record of who tried (never trusted)."""
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.InvalidTokenError:
        return None
    subject = claims.get("sub")
    return subject if isinstance(subject, str) and is_identifier(subject) else None
