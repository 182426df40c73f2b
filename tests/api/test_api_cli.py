"""`roomlogs api` commands and the ROOMLOGS_API_* settings."""

from __future__ import annotations

import argparse
import json

import pytest
from api_world import JWT_KEY

from pipeline.api import ApiSettings, IdentityKind, Scope, TokenVerifier
from pipeline.cli.api import COMMANDS, add_commands
from pipeline.errors import ConfigurationError
from pipeline.settings import Settings


def _run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="roomlogs")
    add_commands(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return COMMANDS[args.command](Settings(), args)


@pytest.fixture
def api_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROOMLOGS_API_JWT_KEY", JWT_KEY)
    monkeypatch.setenv("ROOMLOGS_API_JWT_ALGORITHM", "HS256")
    monkeypatch.setenv("ROOMLOGS_API_CURSOR_KEY", "c" * 48)


@pytest.mark.usefixtures("api_env")
def test_token_command_mints_tokens_the_api_accepts(capsys: pytest.CaptureFixture[str]) -> None:
    verifier = TokenVerifier(
        ApiSettings.from_env({"ROOMLOGS_API_JWT_KEY": JWT_KEY, "ROOMLOGS_API_JWT_ALGORITHM": "HS256"})
    )
    assert _run(["api", "token", "--sub", "s-1", "--staff"]) == 0
    staff = verifier.identify("Bearer " + capsys.readouterr().out.strip())
    assert (staff.subject, staff.kind) == ("s-1", IdentityKind.STAFF)
    assert (
        _run(["api", "token", "--sub", "svc", "--service", "--scope", "rooms:read", "--scope", "bogus"]) == 0
    )
    svc = verifier.identify("Bearer " + capsys.readouterr().out.strip())
    assert (svc.kind, svc.scopes) == (IdentityKind.SERVICE, frozenset({Scope.ROOMS_READ}))


@pytest.mark.usefixtures("api_env")
def test_openapi_command_prints_the_document(capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(["api", "openapi"]) == 0
    assert "/v1/users/{user_id}/moderation" in json.loads(capsys.readouterr().out)["paths"]


def test_settings_from_the_environment() -> None:
    s = ApiSettings.from_env(
        {"ROOMLOGS_API_MAX_PAGE_SIZE": "200", "ROOMLOGS_API_ALLOW_PRIVILEGED_DB_ROLE": "yes", "OTHER": "x"}
    )
    assert (s.max_page_size, s.allow_privileged_db_role) == (200, True)
    with pytest.raises(ConfigurationError, match="unknown setting ROOMLOGS_API_MAX_PAGESIZE"):
        ApiSettings.from_env({"ROOMLOGS_API_MAX_PAGESIZE": "200"})
    with pytest.raises(ConfigurationError, match="not a valid int"):
        ApiSettings.from_env({"ROOMLOGS_API_PORT": "eighty"})
    with pytest.raises(ConfigurationError, match="none"):
        ApiSettings(jwt_algorithm="none")
    assert "ROOMLOGS_API_JWT_KEY" in ApiSettings.env_names()


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"jwt_algorithm": "HS256"}, "no token key"),
        ({"jwt_algorithm": "HS256", "jwt_key": "short"}, "at least 32 bytes"),
        ({"jwt_algorithm": "HS512", "jwt_key": "k" * 40}, "at least 64 bytes"),
        ({"jwt_algorithm": "HS256", "jwt_key": "-----BEGIN PUBLIC KEY-----\n" + "k" * 40}, "PEM key"),
        ({"jwt_algorithm": "RS256", "jwt_key": "k" * 40}, "PEM public key"),
        ({"jwt_algorithm": "HS256", "jwt_key_file": "/nonexistent/key"}, "JWT_KEY_FILE"),
    ],
)
def test_unsafe_token_keys_are_refused_with_the_fix(overrides: dict[str, str], match: str) -> None:
    from pipeline.settings import Secret

    values = {k: Secret(v) if k == "jwt_key" else v for k, v in overrides.items()}
    with pytest.raises(ConfigurationError, match=match):
        ApiSettings(**values).verification_key()  # type: ignore[arg-type]


def test_cursor_key_is_required() -> None:
    with pytest.raises(ConfigurationError, match="ROOMLOGS_API_CURSOR_KEY"):
        ApiSettings().cursor_secret()
