"""Modbus config validation: every bad entry names the file, line and path; profiles load and are found."""

from __future__ import annotations

from pathlib import Path

import pytest

from edugate.drivers.modbus.config import BUILTIN_PROFILES, PROFILE_PATH_ENV, available_profiles, load_profile
from edugate.drivers.modbus.driver import ModbusDeviceConfig, ModbusDriver
from edugate.gateway.config import ConfigError, load_config, parse_config

REPO = Path(__file__).resolve().parents[3]
HEAD = "school: s\ngateway: g\ndevices:\n"


@pytest.fixture(autouse=True)
def _no_profile_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PROFILE_PATH_ENV, raising=False)


def _problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "site.yaml")
    return [str(p) for p in info.value.problems]


def _device(yaml_device: str) -> ModbusDeviceConfig:
    cfg = parse_config(f"school: s\ngateway: g\ndevices:\n{yaml_device}", "site.yaml")
    dev = cfg.devices[0]
    assert isinstance(dev, ModbusDeviceConfig)
    return dev


def test_the_sample_config_loads_with_profiles_and_overrides() -> None:
    cfg = load_config(REPO / "drivers" / "modbus" / "sample.yaml")
    devices = {d.id: d for d in cfg.devices}
    assert all(isinstance(d, ModbusDeviceConfig) for d in devices.values())
    th2 = devices["lab2-th"]
    assert isinstance(th2, ModbusDeviceConfig)
    temp = next(p for p in th2.points if p.name == "temperature")
    assert (temp.scale, temp.offset, temp.type, temp.function, temp.address) == (0.1, -0.4, "int16", "input", 1)
    assert temp.decode([250]) == 24.6
    co2 = devices["lab1-co2"]
    assert isinstance(co2, ModbusDeviceConfig)
    assert [p.name for p in co2.points] == ["temperature", "co2"]  # humidity disabled
    fridge = devices["fridge-1"]
    assert isinstance(fridge, ModbusDeviceConfig)
    assert (fridge.transport, fridge.endpoint_label, fridge.serial_settings) == ("rtu", "/dev/ttyUSB0", "9600 8N1")
    power = devices["lab1-power"]
    assert isinstance(power, ModbusDeviceConfig)
    assert [b.describe() for b in ModbusDriver(power).blocks] == [
        "input registers 0..13", "input registers 30..31", "input registers 70..71", "input registers 342..343"]


def test_every_builtin_profile_is_valid_and_documents_the_format() -> None:
    names = available_profiles()
    assert {"lab-th", "co2-ndir", "ph-meter", "energy-meter"} <= set(names)
    for name in names:
        profile = load_profile(name)
        text = (BUILTIN_PROFILES / f"{name}.yaml").read_text()
        assert "# Format" in text and "word_order" in text, name
        assert all(r.sim is not None for r in profile.registers), f"{name}: the simulator needs a sim range"


def test_the_lab_sensor_maps_are_the_usual_ones() -> None:
    th = {r.name: r for r in load_profile("lab-th").registers}
    assert (th["temperature"].type, th["temperature"].scale, th["temperature"].unit) == ("int16", 0.1, "°C")
    assert (th["humidity"].type, th["humidity"].scale, th["humidity"].unit) == ("uint16", 0.1, "%RH")
    co2 = {r.name: r for r in load_profile("co2-ndir").registers}
    assert (co2["co2"].type, co2["co2"].scale, co2["co2"].unit, co2["co2"].address) == ("uint16", 1.0, "ppm", 2)
    ph = {r.name: r for r in load_profile("ph-meter").registers}
    assert (ph["ph"].type, ph["ph"].scale) == ("uint16", 0.01)


def test_profiles_are_found_on_the_profile_path_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "fridge.yaml").write_text(
        "description: lab fridge controller\nregisters:\n"
        "  - {name: temperature, address: 100, function: input, type: int16, scale: 0.1}\n")
    (tmp_path / "lab-th.yaml").write_text(
        "description: a school's own variant\nregisters:\n  - {name: temperature, address: 7, type: int16}\n")
    monkeypatch.setenv(PROFILE_PATH_ENV, f"/nonexistent:{tmp_path}")
    fridge = _device("  - {id: f1, driver: modbus, host: h, profile: fridge}\n")
    assert [(p.name, p.address) for p in fridge.points] == [("temperature", 100)]
    variant = _device("  - {id: t1, driver: modbus, host: h, profile: lab-th}\n")
    assert [(p.name, p.address) for p in variant.points] == [("temperature", 7)]
    [unknown] = _problems(f"{HEAD}  - {{id: x, driver: modbus, host: h, profile: y}}\n")
    assert "known: co2-ndir, energy-meter, fridge, lab-th, ph-meter;" in unknown


def test_a_profile_by_absolute_path(tmp_path: Path) -> None:
    path = tmp_path / "kiln.yaml"
    path.write_text("description: kiln\nmax_gap: 3\nregisters:\n  - {name: temperature, address: 0}\n"
                    "  - {name: setpoint, address: 4}\n")
    dev = _device(f"  - {{id: k1, driver: modbus, host: h, profile: {path}}}\n")
    assert dev.effective_max_gap == 3
    assert [b.describe() for b in ModbusDriver(dev).blocks] == ["holding registers 0..4"]
    dev0 = _device(f"  - {{id: k1, driver: modbus, host: h, profile: {path}, max_gap: 0}}\n")
    assert len(ModbusDriver(dev0).blocks) == 2


def test_an_invalid_profile_file_is_reported_at_the_device(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("description: broken\nregisters:\n  - {name: a, address: 0}\n  - {name: a, address: 1}\n")
    missing = tmp_path / "missing.yaml"

    def problems(profile: str) -> list[str]:
        return _problems(f"{HEAD}  - {{id: x, driver: modbus, host: h, profile: {profile}}}\n")

    assert problems(str(path)) == [f"site.yaml:4: devices[0].profile: profile {path} is invalid: registers[1].name: "
                                   "duplicate register name 'a' (first used by registers[0])"]
    assert problems(str(missing)) == [f"site.yaml:4: devices[0].profile: profile file {missing} does not exist"]
    assert problems("../lab-th.yaml") == ["site.yaml:4: devices[0].profile: profile '../lab-th.yaml': give a "
                                          "profile name or an absolute path to a .yaml file"]


def test_disabling_every_register_is_an_error() -> None:
    assert _problems("school: s\ngateway: g\ndevices:\n  - id: x\n    driver: modbus\n    host: h\n"
                     "    profile: lab-th\n    overrides:\n      temperature: {enabled: false}\n"
                     "      humidity: {enabled: false}\n") == [
        "site.yaml:8: devices[0].overrides: every register is disabled: nothing to read"]


def test_defaults() -> None:
    dev = _device("  - {id: x, driver: modbus, host: 10.0.0.9, profile: co2-ndir}\n")
    assert (dev.transport, dev.port, dev.unit, dev.poll_interval_s, dev.timeout_s, dev.tcp_connections) == (
        "tcp", 502, 1, 1.0, 1.0, 1)
    assert dev.endpoint_label == "10.0.0.9:502"
    assert [p.name for p in dev.points] == ["humidity", "temperature", "co2"]
    assert hash(dev) == hash(_device("  - {id: x, driver: modbus, host: 10.0.0.9, profile: co2-ndir}\n"))
