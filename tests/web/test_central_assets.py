"""Central's asset registry through the real path, in a real browser: a gateway with a PJLink projector simulator
over TCP, an inventory CSV and the energy rule's switch-off (and a second school's records published as its
gateway would), Mosquitto, an ingest worker writing the event store, and ``edugate central`` serving the
Equipment page (every school's assets, the KPIs per school and district, CSV) and the fleet view's equipment
section."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from zoneinfo import ZoneInfo

import paho.mqtt.client as mqtt
import pytest
from playwright.sync_api import Page, expect

from edugate.central.assets.registry import RegistryWindow, load_registry
from edugate.central.eventstore import EventStore
from edugate.simulators.servers import Mosquitto, VictoriaMetrics, free_port, wait_for_port
from tests.helpers import REPO, GatewayProcess, ingest_stats, wait_for
from tests.web.conftest import add_users, login, screenshot

pytestmark = pytest.mark.timeout(120)

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@dataclass
class City:
    base: str
    events_db: Path
    gateways: list[GatewayProcess]
    workdir: Path


def _spawn(argv: list[str], log: Path) -> subprocess.Popen:
    with log.open("wb") as out:
        return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=REPO)


@pytest.fixture(scope="module")
def city(tmp_path_factory: pytest.TempPathFactory) -> Iterator[City]:
    workdir = tmp_path_factory.mktemp("central-assets")
    broker, store = Mosquitto(workdir / "mosquitto"), VictoriaMetrics(workdir / "victoria")
    broker.start()
    store.start()
    events_db = workdir / "events.db"
    pj_port = free_port()
    procs = [_spawn([sys.executable, "-m", "edugate.simulators.pjlink", "--port", str(pj_port), "--on", "--make",
                     "Epson", "--model", "EB-992F", "--serial", "X4KJ1234", "--hours-per-s", "1"],
                    workdir / "pjlink.log"),
             _spawn([sys.executable, "-m", "edugate.central.cli_ingest", "--client-id", "ingest-assets", "--broker",
                     broker.url, "--store-url", store.url, "--events-db", str(events_db), "--summary-interval",
                     "0", "--stats-file", str(workdir / "ingest-stats.json"), "--stats-interval", "0.1"],
                    workdir / "ingest.log")]
    inventory = workdir / "inventory.csv"
    inventory.write_text("asset_id,name,category,make,model,serial,room,tag\n"
                         "micro-01,Kính hiển vi,microscope,Olympus,CX23,OL-23-0091,lab-2,\n"
                         "robot-01,Robot kit,robotics,LEGO,Spike Prime,,stem-lab,BLE:C4:7F:51:00:00:01\n",
                         encoding="utf-8")
    not_today = WEEKDAYS[(dt.datetime.now(ZoneInfo("Asia/Ho_Chi_Minh")).weekday() + 3) % 7]
    uplink = {"port": broker.port, "keepalive_s": 2, "health_interval_s": 3600}
    probe = {"id": "probe-1", "driver": "synthetic", "room": "lab-1", "interval_s": 1, "values": 1}
    gateways = []
    try:
        wait_for_port("127.0.0.1", pj_port, timeout=20, proc=procs[0])
        # the worker subscribed before the gateway's first records (unconfirmed so far, they go at the PUBACK)
        wait_for(lambda: ingest_stats(workdir / "ingest-stats.json").get("subscribed"), 30, "the ingest worker")
        gateways = [
            GatewayProcess(workdir / "thpt-a", {
                "school": "thpt-a", "gateway": "gw-1", "district": "quan-1", "uplink": uplink,
                "devices": [probe, {"id": "room101-projector", "driver": "pjlink", "room": "room-101",
                                    "host": "127.0.0.1", "port": pj_port, "poll_s": 1, "timeout_s": 2}],
                "assets": {"inventory_csv": str(inventory), "report_every_s": 1,
                           "energy": {"days": [not_today], "grace_min": 0.05, "switch_off": True}}}).start(),
            ]
        wait_for(lambda: _events(events_db, "asset"), 30, "ingest storing thpt-a's events", interval=0.2)
        _publish_other_school(broker)  # a second school, as its gateway sends it (cheaper than a second gateway)
        port = free_port()
        add_users("--users-file", workdir / "central" / "web-users.json", workdir)
        config = workdir / "central.yaml"
        config.write_text(f"broker:\n  brokers: [\"127.0.0.1:{broker.port}\"]\nstore:\n  url: {store.url}\n"
                          f"events:\n  db: {events_db}\npages:\n  port: {port}\n  data_dir: central\n"
                          "api:\n  districts:\n    quan-1: [thpt-a]\n    quan-7: [thcs-b]\n"
                          "assets:\n  declared:\n    thpt-a: 5\n    thcs-b: 4\n")
        procs.append(_spawn([sys.executable, "-m", "edugate.cli.main", "central", "--config", str(config)],
                            workdir / "central.log"))
        wait_for_port("127.0.0.1", port, timeout=20, proc=procs[-1])
        yield City(f"http://127.0.0.1:{port}", events_db, gateways, workdir)
    finally:
        for gw in gateways:
            if gw.proc is not None:
                gw.stop()
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=20)
        store.stop()
        broker.stop()


def _publish_other_school(broker: Mosquitto) -> None:
    """thcs-b's gateway's registry: one sensor, announced and used today (the records a gateway sends)."""
    now = int(time.time() * 1000)
    day = dt.datetime.now(ZoneInfo("Asia/Ho_Chi_Minh")).date().isoformat()
    records = [{"seq": 1, "kind": "event", "device": "probe-1", "ts": now, "synced": True, "type": "asset",
                "data": {"asset": "probe-1", "source": "device", "driver": "synthetic", "room": "lab-1",
                         "first_seen": now}},
               {"seq": 2, "kind": "event", "device": "probe-1", "ts": now, "synced": True, "type": "asset_usage",
                "data": {"asset": "probe-1", "day": day, "power_on_h": 0.0, "powered": False, "lamp_h": None,
                         "readings": 12, "events": 0, "seen": 0, "last_seen": now}}]
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="thcs-b-gw-1")
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    client.publish("edu/v1/thcs-b/gw-1/event", json.dumps(records), qos=1).wait_for_publish(10)
    client.loop_stop()
    client.disconnect()


def _events(db: Path, type_: str) -> list[dict]:
    if not db.exists():
        return []
    store = EventStore(db)
    try:
        return store.query(type_=type_, limit=1000)
    finally:
        store.close()


def test_switch_off_and_the_registry_through_gateway_broker_ingest_and_store(city: City) -> None:
    def switched_off() -> list[dict]:
        return [e for e in _events(city.events_db, "energy_auto_off") if e["data"].get("result") == "ok"]

    [off] = wait_for(switched_off, 40, "the projector switched off by the energy rule", interval=0.2)
    assert off["school"] == "thpt-a" and off["device"] == "room101-projector"
    assert off["data"]["reason"] == "outside school hours"
    wait_for(lambda: _events(city.events_db, "energy_switched_off"), 20, "the driver reading the projector off")

    def registry() -> dict:
        store = EventStore(city.events_db)
        try:
            rows = load_registry(store, int(dt.datetime.now().timestamp() * 1000), RegistryWindow())
        finally:
            store.close()
        found = {(r.school, r.asset): r for r in rows}
        projector = found.get(("thpt-a", "room101-projector"))
        return found if projector is not None and projector.serial and projector.status == "in use" else {}

    rows = wait_for(registry, 30, "the projector in use, with its serial, in the registry", interval=0.3)
    assert {k: r.status for k, r in rows.items()} == {
        ("thpt-a", "room101-projector"): "in use", ("thpt-a", "probe-1"): "in use",
        ("thpt-a", "micro-01"): "not tracked", ("thpt-a", "robot-01"): "never seen",
        ("thcs-b", "probe-1"): "in use"}
    projector = rows[("thpt-a", "room101-projector")]
    assert (projector.make, projector.model, projector.serial, projector.room) == ("Epson", "EB-992F", "X4KJ1234",
                                                                                  "room-101")
    assert projector.power_on_h > 0 and projector.days_used == 1


def test_equipment_page_kpis_filters_and_csv(city: City, page: Page) -> None:
    wait_for(lambda: len({e["school"] for e in _events(city.events_db, "asset_usage")}) == 2, 30,
             "usage from both schools")
    login(page, city.base, "victor", "/assets")
    row = page.locator('tr[data-asset="thpt-a/gw-1/room101-projector"]')
    expect(row).to_contain_text("X4KJ1234", timeout=20_000)
    expect(page.locator('tr[data-asset="thpt-a/gw-1/micro-01"] td.status')).to_have_attribute("data-status",
                                                                                             "not tracked")
    # thpt-a: 4 on record of 5 declared; in use: the projector (once its usage arrived) and the probe of the 3
    # observable (the robot kit's tag never heard)
    expect(page.locator('tr[data-school="thpt-a"] td.on-record')).to_have_text("80.0 %", timeout=20_000)
    expect(page.locator('tr[data-school="thcs-b"] td.on-record')).to_have_text("25.0 %")
    expect(page.locator('tr[data-district="quan-1"] td.in-use')).to_have_text("66.7 %", timeout=20_000)
    expect(page.locator('tr[data-school="thcs-b"] td.in-use')).to_have_text("100.0 %")
    screenshot(page, "central-assets", city.workdir)

    page.select_option("select[name=district]", "quan-7")
    page.wait_for_url("**district=quan-7**")
    expect(page.locator("tr[data-asset]")).to_have_count(1)
    with page.expect_download() as download:
        page.click("#csv")
    text = Path(download.value.path()).read_text(encoding="utf-8-sig")
    assert [(r["school"], r["asset"], r["status"]) for r in csv.DictReader(io.StringIO(text))] == [
        ("thcs-b", "probe-1", "in use")]
    everything = page.request.get(f"{city.base}/assets.csv").text()
    assert "Kính hiển vi" in everything and "X4KJ1234" in everything

    page.goto(f"{city.base}/fleet")
    expect(page.locator('#equipment tr[data-equipment="thpt-a"] td.on-record')).to_have_text("80.0 %")
    expect(page.locator('#equipment tr[data-equipment="thpt-a"] td.in-use')).to_contain_text("66.7 %")
    api = page.request.get(f"{city.base}/api/assets?school=thpt-a").json()
    assert {a["asset"] for a in api["assets"]} == {"room101-projector", "probe-1", "micro-01", "robot-01"}
