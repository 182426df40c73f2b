"""What the database verifies identities with: the identity provider's token key, in `token_trust`.

The deletion functions, and the opening of console sessions, check who asks themselves (migration 0010):
they verify the caller's bearer token, or the console session it opened, with the key installed here. Only
the schema's owner may read or write `token_trust`, so the API's own role cannot swap in a key of its own
and delete a room's logs in anyone's name.

Who calls it: `roomlogs api trust-key`, run as the schema's owner (ROOMLOGS_POSTGRES_DSN) with the API's
token settings (ROOMLOGS_API_JWT_*, ROOMLOGS_API_STAFF_ROLE, ROOMLOGS_API_SESSION_TTL_SECONDS): after
`roomlogs migrate` and whenever the key changes. For bearer tokens (`token_trust`) the database verifies
HS256/384/512 (the shared secret), RS256/384/512 (the provider's RSA public key) and ES256 (its P-256
public key, migration 0027); it has no arithmetic for PS*, ES384/512 or EdDSA, so with those keys deletions
and token sign-in are refused (ConfigurationError says so here). Single sign-on ID tokens
(`token_trust_oidc_keys`) may be RS256/384/512 or ES256 (P-256, migration 0025).
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from typing import Any

import asyncpg
import jwt

from pipeline.api.settings import HMAC_ALGORITHMS, ApiSettings
from pipeline.errors import ConfigurationError

__all__ = ["OIDC_ALGORITHMS", "OidcKey", "TokenTrust", "install", "install_oidc", "oidc_keys", "token_trust"]

#: What the database can verify in SQL besides HMAC: RSASSA-PKCS1-v1_5, and ECDSA on P-256 (0025, 0027).
RSA_ALGORITHMS = frozenset({"RS256", "RS384", "RS512"})
EC_ALGORITHMS = frozenset({"ES256"})


@dataclass(frozen=True, slots=True)
class TokenTrust:
    """One `token_trust` row."""

    algorithm: str
    hmac_key: bytes | None
    rsa_n: int | None
    rsa_e: int | None
    rsa_bytes: int | None
    #: ES256: the public key's point on P-256
    ec_x: int | None
    ec_y: int | None
    issuer: str
    audience: str
    leeway_seconds: float
    staff_role: str
    session_max_seconds: int

    @property
    def fingerprint(self) -> str:
        """Names the key without revealing it (SHA-256 of the secret, modulus or point), for messages."""
        if self.hmac_key is not None:
            material = self.hmac_key
        elif self.ec_x is not None:
            material = f"{self.ec_x},{self.ec_y}".encode()
        else:
            material = str(self.rsa_n).encode()
        return hashlib.sha256(material).hexdigest()[:16]


def token_trust(settings: ApiSettings) -> TokenTrust:
    """The row the API's settings call for; ConfigurationError when the database cannot verify that key."""
    algorithm = settings.jwt_algorithm
    key = settings.verification_key()
    base = TokenTrust(
        algorithm=algorithm,
        hmac_key=None,
        rsa_n=None,
        rsa_e=None,
        rsa_bytes=None,
        ec_x=None,
        ec_y=None,
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
        leeway_seconds=float(settings.jwt_leeway_seconds),
        staff_role=settings.staff_role,
        session_max_seconds=int(settings.session_ttl_seconds),
    )
    if algorithm in HMAC_ALGORITHMS:
        return dataclasses.replace(base, hmac_key=key.encode("utf-8"))
    if algorithm not in RSA_ALGORITHMS | EC_ALGORITHMS:
        raise ConfigurationError(
            f"ROOMLOGS_API_JWT_ALGORITHM={algorithm}: the database verifies HS256/384/512, RS256/384/512 "
            "and ES256 tokens only, so deletions and console sign-in would be refused; have the identity "
            "provider sign with an RSA key (RS256) or a P-256 key (ES256)"
        )
    from cryptography.hazmat.primitives.asymmetric.ec import SECP256R1, EllipticCurvePublicKey
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    try:
        public = load_pem_public_key(key.encode("utf-8"))
    except ValueError as e:
        raise ConfigurationError(f"ROOMLOGS_API_JWT_KEY is not a PEM public key: {e}") from e
    if algorithm in EC_ALGORITHMS:
        if not isinstance(public, EllipticCurvePublicKey) or not isinstance(public.curve, SECP256R1):
            raise ConfigurationError(f"ROOMLOGS_API_JWT_ALGORITHM={algorithm} needs a P-256 (EC) public key")
        point = public.public_numbers()
        return dataclasses.replace(base, ec_x=point.x, ec_y=point.y)
    if not isinstance(public, RSAPublicKey):
        raise ConfigurationError(f"ROOMLOGS_API_JWT_ALGORITHM={algorithm} needs an RSA public key")
    numbers = public.public_numbers()
    return dataclasses.replace(
        base, rsa_n=numbers.n, rsa_e=numbers.e, rsa_bytes=(numbers.n.bit_length() + 7) // 8
    )


