"""What IT staff see of BLE probes on the gateway's status page, in Chromium (Debian's, through Playwright): a real
``edugate run`` of the BLE sample hears the simulated lab (``python -m edugate.simulators.ble_probes --serve``
in its own process, real advertisement bytes through bleak's BlueZ backend code); the readable probes are
online, the probe with a wrong bind key is named with what to do, and an alert rule on the probes' battery
raises on the probe whose battery is low. The screenshot in docs/drivers/ble.md comes from here
(``EDUGATE_SCREENSHOTS=1``)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from playwright.sync_api import Page, expect

from edugate.simulators.servers import Mosquitto, free_port, wait_for_port
from tests.helpers import REPO, Collector, GatewayProcess, wait_for
from tests.web import conftest as web
from tests.web.conftest import add_users, login, screenshot

playwright, browser, context, page = web.playwright, web.browser, web.context, web.page  # the browser fixtures

pytestmark = pytest.mark.timeout(120)

WRONG_KEY_PROBE = {"id": "lab2-stranger", "driver": "ble", "room": "lab-2", "address": "A4:C1:38:10:00:06",
                   "bind_key": "231d39c1d7cc1ab1aee224cd096db932"}  # the simulated probe encrypts with another key


def test_the_status_page_shows_the_probes_the_wrong_key_and_a_battery_alert(
        page: Page, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    air = tmp_path / "air.sock"
    monkeypatch.setenv("EDUGATE_BLE_BACKEND", "edugate.simulators.ble_probes:SocketBlueZScanner")
    monkeypatch.setenv("EDUGATE_BLE_AIR", str(air))
    broker = Mosquitto(tmp_path / "mosquitto")
    broker.start()
    with (tmp_path / "lab.log").open("wb") as lab_log:
        lab = subprocess.Popen([sys.executable, "-m", "edugate.simulators.ble_probes", "--serve", str(air),
                                "--others", "50"], cwd=REPO, stdout=lab_log, stderr=subprocess.STDOUT)
    sample = yaml.safe_load((REPO / "drivers" / "ble" / "sample.yaml").read_text())
    port = free_port()
    gw = GatewayProcess(tmp_path / "gw", {
        "school": sample["school"], "gateway": sample["gateway"], "name": sample["name"],
        "uplink": {"port": broker.port, "health_interval_s": 3600},
        "web": {"enabled": True, "port": port},
        "alerts": {"rules": [{"id": "probe-battery-low", "description": "A BLE probe's battery is low",
                              "driver": "ble", "value": "battery", "below": 70, "hysteresis": 5,
                              "severity": "info"}]},
        "devices": [*sample["devices"], WRONG_KEY_PROBE]})
    add_users("--config", gw.config_path, tmp_path)
    collector = Collector(broker.port, client_id="ble-status-collector").start()
    try:
        wait_for(lambda: air.exists() or lab.poll() is not None, 20, "the simulated lab serving its air")
        assert lab.poll() is None, (tmp_path / "lab.log").read_text()
        gw.start()
        wait_for_port("127.0.0.1", port, timeout=20)
        login(page, f"http://127.0.0.1:{port}", "victor", "/status")
        for device in ("lab1-fridge", "lab1-incubator", "lab2-bench-th"):
            expect(page.locator(f'tr[data-device="{device}"] td.state')).to_have_attribute(
                "data-state", "online", timeout=20_000)
        # the wrong key is named on the page: the device, its address and what to check
        expect(page.locator('tr[data-device="lab2-stranger"] td.last-error')).to_contain_text(
            "lab2-stranger (A4:C1:38:10:00:06): decryption failed: wrong bind_key?", timeout=20_000)
        # the PVVX thermometer's battery (64 %) is below the rule's 70 %: one alert, on that probe only
        alert = page.locator("#alerts-active tr[data-rule=probe-battery-low]")
        expect(alert).to_have_count(1, timeout=20_000)
        expect(alert).to_contain_text("lab2-bench-th")
        expect(alert.locator(".value")).to_have_text("battery 64 (below 70)")
        screenshot(page, "ble-status", tmp_path)
        raised = wait_for(lambda: {r["seq"]: r for r in collector.records["event"] if r["type"] == "alert"}, 20,
                          "the alert event at the broker")  # by seq: a copy resent by QoS 1 is one record
        assert [(r["device"], r["data"]["rule"], r["data"]["state"], r["data"]["value"]) for r in raised.values()] \
            == [("lab2-bench-th", "probe-battery-low", "raised", 64)]
        assert not [r for r in collector.records["telemetry"] if r["device"] == "lab2-stranger"]
    finally:
        collector.stop()
        gw.stop()
        lab.terminate()
        lab.wait(10)
        broker.stop()
