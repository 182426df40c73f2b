"""Alert rules and the scrape config pass promtool, and every alert is unit-tested to fire.

promtool comes from Debian's `prometheus` package; without it these tests fail with the install command.
"""

from __future__ import annotations

import re
import subprocess
from typing import Any

import pytest
import yaml
from deploy_checks import DEPLOY, PROMETHEUS_DIR, require_tool

RULE_FILES = ["alerts.yml", "alerts_retention_api.yml"]


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [require_tool("promtool"), *args], cwd=PROMETHEUS_DIR, capture_output=True, text=True, timeout=120
    )


def alerts() -> list[dict[str, Any]]:
    found = []
    for name in RULE_FILES:
        doc = yaml.safe_load((PROMETHEUS_DIR / name).read_text(encoding="utf-8"))
        found += [rule for group in doc["groups"] for rule in group["rules"] if "alert" in rule]
    return found


def test_promtool_check_rules() -> None:
    done = promtool("check", "rules", *RULE_FILES)
    assert done.returncode == 0, done.stdout + done.stderr


def test_promtool_check_config() -> None:
    done = promtool("check", "config", "prometheus.yml")
    assert done.returncode == 0, done.stdout + done.stderr


def test_promtool_unit_tests_pass() -> None:
    done = promtool("test", "rules", "alerts_test.yml")
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_unit_tests_load_every_rule_file_and_see_every_alert_fire() -> None:
    doc = yaml.safe_load((PROMETHEUS_DIR / "alerts_test.yml").read_text(encoding="utf-8"))
    assert sorted(doc["rule_files"]) == sorted(RULE_FILES)
    fired = {
        case["alertname"]
        for test in doc["tests"]
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    untested = sorted({rule["alert"] for rule in alerts()} - fired)
    assert not untested, f"alerts no unit test shows firing: {untested}"


def test_the_scrape_config_loads_every_rule_file() -> None:
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text(encoding="utf-8"))
    assert sorted(config["rule_files"]) == sorted(RULE_FILES)


@pytest.mark.parametrize("rule", alerts(), ids=lambda r: r["alert"])
def test_each_alert_has_a_severity_a_summary_and_a_runbook_section(rule: dict[str, Any]) -> None:
    assert rule["labels"]["severity"] in ("critical", "warning")
    assert rule["annotations"]["summary"]
    runbook = rule["annotations"]["runbook"]
    assert runbook == f"deploy/README.md#{rule['alert'].lower()}"
    readme = (DEPLOY / "README.md").read_text(encoding="utf-8")
    # GitHub-style anchor of a heading that is exactly the alert's name
    assert re.search(rf"^#+ {rule['alert']}\s*$", readme, re.MULTILINE), f"no README heading {rule['alert']}"
