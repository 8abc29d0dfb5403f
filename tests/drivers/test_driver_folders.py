"""Adding a driver touches its folder, its simulator, its test and one registration line: this test names
what is missing for every driver registered under the ``edugate.drivers`` entry points.

Each driver lives in ``drivers/<folder>/`` with ``sample.yaml`` (a whole config that uses it),
``README.md`` (device, wiring, every config key, the simulator), ``testcases/`` (bad configs with their
exact errors, run by ``test_testcases.py``); its simulator is a module of ``simulators/`` named in that
README; its tests are in ``tests/drivers/<folder>/``; and the README's driver table has its row. The
config schema follows from the registered config models (``tests/gateway/test_config.py`` says when
``config/edugate.schema.json`` must be regenerated).
"""

from __future__ import annotations

import re
from importlib.metadata import entry_points
from pathlib import Path

import yaml

from edugate.drivers.registry import driver_class

REPO = Path(__file__).resolve().parents[2]
COMMON_KEYS = {"id", "driver", "room", "enabled"}


def _registered() -> dict[str, str]:
    """Driver name -> its entry point's module path."""
    return {ep.name: ep.value.partition(":")[0] for ep in entry_points(group="edugate.drivers")}


def _readme_table() -> dict[str, str]:
    """The main README's driver table: driver name -> the folder it links to."""
    text = (REPO / "README.md").read_text()
    section = text.split("\n## Drivers\n", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `([a-z0-9-]+)` \|.*\]\((drivers/[a-z0-9_]+)/README\.md\) \|$", section, re.M)
    return dict(rows)


def _missing(name: str, module: str, table: dict[str, str]) -> list[str]:
    parts = module.split(".")
    if len(parts) < 4 or parts[:2] != ["edugate", "drivers"]:
        return [f"its module {module} is not in a folder drivers/<folder>/"]
    folder = REPO / "drivers" / parts[2]
    where = f"drivers/{parts[2]}"
    missing: list[str] = []
    sample = folder / "sample.yaml"
    if not sample.is_file():
        missing.append(f"{where}/sample.yaml")
    else:
        devices = (yaml.safe_load(sample.read_text()) or {}).get("devices") or []
        if not any(isinstance(d, dict) and d.get("driver") == name for d in devices):
            missing.append(f"a device with 'driver: {name}' in {where}/sample.yaml")
    if not sorted((folder / "testcases").glob("*.yaml")):
        missing.append(f"{where}/testcases/*.yaml (bad configs, each with its .err)")
    readme = folder / "README.md"
    if not readme.is_file():
        missing.append(f"{where}/README.md")
    else:
        text = readme.read_text()
        keys = sorted(set(driver_class(name).config_model.model_fields) - COMMON_KEYS)
        undocumented = [k for k in keys if f"`{k}`" not in text]
        if undocumented:
            missing.append(f"the config keys {', '.join(undocumented)} in {where}/README.md")
        simulators = re.findall(r"edugate\.simulators\.([a-z0-9_]+)", text.split("## Simulator", 1)[-1])
        if "## Simulator" not in text or not any((REPO / "simulators" / f"{s}.py").is_file() for s in simulators):
            missing.append(f"a '## Simulator' section in {where}/README.md naming a module of simulators/ "
                           f"(edugate.simulators.<module>)")
    if not sorted((REPO / "tests" / "drivers" / parts[2]).glob("test_*.py")):
        missing.append(f"tests/drivers/{parts[2]}/test_*.py")
    if table.get(name) != where:
        missing.append(f"a row | `{name}` | ... | [{where}]({where}/README.md) | in the README's driver table")
    return missing


def test_every_registered_driver_has_its_folder_simulator_tests_and_readme_row() -> None:
    registered = _registered()
    assert registered, "no driver registered: is the package installed (pip install -e '.[test]')?"
    table = _readme_table()
    problems = [f"driver {name!r} lacks {what}" for name, module in sorted(registered.items())
                for what in _missing(name, module, table)]
    problems += [f"the README's driver table names {name!r}, which is not registered in pyproject.toml"
                 for name in sorted(set(table) - set(registered))]
    assert not problems, "\n".join(problems)
