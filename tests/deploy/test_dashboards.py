"""Grafana dashboards and provisioning load as Grafana expects, and agree with the compose file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from deploy_checks import DASHBOARDS_DIR, DEPLOY, PROMETHEUS_DIR

DASHBOARDS = sorted(DASHBOARDS_DIR.glob("*.json"))
PROVISIONING = DEPLOY / "grafana" / "provisioning"


def load(path: Path) -> dict[str, Any]:
    board: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return board


def all_panels(board: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for panel in board["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))
    return out


def test_the_ingest_retention_and_api_dashboards_exist() -> None:
    assert {load(p)["uid"] for p in DASHBOARDS} >= {"roomlogs-ingest", "roomlogs-retention", "roomlogs-api"}


def test_dashboard_uids_and_titles_are_unique() -> None:
    boards = [load(p) for p in DASHBOARDS]
    assert len({b["uid"] for b in boards}) == len(boards)
    assert len({b["title"] for b in boards}) == len(boards)


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_is_portable_and_laid_out(path: Path) -> None:
    board = load(path)
    assert "id" not in board or board["id"] is None, "an exported dashboard id breaks provisioning"
    assert "roomlogs" in board["tags"]
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    panels = all_panels(board)
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    for panel in panels:
        pos = panel["gridPos"]
        assert pos["x"] >= 0 and pos["x"] + pos["w"] <= 24, f"{panel['title']!r} is wider than the grid"
        if panel["type"] in ("row", "text"):
            continue
        assert panel.get("description"), f"{panel['title']!r} has no description (the operator's hint)"
        # every query goes to the data source the user picked, never to a uid of one Grafana install
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == panel["datasource"]
            assert target["expr"].strip()


def test_the_datasource_points_at_the_compose_prometheus(compose: dict[str, Any]) -> None:
    doc = yaml.safe_load((PROVISIONING / "datasources" / "prometheus.yml").read_text(encoding="utf-8"))
    (source,) = doc["datasources"]
    assert source["type"] == "prometheus" and source["isDefault"] is True
    assert source["url"] == "http://prometheus:9090"
    assert "prometheus" in compose["services"]
    scrape = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text(encoding="utf-8"))
    # $__rate_interval is computed from this: it must be Prometheus's real scrape interval
    assert source["jsonData"]["timeInterval"] == scrape["global"]["scrape_interval"]


def test_provisioning_paths_match_the_compose_mounts(compose: dict[str, Any]) -> None:
    grafana = compose["services"]["grafana"]
    mounts = dict(v.rsplit(":", 1)[0].split(":", 1) for v in grafana["volumes"] if v.startswith("./"))
    assert mounts["./deploy/grafana/provisioning"] == "/etc/grafana/provisioning"
    doc = yaml.safe_load((PROVISIONING / "dashboards" / "roomlogs.yml").read_text(encoding="utf-8"))
    (provider,) = doc["providers"]
    assert mounts["./deploy/grafana/dashboards"] == provider["options"]["path"]
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert Path(home).parent.as_posix() == provider["options"]["path"]
    assert (DASHBOARDS_DIR / Path(home).name).is_file()
