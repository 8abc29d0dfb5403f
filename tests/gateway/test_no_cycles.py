"""No import cycles among the ``edugate.*`` modules, found from the source (AST), not by importing.

Every ``import`` counts, at module level and inside functions (an import moved into a function to dodge
a cycle is still a cycle); only imports under ``if TYPE_CHECKING:`` are left out, since they never run.
An import of ``edugate.a.b`` also loads the package ``edugate.a`` (its ``__init__``), so that edge counts
too. A failure names every cycle, one per line, as ``a -> b -> a``.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FOLDERS = ["contract", "common", "gateway", "central", "drivers", "simulators", "ml_models", "firmware_bridge", "cli"]


def module_files() -> dict[str, Path]:
    """``edugate.<folder>.<...>`` -> its file, for every Python file of the installed folders."""
    found: dict[str, Path] = {}
    for folder in FOLDERS:
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(("edugate", *parts))] = path
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imports(node: ast.AST, module: str, is_package: bool) -> Iterator[str]:
    """Every name imported anywhere under ``node`` (``from a import b`` gives ``a.b`` and ``a``)."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and _is_type_checking(child.test):
            for stmt in child.orelse:
                yield from imports(stmt, module, is_package)
            continue
        if isinstance(child, ast.Import):
            yield from (alias.name for alias in child.names)
        elif isinstance(child, ast.ImportFrom):
            base = child.module or ""
            if child.level:
                package = module.split(".") if is_package else module.split(".")[:-1]
                package = package[: len(package) - (child.level - 1)]
                base = ".".join([*package, base] if base else package)
            yield base
            yield from (f"{base}.{alias.name}" for alias in child.names)
        yield from imports(child, module, is_package)


def import_graph() -> dict[str, set[str]]:
    files = module_files()
    graph: dict[str, set[str]] = {name: set() for name in files}
    for name, path in files.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for target in imports(tree, name, path.name == "__init__.py"):
            parts = target.split(".")
            for i in range(2, len(parts) + 1):  # the module itself and the packages it loads on the way
                prefix = ".".join(parts[:i])
                if prefix in files and prefix != name and not name.startswith(prefix + "."):
                    graph[name].add(prefix)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component of more than one module, the shortest path shown."""
    return [_shortest_cycle(graph, set(c)) for c in components(graph)]


def components(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module, each sorted (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def _shortest_cycle(graph: dict[str, set[str]], members: set[str]) -> list[str]:
    start = min(members)
    paths = {start: [start]}
    queue = [start]
    while queue:
        v = queue.pop(0)
        for w in sorted(graph[v] & members):
            if w == start:
                return [*paths[v], start]
            if w not in paths:
                paths[w] = [*paths[v], w]
                queue.append(w)
    return sorted(members)  # not reached: a component of more than one module has a cycle through each


def test_the_graph_sees_imports_inside_functions() -> None:
    graph = {"edugate.a": set(), "edugate.b": set()}
    tree = ast.parse("def f():\n    from edugate.b import x\n")
    graph["edugate.a"] = set(imports(tree, "edugate.a", False)) & set(graph)
    graph["edugate.b"] = {"edugate.a"}
    assert cycles(graph) == [["edugate.a", "edugate.b", "edugate.a"]]


def test_type_checking_imports_do_not_count() -> None:
    tree = ast.parse("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from edugate.b import x\n")
    assert "edugate.b" not in set(imports(tree, "edugate.a", False))


def test_the_graph_knows_the_gateway() -> None:
    graph = import_graph()
    assert "edugate.gateway.config" in graph["edugate.gateway.runtime.gateway"]
    assert "edugate.drivers.registry" in graph["edugate.gateway.config"]


def test_no_import_cycles() -> None:
    found = cycles(import_graph())
    assert not found, "import cycles:\n" + "\n".join(" -> ".join(c) for c in found)
