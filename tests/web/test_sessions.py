"""Experiment sessions in Chromium (Debian's, through Playwright): a lab teacher starts a session on the live
readings page, watches its plot grow, stops it and downloads the CSV, whose rows are checked against what the
simulated probes sent and what crossed the broker. A real ``edugate run`` reads three thermometer probes
over ptys (real bytes)."""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from edugate.simulators.servers import Mosquitto, free_port, wait_for_port
from edugate.simulators.thermometer import ThermometerSimulator
from tests.helpers import Collector, GatewayProcess, wait_for
from tests.web.conftest import add_users, login, screenshot

pytestmark = pytest.mark.timeout(150)

PROBES = ("bench-1", "bench-2", "bench-3")
NAME = "Cooling of water, class 10A"


@dataclass
class Lab:
    base: str
    gateway: GatewayProcess
    collector: Collector
    probes: dict[str, ThermometerSimulator]
    shots: Path
    sent: dict[str, list[float]] = field(default_factory=lambda: {p: [] for p in PROBES})

    def send(self, device: str, n: int) -> list[float]:
        """``n`` new, distinct temperatures from one probe (one line each, real bytes over its pty)."""
        out = []
        for _ in range(n):
            value = round(20 + 0.37 * len(self.sent[device]) + PROBES.index(device), 2)
            assert self.probes[device].send(T=value)
            self.sent[device].append(value)
            out.append(value)
        return out

    def telemetry(self, device: str) -> list[dict[str, Any]]:
        with self.collector.lock:
            seen = {r["seq"]: r for r in self.collector.records["telemetry"] if r["device"] == device}
        return [seen[s] for s in sorted(seen)]


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    workdir = tmp_path_factory.mktemp("sessions")
    broker = Mosquitto(workdir / "mosquitto")
    broker.start()
    probes = {p: ThermometerSimulator(workdir / f"tty-{p}") for p in PROBES}
    for probe in probes.values():
        probe.port.plug()  # no event loop needed: the probes only write
    port = free_port()
    gw = GatewayProcess(workdir / "gw", {
        "school": "thcs-lab", "gateway": "gw-stem", "name": "THCS Lab, STEM room",
        "uplink": {"port": broker.port, "health_interval_s": 3600},
        "web": {"enabled": True, "port": port},
        "sessions": {},
        "devices": [{"id": p, "driver": "thermometer", "room": "lab-1", "port": str(workdir / f"tty-{p}"),
                     "names": {"T": "temperature"}} for p in PROBES],
    })
    add_users("--config", gw.config_path, workdir)
    collector = Collector(broker.port, client_id="sessions-collector").start()
    gw.start()
    lab = Lab(f"http://127.0.0.1:{port}", gw, collector, probes, workdir)
    try:
        wait_for_port("127.0.0.1", port, timeout=20)
        for p in PROBES:  # each driver has opened its port once a line comes through
            wait_for(lambda p=p: lab.send(p, 1) and lab.telemetry(p), 20, f"{p} reading")
        yield lab
    finally:
        collector.stop()
        gw.stop()
        for probe in probes.values():
            probe.port.unplug()
        broker.stop()


def points(page: Page, device: str) -> int:
    value = page.locator(f"[data-plot='{device}.temperature']").get_attribute("data-points")
    return int(value or 0)


