"""The alerts panel of the gateway's status page in Chromium (Debian's, through Playwright), served by a real
``edugate run`` polling a Modbus simulator: an alert raised, acknowledged by a teacher (a viewer), cleared."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from edugate.simulators.modbus import ModbusSimulator, SimulatorThread
from edugate.simulators.servers import Mosquitto, free_port, wait_for_port
from tests.helpers import Collector, GatewayProcess, wait_for
from tests.web import conftest as web
from tests.web.conftest import add_users, login, screenshot

playwright, browser, context, page = web.playwright, web.browser, web.context, web.page  # the browser fixtures

pytestmark = pytest.mark.timeout(120)


@dataclass
class Lab:
    base: str
    sim: ModbusSimulator
    gateway: GatewayProcess
    collector: Collector
    shots: Path


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    workdir = tmp_path_factory.mktemp("alerts-page")
    broker = Mosquitto(workdir / "mosquitto")
    broker.start()
    sim = ModbusSimulator({1: "lab-th", 2: "co2-ndir"}, drift=False)
    sim.set_value(1, "temperature", 5.0)
    sim.set_value(2, "co2", 600)
    thread = SimulatorThread(sim)
    thread.start()
    port = free_port()
    gw = GatewayProcess(workdir / "gw", {
        "school": "thcs-lab", "gateway": "gw-lab", "name": "THCS Lab, biology",
        "uplink": {"port": broker.port, "health_interval_s": 3600},
        "web": {"enabled": True, "port": port},
        "alerts": {"rules": [
            {"id": "fridge-too-warm", "description": "Biology lab fridge above 8 °C", "device": "bio-fridge",
             "value": "temperature", "above": 8, "hysteresis": 0.5, "severity": "critical"},
            {"id": "co2-high", "description": "CO2 over 1000 ppm; open the windows", "room": "bio-lab",
             "value": "co2", "above": 1000, "hysteresis": 100, "for_s": 1}]},
        "devices": [
            {"id": "bio-fridge", "driver": "modbus", "room": "bio-lab", "host": "127.0.0.1", "port": sim.port,
             "unit": 1, "profile": "lab-th", "poll_interval_s": 0.2},
            {"id": "bio-co2", "driver": "modbus", "room": "bio-lab", "host": "127.0.0.1", "port": sim.port,
             "unit": 2, "profile": "co2-ndir", "poll_interval_s": 0.2},
        ],
    })
    add_users("--config", gw.config_path, workdir)
    collector = Collector(broker.port, client_id="alerts-page-collector").start()
    gw.start()
    try:
        wait_for_port("127.0.0.1", port, timeout=20)
        yield Lab(f"http://127.0.0.1:{port}", sim, gw, collector, workdir)
    finally:
        collector.stop()
        gw.stop()
        thread.stop()
        broker.stop()


def alert_states(lab: Lab) -> list[tuple[str, str, str | None]]:
    with lab.collector.lock:
        events = sorted((r for r in lab.collector.records["event"] if r["type"] == "alert"), key=lambda r: r["seq"])
    return [(e["data"]["rule"], e["data"]["state"], e["data"].get("by")) for e in events]


def test_a_teacher_sees_an_alert_acknowledges_it_and_it_clears(lab: Lab, page: Page) -> None:
    login(page, lab.base, "victor", "/status")  # a viewer: lab teachers are not admins
    expect(page.locator("#alerts-none")).to_contain_text("No alert is raised. 2 rules watching.")
    lab.sim.set_value(1, "temperature", 9.2)
    lab.sim.set_value(2, "co2", 1400)
    row = page.locator("#alerts-active tr[data-rule=fridge-too-warm]")
    expect(row).to_be_visible()  # the panel refreshes itself every 2 s
    expect(row.locator(".value")).to_have_text("temperature 9.2 (above 8)")
    expect(row).to_have_attribute("data-severity", "critical")
    co2 = page.locator("#alerts-active tr[data-rule=co2-high]")
    expect(co2).to_be_visible()
    expect(page.locator("#alerts-active-count")).to_have_text("2 raised")
    expect(page.locator("#alerts-active tbody tr").first).to_have_attribute("data-rule", "fridge-too-warm")
    screenshot(page, "labs-alerts", lab.shots)
    # no CSRF token: refused
    assert page.request.post(f"{lab.base}/api/alerts/fridge-too-warm/bio-fridge/ack").status == 403
    row.locator("button", has_text="Acknowledge").click()
    expect(page).to_have_url(re.compile(r"/status#alerts$"))
    acked = page.locator("#alerts-active tr[data-rule=fridge-too-warm] .ack")
    expect(acked).to_contain_text("seen by victor")
    wait_for(lambda: ("fridge-too-warm", "acknowledged", "victor") in alert_states(lab), 20,
             "the acknowledgement on the uplink")
    assert "acknowledged on the status page by victor (viewer)" in lab.gateway.log()
    # an alert that is not raised cannot be acknowledged
    csrf = page.locator("meta[name=csrf-token]").get_attribute("content") or ""
    missing = page.request.post(f"{lab.base}/api/alerts/fridge-too-warm/bio-co2/ack", headers={"X-CSRF-Token": csrf})
    assert missing.status == 404 and "no raised alert" in missing.json()["detail"]
    # back to normal: both clear, the panel says so
    lab.sim.set_value(1, "temperature", 7.8)  # within 0.5 of the limit: still raised
    expect(page.locator("#alerts-active tr[data-rule=fridge-too-warm] .value")).to_have_text(
        "temperature 7.8 (above 8)")
    lab.sim.set_value(1, "temperature", 6.0)
    lab.sim.set_value(2, "co2", 700)
    expect(page.locator("#alerts-none")).to_be_visible()
    expect(page.locator("#alerts-counts")).to_contain_text("Raised since the gateway started 2")
    wait_for(lambda: len(alert_states(lab)) >= 5, 20, "five alert events")
    states = alert_states(lab)
    assert sorted(states) == sorted([("fridge-too-warm", "raised", None), ("co2-high", "raised", None),
                                     ("fridge-too-warm", "acknowledged", "victor"),
                                     ("fridge-too-warm", "cleared", None), ("co2-high", "cleared", None)])
