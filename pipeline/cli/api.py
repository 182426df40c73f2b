"""`roomlogs api ...`: serve the query API and the room console, print its OpenAPI document, mint
development tokens and console sign-in links, install the token key the database checks callers with.

Wiring: `pipeline.cli` calls `add_commands(subparsers)` when it builds its parser and dispatches
`args.command` through `COMMANDS`, like its own commands. API settings are the ``ROOMLOGS_API_*``
variables (`pipeline.api.settings.ApiSettings`), read once here; the schema is the pipeline's
``ROOMLOGS_POSTGRES_SCHEMA``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import sys
import time
from collections.abc import Callable
from types import FrameType
from typing import TYPE_CHECKING, Any

from pipeline.errors import ConfigurationError
from pipeline.listen import check_can_listen
from pipeline.logs import logging_config
from pipeline.settings import Settings

if TYPE_CHECKING:
    from pipeline.api.settings import ApiSettings

__all__ = ["COMMANDS", "add_commands"]

_WILDCARD_HOSTS = frozenset({"0.0.0.0", "::", "[::]", ""})  # noqa: S104 (names it, does not bind)


def add_commands(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    api = subparsers.add_parser(
        "api",
        help="the query API: serve it, print its OpenAPI document, mint development tokens",
        description="Settings: ROOMLOGS_API_* (see README.md, 'Query API').",
    )
    sub = api.add_subparsers(dest="api_command")
    serve = sub.add_parser(
        "serve", help="serve the API and the room console (/console/) with uvicorn until SIGINT/SIGTERM"
    )
    serve.add_argument("--host", default=None, help="listen address (default ROOMLOGS_API_HOST, 127.0.0.1)")
    serve.add_argument("--port", type=int, default=None, help="listen port (default ROOMLOGS_API_PORT, 8080)")
    sub.add_parser("openapi", help="print the OpenAPI document (JSON) and exit")
    token = sub.add_parser(
        "token",
        help="print a signed token for local development (HMAC keys only; production tokens come from SSO)",
    )
    token.add_argument("--sub", required=True, help="user id, or service name with --service")
    token.add_argument("--staff", action="store_true", help="give the user the support-staff role")
    token.add_argument("--service", action="store_true", help="a service identity (use --scope)")
    token.add_argument(
        "--scope", action="append", default=[], help="a service scope, e.g. rooms:read (repeat)"
    )
    token.add_argument("--ttl-seconds", type=int, default=3600)
    link = sub.add_parser(
        "sign-in-link",
        help="print a link that signs a user in to the room console (development tokens, HMAC keys only)",
    )
    link.add_argument("--sub", required=True, help="user id")
    link.add_argument("--staff", action="store_true", help="give the user the support-staff role")
    link.add_argument("--room", default=None, help="open this room's calendar after signing in")
    link.add_argument(
        "--base-url",
        default=None,
        help="where the console is served (default http://HOST:PORT the API serves on: ROOMLOGS_API_HOST, "
        "or 127.0.0.1 when it listens on every address, and ROOMLOGS_API_PORT or --port)",
    )
    link.add_argument("--port", type=int, default=None, help="the port `api serve --port` was given")
    link.add_argument("--ttl-seconds", type=int, default=600, help="how long the link works (default 600)")
    sub.add_parser(
        "trust-key",
        help="install the token key in the database, which checks deletions and console sign-ins itself "
        "(run as the schema's owner: ROOMLOGS_POSTGRES_DSN; reads ROOMLOGS_API_JWT_*, "
        "ROOMLOGS_API_STAFF_ROLE, ROOMLOGS_API_SESSION_TTL_SECONDS)",
    )
    sub.add_parser(
        "end-sessions",
        help="sign every console session out and refuse sign-ins with tokens issued before now (after "
        "restoring the database from a backup, or when the token key leaked; run as the schema's owner)",
    )


def _api(settings: Settings, args: argparse.Namespace) -> int:
    from pipeline.api.settings import ApiSettings

    command = getattr(args, "api_command", None)
    environ: dict[str, str] = dict(os.environ)
    if command in ("sign-in-link", "token"):  # for the console of a running `roomlogs up` of this directory
        from pipeline.cli.stackfile import discovered_api_env

        discovered = discovered_api_env(os.environ)
        environ = {**discovered, **environ}
        if not discovered and not any(environ.get(f"ROOMLOGS_API_JWT_{n}") for n in ("KEY", "KEY_FILE")):
            raise ConfigurationError(
                f"no key to sign with: no `roomlogs up` with a console runs in this directory (started here, "
                "it gives this command its development key), and ROOMLOGS_API_JWT_KEY is not set (your own "
                f"API's HMAC key; with an identity provider, its tokens sign in instead of `api {command}`)"
            )
    api_settings = ApiSettings.from_env(environ)  # read once, here
    if command == "serve":
        return _serve(settings, api_settings, args)
    if command == "openapi":
        from pipeline.api.openapi import document

        print(json.dumps(document(api_settings), indent=2))
        return 0
    if command == "token":
        print(_token(api_settings, args))
        return 0
    if command == "sign-in-link":
        print(_sign_in_link(api_settings, args))
        return 0
    if command == "trust-key":
        print(asyncio.run(_trust_key(settings, api_settings)))
        return 0
    if command == "end-sessions":
        print(f"{asyncio.run(_end_sessions(settings))} console sessions signed out")
        return 0
    print(
        "usage: roomlogs api {serve,openapi,token,sign-in-link,trust-key,end-sessions} "
        "(see roomlogs api --help)",
        file=sys.stderr,
    )
    return 2


def _serve(settings: Settings, api_settings: ApiSettings, args: argparse.Namespace) -> int:
    import uvicorn

    from pipeline.api import create_app
    from pipeline.api.context import ApiState
    from pipeline.console import mount

    states: list[ApiState] = []
    app = mount(create_app(api_settings, settings.postgres_schema, state_hook=states.append))
    # The checks the app's start-up makes (DSN, database, role, migrations) and the port, made here first: a
    # problem is one line and exit 2, not a traceback from uvicorn's lifespan or its log lines and exit 3.
    host, port = args.host or api_settings.host, args.port or api_settings.port
    check_can_listen(
        host, port, host_setting="ROOMLOGS_API_HOST", port_setting="ROOMLOGS_API_PORT (or --port)"
    )
    asyncio.run(_check_database(api_settings, settings.postgres_schema))

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            # End live tails at their next poll instead of holding shutdown until the grace period ends.
            for state in states:
                state.closing = True
            super().handle_exit(sig, frame)

    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        lifespan="on",
        log_level=settings.log_level.lower(),
        # uvicorn's own lines in the roomlogs shape (ROOMLOGS_LOG_FORMAT), access lines without query strings
        log_config=logging_config(settings.log_level, json=settings.log_format == "json", process="api"),
        timeout_graceful_shutdown=30,
        server_header=False,
    )
    Server(config).run()
    return 0


async def _check_database(api_settings: ApiSettings, schema: str) -> None:
    from pipeline.api.app import open_pool

    pool = await open_pool(api_settings, schema)
    await pool.close()


async def _trust_key(settings: Settings, api_settings: ApiSettings) -> str:
    """Install the API's token key in `token_trust` (pipeline/api/trust.py), as the schema's owner."""
    import asyncpg

    from pipeline.api.trust import install, token_trust
    from pipeline.storage import db

    trust = token_trust(api_settings)
    conn = await db.connect(settings.postgres_dsn.get(), settings.postgres_schema)
    try:
        await install(conn, trust)
        said = (
            f"the database now verifies {trust.algorithm} tokens (key {trust.fingerprint}) before a deletion "
            f"or a console sign-in; staff role {trust.staff_role!r}, sessions of at most "
            f"{trust.session_max_seconds} s. Console sessions already open stay open until they expire: "
            "`roomlogs api end-sessions` signs them out (a key replaced because it leaked)"
        )
        if api_settings.oidc_issuer:
            said += "\n" + await _trust_oidc(conn, api_settings)
    except asyncpg.UndefinedTableError:
        raise ConfigurationError(
            f"schema {settings.postgres_schema!r} has no token_trust table: run `roomlogs migrate` first"
        ) from None
    except asyncpg.InsufficientPrivilegeError:
        raise ConfigurationError(
            "only the schema's owner may install the token key: set ROOMLOGS_POSTGRES_DSN to its DSN"
        ) from None
    finally:
        await conn.close()
    return said


async def _end_sessions(settings: Settings) -> int:
    import asyncpg

    from pipeline.api.queries.sessions import end_all_sessions
    from pipeline.storage import db

    conn = await db.connect(settings.postgres_dsn.get(), settings.postgres_schema)
    try:
        return await end_all_sessions(conn)
    except asyncpg.InsufficientPrivilegeError:
        raise ConfigurationError(
            "only the schema's owner may sign every session out: set ROOMLOGS_POSTGRES_DSN to its DSN"
        ) from None
    finally:
        await conn.close()


async def _trust_oidc(conn: Any, api_settings: ApiSettings) -> str:
    """Install the single sign-on provider's signing keys (its JWKS, fetched now) in the database."""
    from pipeline.api.security.oidc import OidcClient
    from pipeline.api.trust import install_oidc, oidc_keys

    client = OidcClient(api_settings, state_key=b"trust-key")
    try:
        meta = await client.metadata()
        keys = oidc_keys(await client.jwks())
    finally:
        await client.aclose()
    await install_oidc(conn, api_settings, meta.issuer, keys)
    named = ", ".join(f"{k.kid} ({k.algorithm})" for k in keys)
    return (
        f"single sign-on: ID tokens of {meta.issuer} for client {api_settings.oidc_client_id!r}, keys "
        f"{named}; staff when {api_settings.oidc_staff_claim!r} holds "
        f"{api_settings.oidc_staff_value!r} (run this again when the provider rotates its keys)"
    )


