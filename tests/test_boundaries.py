"""Import boundaries between the packages, read from the source (AST), module- and function-level imports alike.

The rules (issue 11): the gateway never imports central; central never imports the gateway or the drivers;
a driver imports only the wire contract, the shared helpers, the drivers and the kits' link protocol
(``firmware_bridge``, itself limited to the contract and the shared helpers, so it cannot pull the gateway
in); the contract imports nothing of EduGate but itself; the shared helpers import neither gateway, central
nor drivers; no library package imports the command line that composes them (``edugate.cli``). Everywhere
(tests, bench and scripts too), EduGate is imported as ``edugate.<folder>``, never by the old top-level names.
The packages import each other without cycles, and importing either end (in a fresh interpreter) loads nothing
of the other end nor its extra's libraries, as ``edugate[gateway]`` and ``edugate[central]`` installs need.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from tests.helpers import REPO

SKIP_DIRS = {"build", "dist", "node_modules", "__pycache__"}  # and every hidden folder (.git, .venv*)


def installed_folders() -> list[str]:
    """The folders that install as ``edugate.<folder>``: the ``FOLDERS`` list of ``setup.py``."""
    tree = ast.parse((REPO / "setup.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "FOLDERS" for t in node.targets):
            folders = ast.literal_eval(node.value)
            assert isinstance(folders, list)
            return [str(f) for f in folders]
    raise AssertionError("setup.py has no FOLDERS list")


FOLDERS = installed_folders()

# importer package -> edugate packages it must not import
FORBIDDEN: dict[str, set[str]] = {
    "gateway": {"central", "cli"},
    "central": {"gateway", "drivers", "cli"},
    "common": {"gateway", "central", "drivers", "cli"},
}
# importer package -> the only edugate packages it may import
ALLOWED_ONLY: dict[str, set[str]] = {
    "contract": {"contract"},
    "drivers": {"contract", "common", "drivers", "firmware_bridge"},
    "firmware_bridge": {"contract", "common", "firmware_bridge"},
}


@dataclass(frozen=True)
class Import:
    file: Path
    line: int
    target: str  # the absolute module name imported, e.g. "edugate.gateway.config"

    def __str__(self) -> str:
        return f"{self.file.relative_to(REPO)}:{self.line}"


def python_files(root: Path) -> Iterator[Path]:
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS and not d.startswith("."))
        yield from (Path(folder) / name for name in sorted(files) if name.endswith(".py"))


@cache
def imports_of(path: Path) -> tuple[Import, ...]:
    """Every import statement in the file, at any depth (inside functions, ``if TYPE_CHECKING``, ``try``);
    read once per test session (several tests walk the same files)."""
    return tuple(imports_in(path.read_text(), path))


def imports_in(source: str, path: Path) -> Iterator[Import]:
    """The imports of ``source`` as if it were the file ``path``; relative ones resolved as installed."""
    package = path.relative_to(REPO).with_suffix("").parts[:-1]
    for node in ast.walk(ast.parse(source, filename=str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(path, node.lineno, alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ["edugate", *package[: len(package) - node.level + 1]]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            if module == "edugate":  # from edugate import gateway
                for alias in node.names:
                    yield Import(path, node.lineno, f"edugate.{alias.name}")
            else:
                yield Import(path, node.lineno, module)


def edugate_package(module: str) -> str | None:
    """``edugate.gateway.runtime.outbox`` -> ``gateway``; None for anything outside EduGate."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "edugate" else None


def crossing(importer: str, imp: Import) -> str | None:
    """``file:line: importer -> target`` if this import by a file of ``importer`` crosses a boundary."""
    target = edugate_package(imp.target)
    if target is None or target == importer:
        return None
    allowed = ALLOWED_ONLY.get(importer)
    if target in FORBIDDEN.get(importer, set()) or (allowed is not None and target not in allowed):
        return f"{imp}: {importer} -> {imp.target}"
    return None


def boundary_violations() -> list[str]:
    found = []
    for importer in FOLDERS:
        for path in python_files(REPO / importer):
            found += [v for imp in imports_of(path) if (v := crossing(importer, imp))]
    return found


def old_name(imp: Import) -> str | None:
    """``file:line: gateway.config (import it as edugate.gateway.config)`` for an import by an old name."""
    if imp.target.split(".")[0] in FOLDERS and imp.file.parent != REPO:  # setup.py is the packaging glue
        return f"{imp}: {imp.target} (import it as edugate.{imp.target})"
    return None


def old_name_violations() -> list[str]:
    return [v for path in python_files(REPO) for imp in imports_of(path) if (v := old_name(imp))]


def test_packages_import_only_across_allowed_boundaries() -> None:
    violations = boundary_violations()
    assert not violations, f"{len(violations)} import(s) across a package boundary:\n" + "\n".join(violations)


def test_nothing_imports_the_old_top_level_names() -> None:
    violations = old_name_violations()
    assert not violations, f"{len(violations)} import(s) by an old top-level name:\n" + "\n".join(violations)


PROBE = """import os
from edugate.contract.records import Reading

def f():
    from edugate.gateway.config import load_config
    from ..central import fleet
    from edugate import simulators
"""


