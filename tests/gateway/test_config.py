"""Config validation: every bad config names the file, line and path; every shipped config passes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from edugate.drivers.registry import driver_classes
from edugate.gateway.config import ConfigError, json_schema, load_config, parse_config

HERE = Path(__file__).parent
REPO = HERE.parents[1]
BAD = sorted((HERE / "bad_configs").glob("*.yaml"))
GATEWAY_CONFIGS = [p for p in sorted((REPO / "config").glob("*.yaml")) if p.name != "central.yaml"]  # central's own
SHIPPED = [*GATEWAY_CONFIGS, REPO / "cli" / "demo-school.yaml",
           *sorted((REPO / "drivers").glob("*/sample.yaml"))]


@pytest.mark.parametrize("path", BAD, ids=[p.stem for p in BAD])
def test_bad_config_reports_exact_location(path: Path) -> None:
    expected = path.with_suffix(".err").read_text().replace("KNOWN", ", ".join(driver_classes())).splitlines()
    with pytest.raises(ConfigError) as info:
        load_config(path)
    got = [str(p).replace(str(path.parent) + "/", "") for p in info.value.problems]
    assert got == expected


def test_check_command_exits_nonzero_and_prints_locations() -> None:
    path = HERE / "bad_configs" / "bad_port.yaml"
    result = subprocess.run([sys.executable, "-m", "edugate.cli.main", "check", str(path)],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert f"{path}:5: uplink.port: Input should be less than or equal to 65535" in result.stderr


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read: No such file"):
        load_config(tmp_path / "nope.yaml")


def test_empty_and_non_mapping_files() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config("", "empty.yaml")
    assert {p.path for p in info.value.problems} == {"school", "gateway"}
    with pytest.raises(ConfigError, match="must be a YAML mapping"):
        parse_config("- a\n- b\n", "list.yaml")


def test_relative_outbox_path_is_resolved_against_the_config_file(tmp_path: Path) -> None:
    (tmp_path / "gw.yaml").write_text("school: s\ngateway: g\nstorage: {path: data/outbox.sqlite}\n")
    cfg = load_config(tmp_path / "gw.yaml")
    assert cfg.storage.path == tmp_path / "data" / "outbox.sqlite"


def test_shipped_configs_exist() -> None:
    names = {p.stem for p in SHIPPED}
    assert {"demo-school", "lab", "classroom"} <= names, names


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_every_shipped_config_passes_check(path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "edugate.cli.main", "check", str(path)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert ": OK:" in result.stdout


def test_json_schema_describes_every_driver() -> None:
    schema = json_schema()
    text = json.dumps(schema)
    for name in driver_classes():
        assert f'"const": "{name}"' in text or f'"enum": ["{name}"]' in text
    assert schema["properties"]["uplink"]
    assert schema["additionalProperties"] is False


def test_shipped_json_schema_is_up_to_date() -> None:
    shipped = json.loads((REPO / "config" / "edugate.schema.json").read_text())
    assert shipped == json.loads(json.dumps(json_schema())), "run: edugate schema -o config/edugate.schema.json"


def test_a_config_imports_only_the_drivers_it_names() -> None:
    """An unused driver's module and libraries (pymodbus, pyserial) cost a gateway no memory."""
    code = (
        "import sys\n"
        "from gateway.config import parse_config\n"
        "cfg = parse_config('school: s\\ngateway: g\\ndevices:\\n  - {id: a, driver: synthetic}\\n')\n"
        "assert cfg.devices[0].driver == 'synthetic'\n"
        "import json\n"
        "print(json.dumps([m for m in sys.modules if m.startswith(('edugate.drivers.', 'pymodbus', 'serial'))]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    loaded = json.loads(out.stdout)
    assert "edugate.drivers.synthetic.driver" in loaded
    heavy = ("edugate.drivers.modbus", "pymodbus", "serial", "edugate.drivers.pn532")
    assert not [m for m in loaded if m.startswith(heavy)], loaded


def test_an_unknown_driver_next_to_known_ones_is_still_reported() -> None:
    text = ("school: s\ngateway: g\ndevices:\n  - {id: a, driver: synthetic}\n"
            "  - {id: b, driver: modbuss, host: x}\n")
    with pytest.raises(ConfigError) as info:
        parse_config(text, "g.yaml")
    assert "g.yaml:5: devices[1].driver: unknown driver 'modbuss'" in str(info.value)