def _sign_in_link(api_settings: ApiSettings, args: argparse.Namespace) -> str:
    from urllib.parse import quote

    from pipeline.console import sign_in_link

    args.service, args.scope = False, []
    # the address the API serves on (`api serve` takes the same settings); a wildcard is reached locally
    host = "127.0.0.1" if api_settings.host in _WILDCARD_HOSTS else api_settings.host
    host = f"[{host}]" if ":" in host else host
    base = args.base_url or f"http://{host}:{args.port or api_settings.port}"
    room = f"/console/rooms/{quote(args.room, safe='')}/" if args.room else None
    return sign_in_link(base, _token(api_settings, args), next_page=room)


def _token(api_settings: ApiSettings, args: argparse.Namespace) -> str:
    import jwt

    from pipeline.api.settings import HMAC_ALGORITHMS

    if api_settings.jwt_algorithm not in HMAC_ALGORITHMS:
        raise ConfigurationError(
            f"`roomlogs api token` signs with the HMAC key only; ROOMLOGS_API_JWT_ALGORITHM is "
            f"{api_settings.jwt_algorithm} (tokens for it come from your identity provider)"
        )
    now = int(time.time())
    # jti: the token's id; it opens one console session at most (migration 0019)
    claims: dict[str, object] = {
        "sub": args.sub,
        "iat": now,
        "exp": now + args.ttl_seconds,
        "jti": secrets.token_urlsafe(16),
    }
    if api_settings.jwt_issuer:
        claims["iss"] = api_settings.jwt_issuer
    if api_settings.jwt_audience:
        claims["aud"] = api_settings.jwt_audience
    if args.service:
        claims["kind"] = "service"
        claims["scope"] = " ".join(args.scope)
    elif args.staff:
        claims["roles"] = [api_settings.staff_role]
    return jwt.encode(claims, api_settings.verification_key(), algorithm=api_settings.jwt_algorithm)


COMMANDS: dict[str, Callable[[Settings, argparse.Namespace], int]] = {"api": _api}
