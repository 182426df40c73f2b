"""Imports point one way: the package's import graph has no cycles and no upward imports between layers.

Layers, bottom to top: shared utilities (settings, errors, logs, metrics, the Kafka client, ...), the
event contract (`events`) and what proves the logs (`evidence`: Merkle trees, leaves, seal statements,
keys), the shared tables (`storage`) with the detectors that read them in ingest's transactions
(`detectors`), the stages and services (`ingest`, `retention`, `sealing`,
`publisher`, `api`, `console`, `stack`), the worker process that hosts ingest and maintenance (`worker`),
and the command line (`cli`). A module may import its own layer and the layers below it, and a stage may
not import another stage: what two stages share lives below them (a rule in `storage` or `events`, a
client among the utilities). Every import counts, also one inside a function or under TYPE_CHECKING: a
lazy import hides a cycle from the interpreter, not from the design.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "pipeline"

UTILITIES = (
    "settings", "errors", "logs", "metrics", "kafka_client", "kafka_logs", "kafka_topics", "listen",
    "retention_rules", "page_headers",
)  # fmt: skip
STAGES = ("ingest", "retention", "sealing", "publisher", "api", "console", "stack")
LAYER_OF: dict[str, int] = {
    "": 0,  # pipeline/__init__.py: the version
    **dict.fromkeys(UTILITIES, 0),
    "events": 1,
    "evidence": 1,
    "storage": 2,
    "detectors": 2,
    **dict.fromkeys(STAGES, 3),
    "worker": 4,
    "cli": 5,
}
LAYER_NAMES = ("utilities", "events", "storage", "stages", "worker", "cli")


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


MODULES = _modules()


def _imports(module: str, path: Path) -> Iterator[str]:
    """The package's modules that `module` imports (a package's __init__ when a name is not a module)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                name = alias.name
                while name and name not in MODULES:
                    name = name.rpartition(".")[0]
                if name:
                    yield name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join([*base, *([node.module] if node.module else [])])
            else:
                source = node.module or ""
            if source != "pipeline" and not source.startswith("pipeline."):
                continue
            for alias in node.names:
                sub = f"{source}.{alias.name}"
                if sub in MODULES:
                    yield sub
                elif source in MODULES:
                    yield source


GRAPH: dict[str, set[str]] = {m: set(_imports(m, p)) - {m} for m, p in MODULES.items()}


def _area(module: str) -> str:
    """The top-level package or module under pipeline/ ("" for pipeline itself)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one node (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_graph_is_read() -> None:
    # guards the parser: a graph without these edges would pass every check below
    assert "pipeline.storage.partitions" in GRAPH["pipeline.retention.catalog"]
    assert "pipeline.events.identifiers" in GRAPH["pipeline.api.params"]
    assert "pipeline.api.settings" in GRAPH["pipeline.cli.settings_help"]  # an import inside a function


def test_every_area_has_a_layer() -> None:
    unplaced = sorted({_area(m) for m in MODULES} - set(LAYER_OF))
    assert unplaced == [], f"put these in a layer of tests/test_layers.py: {unplaced}"


def test_no_import_cycles_between_modules() -> None:
    assert _cycles(GRAPH) == []


def test_no_import_cycles_between_packages() -> None:
    areas: dict[str, set[str]] = {}
    for module, targets in GRAPH.items():
        areas.setdefault(_area(module), set()).update(_area(t) for t in targets if _area(t) != _area(module))
    assert _cycles(areas) == []


@pytest.mark.parametrize("layer", range(len(LAYER_NAMES)), ids=LAYER_NAMES)
def test_no_upward_imports(layer: int) -> None:
    upward = sorted(
        f"{module} -> {target} ({LAYER_NAMES[LAYER_OF[_area(target)]]})"
        for module, targets in GRAPH.items()
        if LAYER_OF.get(_area(module)) == layer
        for target in targets
        if LAYER_OF.get(_area(target), 0) > layer
    )
    assert upward == []


def test_no_stage_imports_another() -> None:
    across = sorted(
        f"{module} -> {target}"
        for module, targets in GRAPH.items()
        if _area(module) in STAGES
        for target in targets
        if _area(target) in STAGES and _area(target) != _area(module)
    )
    assert across == [], "move what both need below the stages: " + ", ".join(across)
