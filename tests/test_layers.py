"""Imports flow one way, in the order data flows; no module imports itself through others.

Read from the source (every import statement, in functions and ``TYPE_CHECKING`` blocks
too), so a cycle kept alive by a deferred import fails here as well.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("config", "operators", "flows", "journey", "grafana")

LAYERS: dict[str, tuple[str, ...]] = {
    # shared types, sentinels, errors: they import nothing of ours
    "base": ("config", "config.errors", "operators", "operators.base", "operators.columns",
             "flows", "journey", "grafana"),
    # what the engine tells Prometheus, declared once for the steps, the runtime and the dashboards
    "metrics": ("operators.metrics",),
    "config": ("config.durations", "config.tables", "config.arrays", "config.model"),
    "parse": ("operators.events", "operators.raw_records", "operators.watermark", "operators.reading"),
    "route": ("operators.routing",),
    "score": ("operators.id_kernels", "operators.score_kernels", "operators.state", "operators.scoring"),
    "window": ("operators.window_kernels", "operators.windows"),
    "render": ("operators.json_kernels", "operators.records"),
    "steps": ("operators.shard", "operators.aggregate"),
    "flows": ("flows.journey_flow",),
    "runtime": ("journey.cli", "journey.environment", "journey.redaction", "journey.supervisor",
                "journey.runner", "journey.recovery", "journey.kafka_io", "journey.broker",
                "journey.children", "journey.control", "journey.backtest", "journey.report_html",
                "journey.simulate", "journey.poison", "journey.demo"),
    # dashboards and alert rules, generated from the metrics' declarations
    "grafana": ("grafana.promql", "grafana.panels", "grafana.dashboards", "grafana.alerts", "grafana.render",
                "grafana.__main__"),
}
RANK = {module: rank for rank, modules in enumerate(LAYERS.values()) for module in modules}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_modules() -> dict[str, Path]:
    return {module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def imports(path: Path, modules: set[str]) -> set[str]:
    """The project modules importing ``path`` loads: what it names (``from pkg import mod``
    counts as ``pkg.mod``), and the packages above each of those and above itself."""
    named = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            named |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert not node.level, f"{path}: a relative import (write the module's full name)"
            assert node.module is not None
            named.add(node.module)
            named |= {f"{node.module}.{a.name}" for a in node.names}
    me = module_name(path)
    loaded = {".".join(name.split(".")[:k]) for name in named | {me} for k in range(1, name.count(".") + 2)}
    return (loaded & modules) - {me}


GRAPH = {name: imports(path, set(project_modules())) for name, path in project_modules().items()}


def test_every_module_has_a_layer() -> None:
    assert sorted(set(GRAPH) - set(RANK)) == []
    assert sorted(set(RANK) - set(GRAPH)) == []


def test_there_is_no_import_cycle() -> None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(module: str) -> None:
        state[module] = 1
        path.append(module)
        for target in sorted(GRAPH[module]):
            if state.get(target) == 1:
                cycle = [*path[path.index(target):], target]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if target not in state:
                visit(target)
        path.pop()
        state[module] = 2

    for module in sorted(GRAPH):
        if module not in state:
            visit(module)


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_imports_follow_the_data(module: str) -> None:
    upward = sorted(t for t in GRAPH[module] if RANK[t] > RANK[module])
    assert upward == [], f"{module} ({_layer(module)}) imports later layers: " + ", ".join(
        f"{t} ({_layer(t)})" for t in upward)
    if RANK[module] == 0:
        parents = {module.rsplit(".", k)[0] for k in range(1, module.count(".") + 1)}
        assert GRAPH[module] <= parents, f"{module} is shared: it imports nothing of ours"


def _layer(module: str) -> str:
    return list(LAYERS)[RANK[module]]
