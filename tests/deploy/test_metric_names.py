"""Every dashboard query and alert expression uses only metrics the code really exports.

Exported names come from the metric classes themselves (IngestMetrics, RetentionMetrics, ApiMetrics), each
built on a fresh registry, so a renamed or removed metric fails here instead of leaving an empty panel or
an alert that can never fire.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from deploy_checks import (
    DASHBOARDS_DIR,
    METRIC_CLASSES,
    PROMETHEUS_BUILTINS,
    PROMETHEUS_DIR,
    ExportedMetrics,
    dashboard_queries,
    metric_names,
)

DASHBOARDS = sorted(DASHBOARDS_DIR.glob("*.json"))
RULE_FILES = [PROMETHEUS_DIR / "alerts.yml", PROMETHEUS_DIR / "alerts_retention_api.yml"]


def rule_expressions(path: Path) -> list[tuple[str, str]]:
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    return [
        (rule.get("alert") or rule.get("record"), rule["expr"])
        for group in doc["groups"]
        for rule in group["rules"]
    ]


def test_every_metric_class_is_importable(exported: ExportedMetrics) -> None:
    assert not exported.missing, f"metric classes not importable: {exported.missing}"
    assert set(exported.by_class) == {cls for _, cls in METRIC_CLASSES}


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_queries_use_exported_metrics(path: Path, exported: ExportedMetrics) -> None:
    known = exported.names | PROMETHEUS_BUILTINS
    queries = dashboard_queries(path)
    assert queries, f"{path.name} has no queries"
    problems = []
    for where, query in queries:
        names = metric_names(query)
        if not names:
            problems.append(f"{where}: no metric found in {query!r}")
        problems += [f"{where}: {name} is not exported" for name in sorted(names - known)]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("path", RULE_FILES, ids=lambda p: p.name)
def test_alert_expressions_use_exported_metrics(path: Path, exported: ExportedMetrics) -> None:
    known = exported.names | PROMETHEUS_BUILTINS
    problems = []
    for alert, expr in rule_expressions(path):
        names = metric_names(expr)
        if not names:
            problems.append(f"{alert}: no metric found in {expr!r}")
        problems += [f"{alert}: {name} is not exported" for name in sorted(names - known)]
    assert not problems, "\n".join(problems)


def family(name: str) -> str:
    for suffix in ("_bucket", "_sum", "_count", "_total", "_created"):
        if name.endswith(suffix):
            return name.removesuffix(suffix)
    return name


def test_the_dashboards_show_every_exported_metric(exported: ExportedMetrics) -> None:
    """A metric the code exports but no panel shows is one an operator never sees."""
    shown = {family(name) for path in DASHBOARDS for _, query in dashboard_queries(path) for name in
             metric_names(query)}
    for cls, names in exported.by_class.items():
        unseen = sorted({family(name) for name in names} - shown)
        assert not unseen, f"{cls} exports metrics no dashboard shows: {unseen}"


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ('sum by (reason) (rate(roomlogs_x_total{instance=~"$instance", reason="a b"}[$__rate_interval]))',
         {"roomlogs_x_total"}),
        ("histogram_quantile(0.99, sum by (instance, le) (rate(roomlogs_h_bucket[5m])))",
         {"roomlogs_h_bucket"}),
        ("time() - (roomlogs_ts_seconds > 0)", {"roomlogs_ts_seconds"}),
        ("label_values(roomlogs_x_total, instance)", {"roomlogs_x_total"}),
        ("label_values(instance)", set()),
        ('absent(up{job="roomlogs-worker"} == 1)', {"up"}),
        ("a / on (job) group_left(x) b offset 5m", {"a", "b"}),
        ("sum(x) > 1e3 and on(job) y or vector(0)", {"x", "y"}),
        ("time() - max by (job) (foo) > 6 * 3600", {"foo"}),
        ('rate(m{status=~"5.."}[${__range}])', {"m"}),
    ],
)
def test_metric_names_are_found_in_promql(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names
