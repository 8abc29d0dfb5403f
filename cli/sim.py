"""``edugate sim NAME [OPTIONS]``: the device simulators, run by the installed ``edugate`` command.

Each subcommand runs one simulator's own ``main`` with the rest of the command line (``edugate sim em4100
--help`` shows its options), so the simulators need no ``python -m`` with the right interpreter: whichever
``edugate`` is on the PATH (``.venv/bin/edugate`` in a source checkout) has the package and its libraries.

The simulators are found, not listed: every module of :mod:`edugate.simulators` with a module docstring and a
top-level ``def main`` is one, named after its module with ``_`` as ``-`` (``gps_nmea`` -> ``gps-nmea``), its
help the first sentence of its docstring. The modules are read with :mod:`ast`, not imported, so ``edugate``
starts fast and a simulator's heavy libraries load only when it runs. A helper module that has a ``main`` but
is no device simulator says ``SIMULATOR = False`` at its top level.
"""

from __future__ import annotations

import ast
import importlib
import pkgutil
import re
import sys
from pathlib import Path
from typing import Any, NamedTuple

import typer

import edugate.simulators


class Simulator(NamedTuple):
    module: str
    """The module under ``edugate.simulators``."""
    help: str
    """One line: the first sentence of the module's docstring."""


_MAIN_RE = re.compile(r"^(async )?def main\(", re.M)


def _first_sentence(doc: str) -> str:
    paragraph = " ".join(doc.strip().split("\n\n", 1)[0].split()).replace("``", "")
    match = re.match(r"(.+?[.!?])(\s|$)", paragraph)
    return match.group(1) if match else paragraph


def _opted_out(tree: ast.Module) -> bool:
    """``SIMULATOR = False`` at the module's top level."""
    for node in tree.body:
        target: ast.expr
        value: ast.expr | None
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target, value = node.targets[0], node.value
        elif isinstance(node, ast.AnnAssign):
            target, value = node.target, node.value
        else:
            continue
        if (isinstance(target, ast.Name) and target.id == "SIMULATOR" and isinstance(value, ast.Constant)
                and value.value is False):
            return True
    return False


def read_simulator(path: Path) -> str | None:
    """The help line of the simulator module at ``path``, or None if it is not one (see the module doc)."""
    text = path.read_text(encoding="utf-8")
    if not _MAIN_RE.search(text):
        return None  # most helper modules: no need to parse them
    try:
        tree = ast.parse(text, filename=str(path))
    except SyntaxError as exc:
        raise RuntimeError(f"{path}:{exc.lineno}: cannot read this simulator module: {exc.msg}") from None
    doc = ast.get_docstring(tree)
    has_main = any(isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == "main"
                   for node in tree.body)
    if not doc or not has_main or _opted_out(tree):
        return None
    return _first_sentence(doc)


def discover(paths: list[str] | None = None) -> dict[str, Simulator]:
    """Command name -> simulator, for every simulator module in ``paths`` (the package's own by default)."""
    found: dict[str, Simulator] = {}
    for info in sorted(pkgutil.iter_modules(paths or list(edugate.simulators.__path__)), key=lambda i: i.name):
        if info.ispkg or info.name.startswith("_"):
            continue
        path = Path(getattr(info.module_finder, "path", "")) / f"{info.name}.py"
        if not path.is_file():
            continue
        help_line = read_simulator(path)
        if help_line is not None:
            found[info.name.replace("_", "-")] = Simulator(info.name, help_line)
    return found


SIMULATORS: dict[str, Simulator] = discover()
"""Command name -> (module under ``edugate.simulators``, one line of help)."""

app = typer.Typer(name="sim", no_args_is_help=True, add_completion=False,
                  help="Run a device simulator (its options: edugate sim NAME --help).")

_PASS_THROUGH: dict[str, Any] = {"allow_extra_args": True, "ignore_unknown_options": True,
                                 "help_option_names": []}  # --help goes to the simulator


def run_simulator(name: str, args: list[str]) -> int:
    """Run simulator ``name``'s ``main`` with ``args`` as its command line; its exit code."""
    module = importlib.import_module(f"edugate.simulators.{SIMULATORS[name].module}")
    saved = sys.argv
    sys.argv = [f"edugate sim {name}", *args]  # every simulator's argparse reads sys.argv when given no argv
    try:
        code = module.main()
    finally:
        sys.argv = saved
    return code if isinstance(code, int) else 0


def _command(name: str) -> None:
    def simulator(ctx: typer.Context) -> None:
        raise typer.Exit(code=run_simulator(name, list(ctx.args)))

    simulator.__doc__ = SIMULATORS[name].help
    app.command(name=name, context_settings=_PASS_THROUGH)(simulator)


for _name in SIMULATORS:
    _command(_name)
