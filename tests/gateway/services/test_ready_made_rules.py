"""The ready-made alert rules of the example configs (issue 15): lab fridge too warm, CO2 over 1 000 ppm in a
classroom, fume hood airflow low, network closet hot, probe battery low. Each is loaded from the shipped file
as a gateway loads it, selects a device of that file, and raises once (and clears) when readings of that
device cross it through the real pipeline and outbox."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from edugate.contract.records import Reading
from edugate.gateway.config import load_config, load_warnings
from edugate.gateway.runtime.clock import Clock
from edugate.gateway.runtime.outbox import Outbox
from edugate.gateway.runtime.pipeline import Pipeline
from edugate.gateway.services.alerts import AlertsService
from edugate.gateway.services.base import ServiceSetup
from tests.helpers import REPO

READY_MADE = [  # (config, rule, device, value, out, back): the five, and what drives each
    ("lab.yaml", "fridge-too-warm", "fridge-1", "temperature", 9.5, 6.0),
    ("classroom.yaml", "co2-high", "r203-co2", "co2", 1400, 700),
    ("lab.yaml", "fume-hood-airflow-low", "hood-1", "airflow", 0.25, 0.5),
    ("lab.yaml", "closet-hot", "closet-th", "temperature", 41.0, 28.0),
    ("lab.yaml", "probe-battery-low", "bio-incubator", "battery", 9, 60),
]


def alerts_of(config: str, tmp_path: Path) -> tuple[AlertsService, dict[str, str | None], str]:
    cfg = load_config(REPO / "config" / config)
    devices = [d for d in cfg.devices if d.enabled]
    section = getattr(cfg, "alerts", None)
    assert section is not None, f"config/{config} has no alerts section"
    service = AlertsService.from_config(ServiceSetup.of(section, devices, cfg.timezone, tmp_path))
    assert service is not None
    service.state_file = tmp_path / f"{config}.alerts.json"
    return service, {d.id: d.room for d in devices}, cfg.timezone


@pytest.mark.parametrize("config", ["lab.yaml", "classroom.yaml"])
def test_every_rule_of_the_example_configs_watches_a_device_of_that_config(config: str, tmp_path: Path) -> None:
    service, _, _ = alerts_of(config, tmp_path)
    watching = service.status()["rules"]
    assert watching and all(rule["devices"] for rule in watching), \
        [rule["id"] for rule in watching if not rule["devices"]]


@pytest.mark.parametrize(("config", "rule", "device", "value", "out", "back"), READY_MADE,
                         ids=[r[1] for r in READY_MADE])
async def test_a_ready_made_rule_raises_once_and_clears(config: str, rule: str, device: str, value: str,
                                                        out: float, back: float, tmp_path: Path) -> None:
    service, rooms, tz = alerts_of(config, tmp_path)
    [watched] = [r for r in service.status()["rules"] if r["id"] == rule]
    assert device in watched["devices"]
    box = await Outbox.open(tmp_path / "o.sqlite", budget_bytes=1 << 30)
    try:
        pipe = Pipeline(box, Clock("always"), rooms, rules=[service.stage])
        start = dt.datetime(2026, 12, 2, 9, 0, tzinfo=ZoneInfo(tz)).timestamp()  # a school morning
        steps = int(watched["for_s"] // 60) + 3  # one reading a minute, out for longer than the rule's for_s
        series = [back] * 2 + [out] * steps + [back] * 2
        for i, x in enumerate(series):
            await pipe.submit(Reading(device, {value: x}, ts=start + 60 * i))
    finally:
        await box.close()
    events = [(e.device, e.data["rule"], e.data["state"]) for e in service.take_events()]
    assert events == [(device, rule, "raised"), (device, rule, "cleared")], events


def test_check_warns_of_a_rule_that_selects_no_device_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "gw.yaml"
    path.write_text("school: s\ngateway: g\ndevices:\n"
                    "  - {id: fridge-1, driver: modbus, room: bio-lab, host: 127.0.0.1, port: 502, unit: 1, "
                    "profile: lab-th}\n"
                    "alerts:\n  rules:\n"
                    "    - {id: fridge-too-warm, device: fridge-l, value: temperature, above: 8}\n"
                    "    - {id: lab-hot, room: bio-lab, driver: ble, value: temperature, above: 30}\n"
                    "    - {id: lab-co2, room: bio-lab, value: co2, above: 1000}\n")
    warnings = [str(w) for w in load_warnings(path, load_config(path))]
    assert warnings == [
        f"{path}:7: alerts.rules[0].device: warning: rule fridge-too-warm selects no enabled device of this "
        "gateway, so it never raises (the config's devices: fridge-1)",
        f"{path}:8: alerts.rules[1].driver: warning: rule lab-hot selects no enabled device of this gateway, so "
        "it never raises (the config's drivers: modbus)"]


def test_check_reads_the_rules_file_too(tmp_path: Path) -> None:
    rules = tmp_path / "alert-rules.yaml"
    path = tmp_path / "gw.yaml"
    path.write_text("school: s\ngateway: g\ndevices:\n"
                    "  - {id: fridge-1, driver: modbus, room: bio-lab, host: 127.0.0.1, port: 502, unit: 1, "
                    f"profile: lab-th}}\nalerts:\n  rules_file: {rules}\n")
    assert [str(w) for w in load_warnings(path, load_config(path))] == [
        f"{path}:6: alerts.rules_file: warning: {rules} does not exist yet: no rules from it until it does"]
    rules.write_text("rules:\n  - {id: too-warm, device: fridge-1, value: temperature, abve: 8}\n"
                     "  - {id: too-cold, device: fridge-2, value: temperature, below: 2}\n")
    assert [str(w) for w in load_warnings(path, load_config(path))] == [
        f"{path}:6: alerts.rules_file: warning: {rules}:2: rules[0].abve: unknown key (a typo?)"]
    rules.write_text("rules:\n  - {id: too-cold, device: fridge-2, value: temperature, below: 2}\n")
    assert [str(w) for w in load_warnings(path, load_config(path))] == [
        f"{path}:6: alerts.rules_file: warning: {rules}: rule too-cold selects no enabled device of this gateway, "
        "so it never raises (the config's devices: fridge-1)"]
