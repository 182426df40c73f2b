"""The Dockerfile, checked without a Docker engine: pinned base, non-root user, the real entry point, and a
build context (after .dockerignore) from which `pip install .` produces a complete package.
"""

from __future__ import annotations

import fnmatch
import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
from deploy_checks import ROOT

from pipeline.api.settings import ApiSettings
from pipeline.settings import Settings

DOCKERFILE = (ROOT / "Dockerfile").read_text(encoding="utf-8")
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def instructions() -> list[tuple[str, str]]:
    joined = re.sub(r"\\\n", " ", DOCKERFILE)
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line.strip() else "")
        for line in (raw.strip() for raw in joined.splitlines())
        if line and not line.startswith("#")
    ]


def final_stage() -> list[tuple[str, str]]:
    steps = instructions()
    last_from = max(i for i, (op, _) in enumerate(steps) if op == "FROM")
    return steps[last_from:]


def test_every_base_image_is_pinned_to_a_patch_release() -> None:
    bases = [arg.split()[0] for op, arg in instructions() if op == "FROM"]
    assert bases
    for image in bases:
        assert "@sha256:" in image or re.fullmatch(r"[\w./-]+:\d+\.\d+\.\d+[\w.-]*", image), image


def test_the_base_python_is_the_one_the_project_targets() -> None:
    wanted = PYPROJECT["project"]["requires-python"].removeprefix(">=")
    for op, arg in instructions():
        if op == "FROM":
            assert arg.startswith(f"python:{wanted}."), arg


def test_the_image_runs_as_a_non_root_user() -> None:
    users = [arg.strip() for op, arg in final_stage() if op == "USER"]
    assert users, "the final stage sets no USER: it would run as root"
    assert users[-1].split(":")[0] not in ("root", "0")


def test_the_entry_point_is_the_roomlogs_command() -> None:
    (entry,) = [arg for op, arg in final_stage() if op == "ENTRYPOINT"]
    assert entry.strip() == '["roomlogs"]'
    assert "roomlogs" in PYPROJECT["project"]["scripts"]


def test_exposed_ports_are_the_settings_defaults() -> None:
    exposed = {int(p) for op, arg in final_stage() if op == "EXPOSE" for p in arg.split()}
    assert exposed == {Settings().metrics_port, ApiSettings().port}


# --- the build context ------------------------------------------------------------------------------------
def ignore_rules() -> list[tuple[bool, str]]:
    rules = []
    for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        pattern = line.removeprefix("!").rstrip("/")
        # the subset of Docker's syntax this matcher implements
        assert re.fullmatch(r"(\*\*/)?[\w.*-]+(/[\w.*-]+)*", pattern), f"unsupported pattern {line!r}"
        rules.append((negated, pattern))
    return rules


def _matches(pattern: str, path: str) -> bool:
    parts = path.split("/")
    if pattern.startswith("**/"):
        return any(fnmatch.fnmatchcase(part, pattern[3:]) for part in parts)
    # a pattern that matches a directory applies to everything under it
    return any(fnmatch.fnmatchcase("/".join(parts[: i + 1]), pattern) for i in range(len(parts)))


def excluded(path: str, rules: list[tuple[bool, str]]) -> bool:
    result = False
    for negated, pattern in rules:
        if _matches(pattern, path):
            result = not negated
    return result


def context_files() -> list[str]:
    """Files `docker build .` would send, by the rules of .dockerignore."""
    rules = ignore_rules()
    reincluded = [pattern for negated, pattern in rules if negated]
    found = []
    for dirpath, dirnames, filenames in os.walk(ROOT):
        rel_dir = os.path.relpath(dirpath, ROOT)
        prefix = "" if rel_dir == "." else rel_dir + "/"
        dirnames[:] = [
            d for d in dirnames
            if not excluded(prefix + d, rules) or any(p.startswith(prefix + d + "/") for p in reincluded)
        ]
        found += [prefix + f for f in filenames if not excluded(prefix + f, rules)]
    return sorted(found)


def test_the_context_holds_the_package_and_nothing_private() -> None:
    files = context_files()
    assert "pyproject.toml" in files
    assert "pipeline/cli/__init__.py" in files
    for path in files:
        assert path in ("pyproject.toml", "README.md", "LICENSE") or path.startswith("pipeline/"), path
        assert "__pycache__" not in path and not path.endswith(".pyc")


def test_the_ignore_matcher_follows_docker_rules() -> None:
    rules = [(False, "*"), (True, "pipeline"), (False, "**/__pycache__")]
    assert excluded(".env", rules)
    assert excluded("tests/deploy/test_compose.py", rules)
    assert not excluded("pipeline/cli/__init__.py", rules)
    assert excluded("pipeline/cli/__pycache__/x.pyc", rules)


@pytest.mark.timeout(240)
def test_pip_install_from_the_context_gives_the_whole_package(tmp_path: Path) -> None:
    """What the image's `pip install .` gets: every module, every migration, the `roomlogs` command."""
    context = tmp_path / "context"
    for path in context_files():
        (context / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / path, context / path)
    dist = tmp_path / "dist"
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--wheel-dir", str(dist), str(context)],
        capture_output=True, text=True, timeout=220,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    (wheel,) = dist.glob("roomlogs-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        entry_points = next(archive.read(n).decode() for n in names if n.endswith("entry_points.txt"))
    migrations = {p.relative_to(ROOT).as_posix() for p in ROOT.glob("pipeline/storage/migrations/*.sql")}
    assert migrations and migrations <= names
    modules = {p.relative_to(ROOT).as_posix() for p in (ROOT / "pipeline").rglob("*.py")}
    assert modules <= names, f"missing from the image: {sorted(modules - names)}"
    assert re.search(r"^roomlogs = pipeline\.cli:main$", entry_points, re.MULTILINE)
