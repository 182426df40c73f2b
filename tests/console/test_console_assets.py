"""The console ships whole inside the package and needs no other origin; the sign-in link command works."""

from __future__ import annotations

import argparse
import fnmatch
import re
import tomllib
from pathlib import Path

import jwt
import pytest
from console_world import JWT_KEY

from pipeline.cli.api import COMMANDS, add_commands
from pipeline.console.assets import load_assets
from pipeline.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
STATIC = ROOT / "pipeline" / "console" / "static"
SVG_NAMESPACE = "http://www.w3.org/2000/svg"  # a name, not something fetched


def test_every_asset_is_package_data_and_nothing_comes_from_elsewhere() -> None:
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"][
        "pipeline.console"
    ]
    files = [p.relative_to(STATIC.parent).as_posix() for p in STATIC.rglob("*") if p.is_file()]
    assert files
    for name in files:
        assert any(fnmatch.fnmatch(name, pattern) for pattern in patterns), f"{name} would not be installed"
    assets = load_assets()
    assert {f.removeprefix("static/") for f in files} == set(assets)
    for name, asset in assets.items():
        text = asset.body.decode().replace(SVG_NAMESPACE, "")
        assert not re.search(r"(?i)\b(?:https?:)?//[a-z0-9.-]+\.[a-z]{2,}", text), (
            f"{name} refers to another origin"
        )
        assert "innerHTML" not in text and "insertAdjacentHTML" not in text and "eval(" not in text, name
    assert "<script>" not in assets["index.html"].body.decode()  # no inline script


@pytest.fixture
def api_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROOMLOGS_API_JWT_KEY", JWT_KEY)
    monkeypatch.setenv("ROOMLOGS_API_JWT_ALGORITHM", "HS256")


@pytest.mark.usefixtures("api_env")
def test_sign_in_link_command(capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser(prog="roomlogs")
    add_commands(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["api", "sign-in-link", "--sub", "u-owner", "--room", "room 1"])
    assert COMMANDS["api"](Settings(), args) == 0
    link = capsys.readouterr().out.strip()
    prefix = "http://127.0.0.1:8080/console/sign-in?next=/console/rooms/room%25201/#token="
    assert link.startswith(prefix)
    claims = jwt.decode(link.removeprefix(prefix), JWT_KEY, algorithms=["HS256"])
    assert claims["sub"] == "u-owner" and claims["exp"] - claims["iat"] == 600