def test_start_watch_the_plot_grow_stop_and_download_the_csv(lab: Lab, page: Page) -> None:
    login(page, lab.base, "victor", "/live?room=lab-1")  # a viewer: lab teachers are not admins
    panel = page.locator("#session-panel")
    expect(panel.locator("#session-start")).to_be_visible()
    page.fill("#session-name", NAME)
    page.uncheck("input[name=dev_bench-3]")  # bench-3 is another group's: not recorded
    page.click("#session-start button[type=submit]")
    expect(page).to_have_url(re.compile(r"/sessions/s-\d{8}-\d{6}-[0-9a-f]{4}$"))
    session_id = page.url.rsplit("/", 1)[-1]
    expect(page.locator("h1")).to_contain_text(NAME)
    expect(page.locator("#session-state")).to_have_text("recording")

    first = {p: lab.send(p, 5) for p in PROBES}
    wait_for(lambda: points(page, "bench-1") == 5 and points(page, "bench-2") == 5, 20, "5 points per plot")
    more = {p: lab.send(p, 7) for p in PROBES}
    wait_for(lambda: points(page, "bench-1") == 12 and points(page, "bench-2") == 12, 20, "the plots grown to 12")
    assert page.locator("[data-plot='bench-3.temperature']").count() == 0
    expect(page.locator("#session-rows")).to_have_text("24")
    screenshot(page, "labs-session", lab.shots)

    # the live page says it is recording, and offers to start only on the device left free
    page.goto(f"{lab.base}/live?room=lab-1")
    expect(page.locator("#session-recording")).to_be_visible()
    expect(page.locator(".session-running .session-name")).to_have_text(NAME)
    expect(page.locator("#session-start input[type=checkbox]")).to_have_count(1)
    screenshot(page, "labs-live-session", lab.shots)
    page.click("#session-stop")
    expect(page).to_have_url(f"{lab.base}/sessions/{session_id}")
    expect(page.locator("#session-state")).to_have_text("stopped")
    after = lab.send("bench-1", 3)  # after the stop: not in the session
    wait_for(lambda: len(lab.telemetry("bench-1")) >= len(lab.sent["bench-1"]), 20, "every bench-1 reading")

    with page.expect_download() as download:
        page.click("#session-csv")
    rows = list(csv.DictReader(io.StringIO(Path(download.value.path()).read_text())))
    assert download.value.suggested_filename == f"{session_id}.csv"
    by_device: dict[str, list[float]] = {}
    for row in rows:
        by_device.setdefault(row["device"], []).append(float(row["temperature"]))
        assert row["room"] == "lab-1" and row["time"].startswith("20")
    assert by_device == {p: first[p] + more[p] for p in ("bench-1", "bench-2")}, "exactly what the probes sent"
    # ... and exactly the records that crossed the broker with the session's id, at the same times
    marked = {(r["device"], r["ts"], r["values"]["temperature"]) for p in PROBES for r in lab.telemetry(p)
              if r.get("session") == session_id}
    assert {(r["device"], int(r["ts_ms"]), float(r["temperature"])) for r in rows} == marked
    unmarked = [r["values"]["temperature"] for r in lab.telemetry("bench-1") if "session" not in r]
    assert unmarked[-3:] == after and not [r for r in lab.telemetry("bench-3") if "session" in r]

    with page.expect_download() as meta_download:
        page.click("#session-json")
    meta = json.loads(Path(meta_download.value.path()).read_text())
    assert {k: meta[k] for k in ("id", "name", "devices", "started_by", "stopped_by", "rows", "running")} == {
        "id": session_id, "name": NAME, "devices": ["bench-1", "bench-2"], "started_by": "victor",
        "stopped_by": "victor", "rows": 24, "running": False}

    # the start and the stop went up as events, one per device
    def session_events() -> list[tuple[str, str]] | None:
        with lab.collector.lock:
            found = sorted((r["device"], r["data"]["action"]) for r in lab.collector.records["event"]
                           if r["type"] == "session" and r["data"]["session"] == session_id)
        return found if len(found) == 4 else None

    assert wait_for(session_events, 20, "four session events") == [
        ("bench-1", "started"), ("bench-1", "stopped"), ("bench-2", "started"), ("bench-2", "stopped")]
    page.goto(f"{lab.base}/sessions")
    row = page.locator(f"#sessions tr[data-session='{session_id}']")
    expect(row).to_contain_text(NAME)
    expect(row).to_have_attribute("data-running", "false")


def test_a_device_cannot_be_in_two_sessions_and_a_session_needs_a_name(lab: Lab, page: Page) -> None:
    login(page, lab.base, "victor", "/live?device=bench-3")
    csrf = page.locator("meta[name=csrf-token]").get_attribute("content") or ""
    api = page.request
    assert api.post(f"{lab.base}/api/sessions", data={"name": "x", "devices": ["bench-3"]}).status == 403  # no CSRF
    started = api.post(f"{lab.base}/api/sessions", data={"name": "Pendulum", "devices": ["bench-3"]},
                       headers={"X-CSRF-Token": csrf})
    assert started.status == 201, started.text()
    busy = api.post(f"{lab.base}/api/sessions", data={"name": "Other", "devices": ["bench-3", "bench-1"]},
                    headers={"X-CSRF-Token": csrf})
    assert busy.status == 409 and "bench-3 in 'Pendulum'" in busy.json()["detail"]
    nameless = api.post(f"{lab.base}/api/sessions", data={"name": " ", "devices": ["bench-1"]},
                        headers={"X-CSRF-Token": csrf})
    assert nameless.status == 409 and "name" in nameless.json()["detail"]
    unknown = api.post(f"{lab.base}/api/sessions", data={"name": "x", "devices": ["nope"]},
                       headers={"X-CSRF-Token": csrf})
    assert unknown.status == 409 and "no device 'nope'" in unknown.json()["detail"]
    # the form shows the reason on the page
    page.goto(f"{lab.base}/live?device=bench-3")
    expect(page.locator("#session-start")).to_have_count(0)  # bench-3 is busy: nothing to start here
    stopped = api.post(f"{lab.base}/api/sessions/{started.json()['id']}/stop", headers={"X-CSRF-Token": csrf})
    assert stopped.status == 200 and stopped.json()["stopped_by"] == "victor"
    again = api.post(f"{lab.base}/api/sessions/{started.json()['id']}/stop", headers={"X-CSRF-Token": csrf})
    assert again.status == 409 and "stopped already" in again.json()["detail"]
    assert api.get(f"{lab.base}/api/sessions/s-nothing-here.csv").status == 404
