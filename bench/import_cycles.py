"""Count the import cycles of a source tree, read from the source (AST), not by importing.

    .venv/bin/python bench/import_cycles.py                       # this checkout (edugate.<folder> names)
    git archive 20ca26e | tar -x -C /tmp/old                     # an old tree, without touching the repository
    .venv/bin/python bench/import_cycles.py /tmp/old --prefix ""  # (then its folders were top-level modules)

Same rules as tests/gateway/test_no_cycles.py: every import counts, at module level and inside functions
(an import moved into a function to dodge a cycle is still a cycle); only ``if TYPE_CHECKING:`` imports are
left out; importing ``a.b.c`` also loads the packages ``a`` and ``a.b``. Reported: the strongly connected
components of more than one module (each is one knot of cycles, the figure for docs/benchmarks.md), the
modules caught in them, the pairs of modules that import each other directly, and the cycles between the
top-level packages (``drivers`` -> ``gateway`` -> ``drivers``).
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.gateway.test_no_cycles import components, imports

SKIP = {"tests", "bench", "scripts", "docs", "build", "dist", "node_modules", "__pycache__"}


def package_folders(root: Path) -> list[str]:
    """The top-level folders holding Python packages (an ``__init__.py``), hidden and non-code ones left out."""
    return sorted(p.parent.name for p in root.glob("*/__init__.py")
                  if p.parent.name not in SKIP and not p.parent.name.startswith("."))


def module_files(root: Path, folders: list[str], prefix: str) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for folder in folders:
        for path in sorted((root / folder).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            if any(part in SKIP or part.startswith(".") for part in parts):
                continue
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join((prefix, *parts) if prefix else parts)] = path
    return found


def import_graph(files: dict[str, Path]) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {name: set() for name in files}
    for name, path in files.items():
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        except SyntaxError as exc:  # e.g. MicroPython sources: name the file, count the rest
            print(f"{path}:{exc.lineno}: skipped, not Python 3 ({exc.msg})", file=sys.stderr)
            continue
        for target in imports(tree, name, path.name == "__init__.py"):
            parts = target.split(".")
            for i in range(1, len(parts) + 1):  # the module itself and the packages it loads on the way
                stem = ".".join(parts[:i])
                if stem in files and stem != name and not name.startswith(stem + "."):
                    graph[name].add(stem)
    return graph


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", nargs="?", type=Path, default=Path(__file__).resolve().parents[1],
                        help="the source tree (default: this checkout)")
    parser.add_argument("--prefix", default="edugate",
                        help='the import namespace the folders install under ("" when they are top-level)')
    parser.add_argument("-v", "--verbose", action="store_true", help="list the modules of each component")
    args = parser.parse_args(argv)
    folders = package_folders(args.root)
    files = module_files(args.root, folders, args.prefix)
    graph = import_graph(files)
    knots = components(graph)
    mutual = sorted({tuple(sorted((a, b))) for a, targets in graph.items() for b in targets if a in graph[b]})
    print(f"{args.root}: {len(files)} modules in {', '.join(folders)}")
    print(f"import cycles (components of more than one module): {len(knots)}, "
          f"{sum(len(k) for k in knots)} modules caught in them; {len(mutual)} pairs importing each other")
    for knot in knots:
        print(f"  {len(knot)} modules: " + (", ".join(knot) if args.verbose else ", ".join(knot[:6])
                                              + (", ..." if len(knot) > 6 else "")))
    packages = package_graph(graph, args.prefix)
    tangled = components(packages)
    print(f"between top-level packages: {len(tangled)} cycle(s)"
          + "".join(f"; {' <-> '.join(t)}" for t in tangled))
    return 0


def package_graph(graph: dict[str, set[str]], prefix: str) -> dict[str, set[str]]:
    """The module graph collapsed to the top-level packages (``gateway``, ``drivers``, ...)."""
    depth = 1 if prefix else 0

    def package(module: str) -> str:
        return module.split(".")[depth]

    collapsed: dict[str, set[str]] = {}
    for module, targets in graph.items():
        collapsed.setdefault(package(module), set()).update(package(t) for t in targets)
    for name, targets in collapsed.items():
        targets.discard(name)
    return collapsed


if __name__ == "__main__":
    sys.exit(main())
