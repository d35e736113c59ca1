"""The package's layers point down only, and no module imports itself back.

core <- clients, strategies (siblings: neither imports the other) <- simulation <- run <-
tools. Every import counts, function-local and ``TYPE_CHECKING`` ones included, since a
lazy import is still a dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import ROOT

LAYERS = {"core": 0, "clients": 1, "strategies": 1, "simulation": 2, "run": 3, "tools": 4}
PACKAGE = ROOT / "flowerbed"


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    """module -> the flowerbed modules it imports (anywhere in the file)."""
    files = {module_name(p): p for p in root.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for mod, path in files.items():
        deps: set[str] = set()
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1]
                                    + ([base] if base else []))
                names = [f"{base}.{a.name}" if f"{base}.{a.name}" in files else base
                         for a in node.names]
            else:
                continue
            for name in names:
                while name and name not in files:
                    name = name.rpartition(".")[0]
                if name.startswith("flowerbed") and name != mod:
                    deps.add(name)
        graph[mod] = deps
    return graph


def layer(mod: str) -> tuple[str, int] | None:
    parts = mod.split(".")
    if len(parts) < 2 or parts[1] not in LAYERS:
        return None
    return parts[1], LAYERS[parts[1]]


def violations(graph: dict[str, set[str]]) -> list[str]:
    """Imports that point up a layer, or across between the two siblings of layer 1."""
    out = []
    for mod, deps in graph.items():
        mine = layer(mod)
        if mine is None:
            continue
        for dep in deps:
            theirs = layer(dep)
            if theirs is None:
                out.append(f"{mod} -> {dep} (outside the layers)")
            elif theirs[1] > mine[1] or (theirs[1] == mine[1] and theirs[0] != mine[0]):
                out.append(f"{mod} -> {dep} ({mine[0]} may not import {theirs[0]})")
    return sorted(out)


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_checks_catch_an_upward_import_and_a_cycle():
    graph = {"flowerbed.core.a": {"flowerbed.run.b"}, "flowerbed.run.b": {"flowerbed.core.a"},
             "flowerbed.clients.c": {"flowerbed.strategies.d"}, "flowerbed.strategies.d": set()}
    assert violations(graph) == [
        "flowerbed.clients.c -> flowerbed.strategies.d (clients may not import strategies)",
        "flowerbed.core.a -> flowerbed.run.b (core may not import run)"]
    assert cycles(graph) == [["flowerbed.core.a", "flowerbed.run.b"]]


def test_every_module_is_in_a_layer():
    graph = import_graph()
    assert len(graph) > 40
    loose = [m for m in graph if m != "flowerbed" and layer(m) is None]
    assert loose == []


def test_layers_point_down_only():
    assert violations(import_graph()) == []


def test_no_import_cycles():
    assert cycles(import_graph()) == []
