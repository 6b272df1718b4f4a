"""Imports run one way: no circle among the daemon's modules, not even through an
import inside a function or behind TYPE_CHECKING, and the layers keep their order."""

from __future__ import annotations

import ast
from pathlib import Path

import garmin2strava

PACKAGE = Path(garmin2strava.__file__).resolve().parent
# Each layer may import only from the layers after it (docs/architecture.md "Layers").
LAYERS = ("entrypoints", "bootstrap", "services", "adapters", "ports", "domain")


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                found.add(node.module)
                found.update(f"{node.module}.{alias.name}" for alias in node.names)
        graph[name] = {m for m in found if m in modules and m != name}
    return graph


def _reach(graph: dict[str, set[str]], start: str) -> set[str]:
    seen: set[str] = set()
    todo = list(graph[start])
    while todo:
        module = todo.pop()
        if module not in seen:
            seen.add(module)
            todo.extend(graph[module])
    return seen


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Groups of modules that reach each other through their imports."""
    reach = {module: _reach(graph, module) for module in graph}
    groups = {
        tuple(sorted(m for m in reach[module] if module in reach[m]))
        for module in graph
        if module in reach[module]
    }
    return sorted(list(group) for group in groups)


def _layer(module: str) -> int | None:
    parts = module.split(".")
    return LAYERS.index(parts[1]) if len(parts) > 1 and parts[1] in LAYERS else None


def test_no_import_circle() -> None:
    graph = _graph()
    assert len(graph) > 50
    assert _cycles(graph) == []


def test_the_cycle_finder_sees_a_circle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]


def test_layers_import_downwards_only() -> None:
    upward = sorted(
        f"{module} -> {imported}"
        for module, imports in _graph().items()
        for imported in imports
        if (mine := _layer(module)) is not None
        and (theirs := _layer(imported)) is not None
        and theirs < mine
    )
    assert upward == []


def test_services_know_the_adapters_only_through_the_ports() -> None:
    reaching = sorted(
        f"{module} -> {imported}"
        for module, imports in _graph().items()
        if _layer(module) == LAYERS.index("services")
        for imported in imports
        if _layer(imported) == LAYERS.index("adapters")
    )
    assert reaching == []
