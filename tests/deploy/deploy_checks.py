"""Helpers for the deployment checks: metric names the code exports, names a PromQL query uses, tools.

Kept apart from conftest.py so the tests import plain functions; fixtures live in conftest.py.
"""

from __future__ import annotations

import importlib
import json
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
PROMETHEUS_DIR = DEPLOY / "prometheus"
DASHBOARDS_DIR = DEPLOY / "grafana" / "dashboards"
COMPOSE_FILE = ROOT / "docker-compose.yml"

#: The classes whose metrics the dashboards and alerts may use, each built from an injected registry.
METRIC_CLASSES = (
    ("pipeline.metrics", "IngestMetrics"),
    ("pipeline.retention.metrics", "RetentionMetrics"),
    ("pipeline.sealing.state", "SealMetrics"),
    ("pipeline.api.metrics", "ApiMetrics"),
)

#: Series Prometheus makes itself for every target, and its alert series.
PROMETHEUS_BUILTINS = frozenset(
    {
        "up", "scrape_duration_seconds", "scrape_samples_scraped", "scrape_samples_post_metric_relabeling",
        "scrape_series_added", "ALERTS", "ALERTS_FOR_STATE",
    }
)

_SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
    "gauge": ("",),
    "info": ("_info",),
    "stateset": ("",),
    "gaugehistogram": ("_bucket", "_gsum", "_gcount"),
    "unknown": ("",),
}


@dataclass
class ExportedMetrics:
    """Series names each importable metric class exports, and the classes not importable (yet)."""

    by_class: dict[str, frozenset[str]] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)

    @property
    def names(self) -> frozenset[str]:
        return frozenset().union(*self.by_class.values()) if self.by_class else frozenset()


def series_names(registry: CollectorRegistry) -> frozenset[str]:
    """Every series name the registry's families can produce, labelled children or not."""
    names: set[str] = set()
    for family in registry.collect():
        names.update(family.name + suffix for suffix in _SUFFIXES[family.type])
    return frozenset(names)


def exported_metrics() -> ExportedMetrics:
    out = ExportedMetrics()
    for module_name, class_name in METRIC_CLASSES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as e:
            if e.name is not None and module_name.startswith(e.name):
                out.missing.append(class_name)
                continue
            raise  # the module exists but imports something missing: a real error
        registry = CollectorRegistry()
        getattr(module, class_name)(registry)
        out.by_class[class_name] = series_names(registry)
    return out


# --- dashboards -------------------------------------------------------------------------------------------
def dashboard_queries(path: Path) -> list[tuple[str, str]]:
    """(where, query) for every panel target and every query variable of a dashboard."""
    board = json.loads(path.read_text(encoding="utf-8"))
    found: list[tuple[str, str]] = []

    def walk(panels: list[dict[str, Any]]) -> None:
        for panel in panels:
            for target in panel.get("targets", []):
                found.append((f"panel {panel.get('title')!r} {target.get('refId')}", target["expr"]))
            walk(panel.get("panels", []))

    walk(board["panels"])
    for var in board.get("templating", {}).get("list", []):
        if var.get("type") == "query":
            query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
            found.append((f"variable ${var['name']}", query))
    return found



# --- PromQL ------------------------------------------------------------------------------------------------
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGE = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_GRAFANA_VAR = re.compile(r"\$\{[^}]*\}|\$\w+")
_LABEL_VALUES = re.compile(r"\blabel_values\s*\(\s*(?:([a-zA-Z_:][\w:]*)\s*,\s*)?[a-zA-Z_]\w*\s*\)")
_IDENT = re.compile(r"(?<![\w.:])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?")
_KEYWORDS = frozenset(
    {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool", "offset",
     "inf", "nan", "Inf", "NaN", "start", "end"}
)


def metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression (or a Grafana `label_values(...)` query) selects.

    Not a parser: strings, label matchers, ranges, grouping clauses and Grafana variables are removed,
    then every identifier that is not a function call or a keyword is a metric name.
    """
    text = _STRING.sub('""', expr)
    text = _LABEL_VALUES.sub(lambda m: m.group(1) or "", text)
    text = _MATCHERS.sub("", text)
    text = _RANGE.sub("", text)
    text = _GROUPING.sub("", text)
    text = _GRAFANA_VAR.sub("", text)
    return {
        m.group(1)
        for m in _IDENT.finditer(text)
        if not m.group(2) and m.group(1) not in _KEYWORDS
    }


# --- tools -------------------------------------------------------------------------------------------------
APT_HINT = "apt-get update && apt-get install -y prometheus   (Debian's package: prometheus and promtool)"


def require_tool(name: str) -> str:
    """Path of a Prometheus tool; a missing one fails the test with the install command (never skips)."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"`{name}` is not on PATH; install it with: {APT_HINT}", pytrace=False)
    return path


# --- compose -----------------------------------------------------------------------------------------------
#: ``${NAME}``, ``${NAME:-default}``, ``${NAME-default}``, ``${NAME:?message}``, ``${NAME?message}``
VARIABLE = re.compile(r"(?<!\$)\$\{(?P<name>[A-Za-z_]\w*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")
PLACEHOLDER = "set-in-env-file"


def interpolate(text: str) -> str:
    """What compose does before validating: a default where one is given, else a placeholder value."""
    def value(m: re.Match[str]) -> str:
        op = m.group("op") or ""
        return m.group("arg") if op.endswith("-") else PLACEHOLDER

    return VARIABLE.sub(value, text).replace("$$", "$")
