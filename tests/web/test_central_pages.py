"""Central's fleet pages in a real browser: three gateways, a broker, an ingest worker, VictoriaMetrics and
``edugate central`` as real processes."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from playwright.sync_api import Locator, Page, expect

from edugate.simulators.servers import Mosquitto, VictoriaMetrics, free_port, wait_for_port
from tests.helpers import REPO, GatewayProcess, wait_for
from tests.web.conftest import add_users, login, screenshot

pytestmark = pytest.mark.timeout(120)

GATEWAYS = {  # (school, gateway): district
    ("thpt-a", "gw-1"): "quan-1",
    ("thpt-b", "gw-1"): "quan-1",
    ("thcs-c", "gw-bus"): "quan-7",
}


@dataclass
class Fleet:
    base: str
    broker: Mosquitto
    store: VictoriaMetrics
    gateways: dict[tuple[str, str], GatewayProcess]
    shots: Path


def _spawn(argv: list[str], log: Path) -> subprocess.Popen:
    with log.open("wb") as out:
        return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=REPO)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    workdir = tmp_path_factory.mktemp("central-pages")
    broker = Mosquitto(workdir / "mosquitto")
    store = VictoriaMetrics(workdir / "victoria")
    broker.start()
    store.start()
    procs = [_spawn([sys.executable, "-m", "edugate.central.cli_ingest", "--client-id", "ingest-web",
             "--broker", broker.url,
                     "--store-url", store.url, "--summary-interval", "0"], workdir / "ingest.log")]
    gateways: dict[tuple[str, str], GatewayProcess] = {}
    for (school, gateway), district in GATEWAYS.items():
        devices = [{"id": "probe-1", "driver": "synthetic", "room": "lab-1", "interval_s": 1, "values": 2}]
        if school == "thpt-b":  # a sensor nobody answers for: a device in error
            devices.append({"id": "fridge", "driver": "modbus", "room": "bio-lab", "host": "127.0.0.1",
                            "port": free_port(), "unit": 1, "profile": "lab-th", "poll_interval_s": 1})
        gateways[(school, gateway)] = GatewayProcess(workdir / f"{school}-{gateway}", {
            "school": school, "gateway": gateway, "district": district,
            "uplink": {"port": broker.port, "keepalive_s": 2, "health_interval_s": 1}, "devices": devices,
        }).start()
    port = free_port()
    data_dir = workdir / "central"
    add_users("--users-file", data_dir / "web-users.json", workdir)
    # central.yaml names the store and the data folder; the broker and the port come as flags (they override it)
    config = workdir / "central.yaml"
    config.write_text(f"broker:\n  brokers: [\"127.0.0.1:{free_port()}\"]\nstore:\n  url: {store.url}\n"
                      f"pages:\n  port: {free_port()}\n  data_dir: central\n")
    procs.append(_spawn([sys.executable, "-m", "edugate.cli.main", "central", "--config", str(config),
                         "--broker", broker.url, "--port", str(port)], workdir / "central.log"))
    try:
        wait_for_port("127.0.0.1", port, timeout=20, proc=procs[-1])
        yield Fleet(f"http://127.0.0.1:{port}", broker, store, gateways, workdir)
    finally:
        for gw in gateways.values():
            if gw.proc is not None:
                gw.stop()
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=20)
        store.stop()
        broker.stop()


def _row(page: Page, school: str, gateway: str) -> Locator:
    return page.locator(f'tr[data-gateway="{school}/{gateway}"]')


def test_fleet_shows_every_gateway_with_backlog_and_devices_in_error(fleet: Fleet, page: Page) -> None:
    login(page, fleet.base, "victor", "/fleet")
    for school, gateway in GATEWAYS:
        expect(_row(page, school, gateway).locator("td.status")).to_have_attribute("data-status", "online")
    expect(_row(page, "thpt-a", "gw-1")).to_contain_text(re.compile(r"\d+ records"), timeout=20_000)  # health
    expect(_row(page, "thpt-b", "gw-1")).to_contain_text("fridge: offline", timeout=15_000)
    expect(page.locator("#alerts")).to_contain_text("thpt-b/gw-1: device fridge offline")
    fleet_json = page.request.get(f"{fleet.base}/api/fleet").json()
    assert {(g["school"], g["gateway"]) for g in fleet_json["gateways"]} == set(GATEWAYS)
    assert {g["district"] for g in fleet_json["gateways"]} == {"quan-1", "quan-7"}


def test_filter_by_district_and_school(fleet: Fleet, page: Page) -> None:
    login(page, fleet.base, "victor", "/fleet")
    page.select_option("select[name=district]", "quan-7")
    page.wait_for_url(re.compile(r"district=quan-7"))
    expect(page.locator("tr[data-gateway]")).to_have_count(1)
    expect(_row(page, "thcs-c", "gw-bus")).to_be_visible()
    page.goto(f"{fleet.base}/fleet?school=thpt-b")
    expect(page.locator("tr[data-gateway]")).to_have_count(1)
    expect(_row(page, "thpt-b", "gw-1")).to_be_visible()


def test_an_alert_event_from_a_bus_is_listed(fleet: Fleet, page: Page) -> None:
    """A ``bus_left_onboard`` event (as the bus gateway sends it) goes broker -> ingest -> store -> alert list."""
    record = {"seq": 10_000, "kind": "event", "device": "bus-reader", "ts": int(time.time() * 1000), "synced": True,
              "type": "bus_left_onboard", "data": {"card": "p1-0123456789abcdef0123456789abcdef", "alert": True}}
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="fake-bus")
    client.connect("127.0.0.1", fleet.broker.port)
    client.loop_start()
    client.publish("edu/v1/thcs-c/gw-bus/event", json.dumps([record]), qos=1).wait_for_publish(10)
    client.loop_stop()
    client.disconnect()
    login(page, fleet.base, "victor", "/fleet")
    expect(page.locator("#alerts")).to_contain_text("1 × bus_left_onboard at bus-reader", timeout=20_000)
    assert "p1-" not in page.content()  # a pseudonym is never shown (nor stored as a label)


def test_gateway_page_plots_from_the_store(fleet: Fleet, page: Page) -> None:
    login(page, fleet.base, "victor", "/gateways/thpt-a/gw-1")
    expect(page.locator("h1")).to_contain_text("thpt-a / gw-1")
    series = f"{fleet.base}/api/gateways/thpt-a/gw-1/series?range=1h"

    def complete() -> bool:
        data = page.request.get(series).json()
        return bool(data["devices"] and "outbox_records" in data["health"]["values"] and data["online"]["ts"])

    wait_for(complete, 30, "the store to have plot data", interval=1)
    page.reload()
    expect(page.locator('[data-device="probe-1"] [data-plot="probe-1.v0"] canvas')).to_have_count(1, timeout=20_000)
    expect(page.locator('[data-plot="_gateway.outbox_records"] canvas')).to_have_count(1)
    expect(page.locator('[data-plot="_gateway.gateway_online"] canvas')).to_have_count(1)
    page.wait_for_timeout(500)
    page.screenshot(path=str(fleet.shots / "central-gateway.png"), full_page=True)  # the README has the demo's
    assert page.request.get(f"{fleet.base}/gateways/nope/gw-1").status == 404


def test_a_killed_gateway_shows_offline(fleet: Fleet, page: Page) -> None:
    login(page, fleet.base, "victor", "/fleet")
    status = _row(page, "thpt-a", "gw-1").locator("td.status")
    expect(status).to_have_attribute("data-status", "online")
    fleet.gateways[("thpt-a", "gw-1")].kill()  # kill -9: only the broker's last will says so
    killed = time.monotonic()
    expect(status).to_have_attribute("data-status", "offline", timeout=15_000)
    took = time.monotonic() - killed
    expect(status).to_contain_text("connection lost")
    expect(page.locator("#alerts")).to_contain_text("thpt-a/gw-1 offline")
    assert took < 10, f"offline shown after {took:.1f} s (keepalive 2 s)"
    screenshot(page, "central-fleet", fleet.shots)
    wait_for(lambda: page.request.get(f"{fleet.base}/api/fleet").json()["summary"]["offline"] == 1, 5, "summary")
