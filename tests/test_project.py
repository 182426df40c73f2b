"""What a newcomer relies on: the README's commands and configuration table are the real ones."""

from __future__ import annotations

import re
from pathlib import Path

from pipeline.api.settings import ApiSettings
from pipeline.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def test_readme_documents_every_setting() -> None:
    documented = set(re.findall(r"`(ROOMLOGS_[A-Z_]+)`", README))
    missing = (set(Settings.env_names()) | set(ApiSettings.env_names())) - documented
    assert not missing, f"settings missing from README.md's Configuration table: {sorted(missing)}"


def test_readme_quick_start_is_exactly_two_commands_and_ci_runs_the_test_one() -> None:
    quick_start = README.split("## Quick start", 1)[1].split("##", 1)[0]
    block = quick_start.split("```sh", 1)[1].split("```", 1)[0]
    commands = [line.split("#", 1)[0].strip() for line in block.strip().splitlines()]
    assert commands == ["make demo", "make test"]
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^make test$", ci, re.MULTILINE), "CI must run the README's test command"


def test_makefile_targets_used_by_readme_exist() -> None:
    makefile = (ROOT / "Makefile").read_text()
    for target in ("demo", "test", "up", "lint", "bench"):
        assert re.search(rf"^{target}:", makefile, re.MULTILINE), target