async def install(conn: asyncpg.Connection, trust: TokenTrust) -> None:
    """Write the row (replacing the one before); needs the schema's owner."""
    await conn.execute(
        """INSERT INTO token_trust (singleton, algorithm, hmac_key, rsa_n, rsa_e, rsa_bytes, issuer, audience,
                                    leeway_seconds, staff_role, session_max_seconds, ec_x, ec_y)
           VALUES (true, $1, $2, $3::text::numeric, $4::text::numeric, $5, $6, $7, $8, $9, $10,
                   $11::text::numeric, $12::text::numeric)
           ON CONFLICT (singleton) DO UPDATE
              SET algorithm = EXCLUDED.algorithm, hmac_key = EXCLUDED.hmac_key, rsa_n = EXCLUDED.rsa_n,
                  rsa_e = EXCLUDED.rsa_e, rsa_bytes = EXCLUDED.rsa_bytes, ec_x = EXCLUDED.ec_x,
                  ec_y = EXCLUDED.ec_y, issuer = EXCLUDED.issuer,
                  audience = EXCLUDED.audience, leeway_seconds = EXCLUDED.leeway_seconds,
                  staff_role = EXCLUDED.staff_role, session_max_seconds = EXCLUDED.session_max_seconds,
                  installed_at = clock_timestamp(), installed_by = current_user""",
        trust.algorithm,
        trust.hmac_key,
        None if trust.rsa_n is None else str(trust.rsa_n),
        None if trust.rsa_e is None else str(trust.rsa_e),
        trust.rsa_bytes,
        trust.issuer,
        trust.audience,
        trust.leeway_seconds,
        trust.staff_role,
        trust.session_max_seconds,
        _text(trust.ec_x),
        _text(trust.ec_y),
    )


# --- single sign-on (migrations 0019, 0025) --------------------------------------------------------------
#: What the database verifies ID tokens with: RSA, and ECDSA on P-256 (migration 0025).
OIDC_ALGORITHMS = RSA_ALGORITHMS | {"ES256"}


@dataclass(frozen=True, slots=True)
class OidcKey:
    """One `token_trust_oidc_keys` row: a signing key the provider publishes (RSA: n, e; ES256: the point)."""

    kid: str
    algorithm: str
    rsa_n: int | None = None
    rsa_e: int | None = None
    ec_x: int | None = None
    ec_y: int | None = None

    @property
    def rsa_bytes(self) -> int | None:
        return None if self.rsa_n is None else (self.rsa_n.bit_length() + 7) // 8


def oidc_keys(jwks: dict[str, Any]) -> list[OidcKey]:
    """The provider's signing keys the database can verify with (its JWKS): RSA (RS256/384/512) and P-256
    (ES256) keys with a key id; ConfigurationError when it publishes none of them."""
    from cryptography.hazmat.primitives.asymmetric.ec import SECP256R1, EllipticCurvePublicKey
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey

    keys = []
    for entry in jwks.get("keys", []) if isinstance(jwks.get("keys"), list) else []:
        if (
            not isinstance(entry, dict)
            or entry.get("use", "sig") != "sig"
            or not isinstance(entry.get("kid"), str)
        ):
            continue
        kty = entry.get("kty")
        algorithm = str(entry.get("alg") or {"RSA": "RS256", "EC": "ES256"}.get(str(kty), ""))
        if algorithm not in OIDC_ALGORITHMS or kty != ("EC" if algorithm == "ES256" else "RSA"):
            continue
        try:
            public = jwt.PyJWK(entry, algorithm=algorithm).key  # an EC point off its curve is refused here
        except jwt.PyJWTError:
            continue
        if isinstance(public, RSAPublicKey):
            numbers = public.public_numbers()
            keys.append(OidcKey(entry["kid"], algorithm, rsa_n=numbers.n, rsa_e=numbers.e))
        elif isinstance(public, EllipticCurvePublicKey) and isinstance(public.curve, SECP256R1):
            point = public.public_numbers()
            keys.append(OidcKey(entry["kid"], algorithm, ec_x=point.x, ec_y=point.y))
    if not keys:
        raise ConfigurationError(
            "the identity provider publishes no signing key the database can verify ID tokens with (RSA "
            "for RS256/384/512 or P-256 for ES256, with a key id); have the provider sign ID tokens with "
            "RS256 or ES256"
        )
    return keys


async def install_oidc(
    conn: asyncpg.Connection, settings: ApiSettings, issuer: str, keys: list[OidcKey]
) -> None:
    """Replace the trusted provider and all its keys (keys no longer published are dropped); needs the
    schema's owner. Run again after the provider rotates its keys."""
    async with conn.transaction():
        await conn.execute(
            """INSERT INTO token_trust_oidc (singleton, issuer, client_id, staff_claim, staff_value,
                                            leeway_seconds)
               VALUES (true, $1, $2, $3, $4, $5)
               ON CONFLICT (singleton) DO UPDATE
                  SET issuer = EXCLUDED.issuer, client_id = EXCLUDED.client_id,
                      staff_claim = EXCLUDED.staff_claim, staff_value = EXCLUDED.staff_value,
                      leeway_seconds = EXCLUDED.leeway_seconds, installed_at = clock_timestamp(),
                      installed_by = current_user""",
            issuer,
            settings.oidc_client_id,
            settings.oidc_staff_claim,
            settings.oidc_staff_value,
            float(settings.jwt_leeway_seconds),
        )
        await conn.execute("DELETE FROM token_trust_oidc_keys")
        await conn.executemany(
            "INSERT INTO token_trust_oidc_keys (kid, algorithm, rsa_n, rsa_e, rsa_bytes, ec_x, ec_y) "
            "VALUES ($1, $2, $3::text::numeric, $4::text::numeric, $5, $6::text::numeric, $7::text::numeric)",
            [
                (
                    k.kid,
                    k.algorithm,
                    _text(k.rsa_n),
                    _text(k.rsa_e),
                    k.rsa_bytes,
                    _text(k.ec_x),
                    _text(k.ec_y),
                )
                for k in keys
            ],
        )


def _text(n: int | None) -> str | None:
    return None if n is None else str(n)
