"""The query API's settings: one frozen object, read once at start-up from ``ROOMLOGS_API_*`` variables.

Kept apart from `pipeline.settings.Settings` (the ingest side) so the two can evolve separately; the API
also uses `Settings.postgres_schema` for the schema it reads. `ApiSettings.from_env(environ)` is called by
the CLI; everything below receives the frozen object. Values are checked against each field's rule (ranges,
allowed values) by the same machinery as `Settings` (`pipeline.settings.read_env` / `check_rules`).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.errors import ConfigurationError
from pipeline.settings import Secret, check_rules, env_names, read_env, setting

API_ENV_PREFIX = "ROOMLOGS_API_"
#: The sealing side's late window (pipeline.settings.Settings.seal_late_window_seconds): the API's default.
SHARED_LATE_WINDOW = "ROOMLOGS_SEAL_LATE_WINDOW_SECONDS"

#: Algorithms a deployment may pin. "none" is never among them.
HMAC_ALGORITHMS = frozenset({"HS256", "HS384", "HS512"})
PUBLIC_KEY_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
_MIN_SECRET_BYTES = 32


@dataclass(frozen=True, slots=True)
class ApiSettings:
    # --- database --------------------------------------------------------------------------------------
    #: DSN of the API's own role (`<schema>_api`, created by migration 0003; set its password with
    #: ALTER ROLE). The API refuses to start on a role that may edit or delete logs.
    postgres_dsn: Secret = field(default_factory=lambda: Secret(""))
    postgres_pool_size: int = setting(8, ge=1, le=1_000)
    #: Every API query is cancelled after this long (PostgreSQL statement_timeout).
    statement_timeout_seconds: float = setting(5.0, gt=0, le=86_400)
    #: Exports and deletions stream or delete many rows: their own, longer timeout.
    long_statement_timeout_seconds: float = setting(120.0, gt=0, le=86_400)
    #: Start anyway on a role that may UPDATE/DELETE logs or audit rows (development only).
    allow_privileged_db_role: bool = False
    # --- bearer tokens ---------------------------------------------------------------------------------
    #: HMAC secret (HS*) or PEM public key (RS*/PS*/ES*/EdDSA); or give a file with jwt_key_file.
    jwt_key: Secret = field(default_factory=lambda: Secret(""))
    jwt_key_file: str = ""
    #: The one algorithm accepted; tokens signed otherwise (or with "none") are refused.
    jwt_algorithm: str = "RS256"
    #: When set, tokens must carry this `iss` / `aud`.
    jwt_issuer: str = ""
    jwt_audience: str = ""
    jwt_leeway_seconds: float = setting(30.0, ge=0, le=3_600)
    #: Role claim value that makes a user support staff.
    staff_role: str = "support_staff"
    #: What a staff member's stated reason must look like (a ticket or case id).
    staff_reason_pattern: str = r"^[A-Z][A-Z0-9]{1,9}-[0-9]{1,10}$"
    # --- pagination cursors ----------------------------------------------------------------------------
    #: HMAC key signing pagination cursors (at least 32 bytes; the same on every API instance).
    cursor_key: Secret = field(default_factory=lambda: Secret(""))
    cursor_ttl_seconds: int = setting(3600, ge=1)
    # --- limits ----------------------------------------------------------------------------------------
    default_page_size: int = setting(100, ge=1)
    max_page_size: int = setting(500, ge=1, le=100_000)
    #: Longest time range one events, moderation-history or export request may cover.
    max_range_days: int = setting(31, ge=1, le=3_650)
    #: Longest range of the per-day activity summary.
    max_days_range_days: int = setting(366, ge=1, le=3_650)
    export_max_rows: int = setting(1_000_000, ge=1)
    rate_limit_per_second: float = setting(20.0, gt=0)
    rate_limit_burst: int = setting(40, ge=1)
    #: What an export costs against the caller's rate limit, in requests.
    export_rate_cost: int = setting(10, ge=1)
    #: Concurrent exports and live tails per caller.
    max_streams_per_caller: int = setting(2, ge=1)
    #: A caller's 429s are audited as the first one, then one row with a count per this many seconds.
    rate_limited_audit_window_seconds: float = setting(60.0, gt=0)
    # --- live tail -------------------------------------------------------------------------------------
    tail_poll_seconds: float = setting(1.0, gt=0)
    tail_max_seconds: float = setting(900.0, gt=0)
    tail_heartbeat_seconds: float = setting(15.0, gt=0)
    #: Events whose occurred_at is older than this when they are ingested are not tailed.
    tail_late_window_seconds: float = setting(3600.0, ge=0)
    # --- evidence seals ---------------------------------------------------------------------------------
    #: When a day closes (is sealed, and refuses new events): this long after it ends. The sealing side's
    #: ROOMLOGS_SEAL_LATE_WINDOW_SECONDS, which `from_env` reads when this one is not set.
    seal_late_window_seconds: float = setting(3600.0, ge=0, le=7 * 86_400)
    #: Most events an evidence bundle of a whole day holds (a busier day: ask for selected events).
    evidence_max_events: int = setting(100_000, ge=1)
    # --- console sessions ------------------------------------------------------------------------------
    #: How long a console session lasts after signing in (then sign in again).
    session_ttl_seconds: int = setting(28_800, ge=1, le=31_536_000)
    #: Mark the session cookie Secure (and name it __Host-...); false only for plain-HTTP development.
    session_cookie_secure: bool = True
    # --- single sign-on (OpenID Connect; pipeline.api.security.oidc) -----------------------------------
    #: The provider's issuer URL (its /.well-known/openid-configuration is read); empty: no single sign-on.
    oidc_issuer: str = setting("", pattern=r"(https?://\S+)?", shape="empty or the provider's issuer URL")
    #: The API's client id at the provider (the ID token's audience).
    oidc_client_id: str = ""
    #: A file holding the client secret (a confidential client); empty: a public client, PKCE alone.
    oidc_client_secret_file: str = ""
    #: Where the provider sends the browser back: https://<console host>/v1/session/oidc/callback.
    oidc_redirect_url: str = setting("", pattern=r"(https?://\S+)?", shape="empty or an absolute URL")
    #: Space-separated scopes asked for ("openid" is always asked).
    oidc_scopes: str = "openid profile email"
    #: The ID token claim that makes a user support staff when it is, or lists, oidc_staff_value.
    oidc_staff_claim: str = "roles"
    oidc_staff_value: str = "support_staff"
    #: The name on the console's sign-in button ("Sign in with <name>"); default: the issuer's host.
    oidc_provider_name: str = ""
    #: A started sign-in must come back from the provider within this long.
    oidc_login_ttl_seconds: int = setting(600, ge=30, le=3_600)
    #: An ID token signed by a key id the API has not seen refetches the provider's keys, at most this often.
    oidc_jwks_refetch_seconds: float = setting(60.0, ge=0, le=86_400)
    oidc_http_timeout_seconds: float = setting(10.0, gt=0, le=300)
    # --- serving ---------------------------------------------------------------------------------------
    host: str = setting("127.0.0.1", pattern=r"\S+", shape="an address to listen on")
    port: int = setting(8080, ge=1, le=65_535)
    #: Path of the Prometheus endpoint on the API's port; empty disables it.
    metrics_path: str = setting("/metrics", pattern=r"(/\S*)?", shape="empty or a path starting with /")

    def __post_init__(self) -> None:
        check_rules(self, API_ENV_PREFIX)
        if self.default_page_size > self.max_page_size:
            raise ConfigurationError(
                "ROOMLOGS_API_DEFAULT_PAGE_SIZE must not exceed ROOMLOGS_API_MAX_PAGE_SIZE"
            )
        if self.jwt_algorithm not in HMAC_ALGORITHMS | PUBLIC_KEY_ALGORITHMS:
            raise ConfigurationError(
                f"ROOMLOGS_API_JWT_ALGORITHM={self.jwt_algorithm!r}: use one of "
                f"{', '.join(sorted(HMAC_ALGORITHMS | PUBLIC_KEY_ALGORITHMS))}"
            )
        if self.oidc_issuer and not (self.oidc_client_id and self.oidc_redirect_url):
            raise ConfigurationError(
                "ROOMLOGS_API_OIDC_ISSUER needs ROOMLOGS_API_OIDC_CLIENT_ID and "
                "ROOMLOGS_API_OIDC_REDIRECT_URL (https://<console host>/v1/session/oidc/callback, as "
                "registered at the provider)"
            )
        try:
            re.compile(self.staff_reason_pattern)
        except re.error as e:
            raise ConfigurationError(
                f"ROOMLOGS_API_STAFF_REASON_PATTERN is not a regular expression: {e}"
            ) from e

    # --- derived ---------------------------------------------------------------------------------------
    def verification_key(self) -> str:
        """The key tokens are verified with; ConfigurationError (with the fix) when missing or unsafe."""
        key = self.jwt_key.get()
        if self.jwt_key_file:
            try:
                key = Path(self.jwt_key_file).read_text(encoding="utf-8")
            except OSError as e:
                raise ConfigurationError(f"ROOMLOGS_API_JWT_KEY_FILE={self.jwt_key_file!r}: {e}") from e
        if not key:
            raise ConfigurationError(
                "no token key: set ROOMLOGS_API_JWT_KEY (HMAC secret or PEM public key) "
                "or ROOMLOGS_API_JWT_KEY_FILE"
            )
        looks_pem = "-----BEGIN" in key
        if self.jwt_algorithm in HMAC_ALGORITHMS:
            if looks_pem:
                # A public key used as an HMAC secret lets anyone who has it mint tokens.
                raise ConfigurationError(
                    f"ROOMLOGS_API_JWT_ALGORITHM={self.jwt_algorithm} with a PEM key: pin the key's own "
                    "algorithm (RS256, ES256, EdDSA ...) instead"
                )
            needed = int(self.jwt_algorithm[2:]) // 8  # RFC 7518 3.2: at least the hash's size
            if len(key.encode()) < needed:
                raise ConfigurationError(
                    f"ROOMLOGS_API_JWT_KEY must be at least {needed} bytes for {self.jwt_algorithm}"
                )
        elif not looks_pem:
            raise ConfigurationError(
                f"ROOMLOGS_API_JWT_ALGORITHM={self.jwt_algorithm} needs a PEM public key "
                "in ROOMLOGS_API_JWT_KEY or ROOMLOGS_API_JWT_KEY_FILE"
            )
        return key

    def oidc_client_secret(self) -> Secret:
        """The client secret from oidc_client_secret_file (empty: a public client)."""
        if not self.oidc_client_secret_file:
            return Secret("")
        try:
            return Secret(Path(self.oidc_client_secret_file).read_text(encoding="utf-8").strip())
        except OSError as e:
            raise ConfigurationError(
                f"ROOMLOGS_API_OIDC_CLIENT_SECRET_FILE={self.oidc_client_secret_file!r}: {e}"
            ) from e

    def cursor_secret(self) -> bytes:
        key = self.cursor_key.get().encode()
        if len(key) < _MIN_SECRET_BYTES:
            raise ConfigurationError(
                f"ROOMLOGS_API_CURSOR_KEY must be set to at least {_MIN_SECRET_BYTES} random bytes "
                "(e.g. `python -c 'import secrets; print(secrets.token_urlsafe(48))'`), "
                "the same on every instance"
            )
        return key

    def replace(self, **changes: Any) -> ApiSettings:
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_env(cls, environ: Mapping[str, str], **overrides: Any) -> ApiSettings:
        """Read every ``ROOMLOGS_API_*`` variable; an unknown one is an error (a typo must not pass). When
        days close is the sealing side's ROOMLOGS_SEAL_LATE_WINDOW_SECONDS unless the API's own is set."""
        values = read_env(cls, API_ENV_PREFIX, environ, see="`roomlogs api --help` and README.md")
        shared = environ.get(SHARED_LATE_WINDOW)
        if shared is not None and "seal_late_window_seconds" not in values:
            try:
                values["seal_late_window_seconds"] = float(shared)
            except ValueError:
                raise ConfigurationError(f"{SHARED_LATE_WINDOW}={shared!r} is not a valid float") from None
        values.update(overrides)
        return cls(**values)

    @staticmethod
    def env_names() -> list[str]:
        return env_names(ApiSettings, API_ENV_PREFIX)