def test_the_checker_sees_function_level_and_relative_imports() -> None:
    """The rules would pass vacuously if the AST walk missed imports inside functions or relative ones."""
    found = list(imports_in(PROBE, REPO / "drivers" / "probe.py"))
    assert [(i.line, i.target) for i in found] == [
        (1, "os"), (2, "edugate.contract.records"), (5, "edugate.gateway.config"), (6, "edugate.central"),
        (7, "edugate.simulators")]
    assert [crossing("drivers", i) for i in found] == [
        None, None, "drivers/probe.py:5: drivers -> edugate.gateway.config",
        "drivers/probe.py:6: drivers -> edugate.central",
        "drivers/probe.py:7: drivers -> edugate.simulators"]
    assert crossing("central", found[2]) == "drivers/probe.py:5: central -> edugate.gateway.config"
    assert crossing("gateway", found[3]) == "drivers/probe.py:6: gateway -> edugate.central"
    assert crossing("gateway", found[4]) is None


CENTRAL_ONLY_LIBRARIES = ("influxdb_client", "croniter", "openpyxl", "psycopg", "nats")  # [central], not [gateway]

LOADED_AFTER_IMPORTING = """
import importlib, json, pkgutil, sys
for name in sys.argv[1:]:
    package = importlib.import_module(name)
    for module in pkgutil.walk_packages(package.__path__, name + "."):
        importlib.import_module(module.name)
print(json.dumps(sorted(sys.modules)))
"""


def modules_loaded_by(*packages: str) -> set[str]:
    """Every module loaded by importing all the modules of ``packages`` in a fresh interpreter."""
    result = subprocess.run([sys.executable, "-c", LOADED_AFTER_IMPORTING, *packages], capture_output=True,
                            text=True, cwd=REPO.parent, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    return set(json.loads(result.stdout))


def test_a_gateway_loads_no_central_code_or_library() -> None:
    """A gateway installed with ``edugate[gateway]`` lacks central's libraries: none of its modules may need them."""
    loaded = modules_loaded_by("edugate.gateway", "edugate.drivers", "edugate.contract", "edugate.common")
    assert "edugate.gateway.runtime.outbox" in loaded  # the walk did import the runtime
    central = sorted(m for m in loaded if m.startswith("edugate.central") or m.split(".")[0] in CENTRAL_ONLY_LIBRARIES)
    assert not central, f"importing the gateway loaded central code or central-only libraries: {central}"


GATEWAY_ONLY_LIBRARIES = ("serial", "pymodbus", "pynmea2", "cobs", "evdev", "gpiod", "bleak")  # not in [central]


def test_central_loads_no_gateway_code_or_device_library() -> None:
    """A central server installed with ``edugate[central]`` lacks the gateway's device libraries: importing every
    module of central must load neither the gateway, the drivers, nor such a library."""
    loaded = modules_loaded_by("edugate.central", "edugate.contract", "edugate.common")
    assert "edugate.central.ingest.worker" in loaded  # the walk did import the ingest worker
    edge = sorted(m for m in loaded if m.startswith(("edugate.gateway", "edugate.drivers"))
                  or m.split(".")[0] in GATEWAY_ONLY_LIBRARIES)
    assert not edge, f"importing central loaded gateway code or gateway-only libraries: {edge}"


def test_the_command_line_starts_without_central_libraries() -> None:
    """``edugate run`` on a gateway: the command line composes central's commands, but imports their libraries
    only when such a command runs."""
    result = subprocess.run([sys.executable, "-c", "import sys, edugate.cli.main; print(' '.join(sys.modules))"],
                            capture_output=True, text=True, cwd=REPO.parent, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    loaded = [m for m in result.stdout.split() if m.split(".")[0] in CENTRAL_ONLY_LIBRARIES]
    assert not loaded, f"the edugate command loads central-only libraries at start-up: {loaded}"
    old = list(imports_in("import drivers.base\nfrom simulators.modbus import X\nimport gatewayish\n",
                          REPO / "tests" / "probe.py"))
    assert [old_name(i) for i in old] == [
        "tests/probe.py:1: drivers.base (import it as edugate.drivers.base)",
        "tests/probe.py:2: simulators.modbus (import it as edugate.simulators.modbus)", None]


def package_graph() -> dict[str, set[str]]:
    """Which EduGate packages each package imports (any file, any depth): ``{"gateway": {"drivers", ...}}``."""
    graph: dict[str, set[str]] = {folder: set() for folder in FOLDERS}
    for importer in FOLDERS:
        for path in python_files(REPO / importer):
            graph[importer] |= {t for imp in imports_of(path) if (t := edugate_package(imp.target)) in graph}
        graph[importer].discard(importer)
    return graph


def package_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Each cycle between packages once, as ``[a, b, a]`` starting from its smallest name."""
    found: list[list[str]] = []

    def walk(path: list[str]) -> None:
        for nxt in sorted(graph.get(path[-1], ())):
            if nxt == path[0]:
                found.append([*path, nxt])
            elif nxt not in path and nxt > path[0]:
                walk([*path, nxt])

    for start in sorted(graph):
        walk([start])
    return found


def test_no_cycles_between_the_packages() -> None:
    """The layers stay layers: before issue 11, drivers -> gateway.records, gateway -> drivers, and
    gateway.demo -> simulators -> gateway.privacy made one knot of gateway, drivers and simulators
    (``bench/import_cycles.py``). Module-level cycles: tests/gateway/test_no_cycles.py."""
    assert package_cycles({"gateway": {"drivers"}, "drivers": {"gateway", "contract"}, "contract": set()}) == [
        ["drivers", "gateway", "drivers"]]
    graph = package_graph()
    assert "drivers" in graph["gateway"] and "contract" in graph["central"]  # the walk did see imports
    found = package_cycles(graph)
    assert not found, "cycles between packages:\n" + "\n".join(" -> ".join(c) for c in found)
