"""The gateway's pages in a real browser, served by a real ``edugate run`` reading a Modbus simulator."""

from __future__ import annotations

import csv
import io
import json
import re
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect

from edugate.simulators.modbus import ModbusSimulator, SimulatorThread
from edugate.simulators.servers import Mosquitto, free_port, wait_for_port
from tests.helpers import GatewayProcess, wait_for
from tests.web.conftest import PHONE, add_users, login, screenshot

pytestmark = pytest.mark.timeout(120)


@dataclass
class School:
    base: str
    sim: ModbusSimulator
    sim_thread: SimulatorThread
    gateway: GatewayProcess
    shots: Path
    syslog: socket.socket  # a UDP collector the gateway sends its security events to (RFC 5424)


@pytest.fixture(scope="module")
def school(tmp_path_factory: pytest.TempPathFactory) -> Iterator[School]:
    workdir = tmp_path_factory.mktemp("gateway-pages")
    broker = Mosquitto(workdir / "mosquitto")
    broker.start()
    sim = ModbusSimulator({1: "lab-th", 2: "co2-ndir"}, drift=False)
    sim.set_value(1, "temperature", 22.5)
    thread = SimulatorThread(sim)
    thread.start()
    port = free_port()
    collector = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    collector.bind(("127.0.0.1", 0))
    gw = GatewayProcess(workdir / "gw", {
        "school": "thcs-web", "gateway": "gw-lab", "district": "quan-3", "name": "THCS Web, lab building",
        "syslog": {"target": f"udp://127.0.0.1:{collector.getsockname()[1]}"},
        "uplink": {"port": broker.port, "health_interval_s": 5},
        "web": {"enabled": True, "port": port,
                "thresholds": {"lab1-th": {"temperature": {"min": 18, "max": 30}}, "lab1-co2": {"co2": {"max": 1000}}}},
        "devices": [
            {"id": "lab1-th", "driver": "modbus", "room": "lab-1", "host": "127.0.0.1", "port": sim.port, "unit": 1,
             "profile": "lab-th", "poll_interval_s": 0.2},
            {"id": "lab1-co2", "driver": "modbus", "room": "lab-1", "host": "127.0.0.1", "port": sim.port, "unit": 2,
             "profile": "co2-ndir", "poll_interval_s": 1},
        ],
    })
    add_users("--config", gw.config_path, workdir)
    gw.start()
    try:
        wait_for_port("127.0.0.1", port, timeout=20)
        yield School(f"http://127.0.0.1:{port}", sim, thread, gw, workdir, collector)
    finally:
        collector.close()
        gw.stop()
        thread.stop()
        broker.stop()


def test_pages_need_a_login_and_a_wrong_password_is_refused(school: School, page: Page) -> None:
    page.goto(f"{school.base}/status")
    expect(page).to_have_url(re.compile(r"/login\?next=%2Fstatus$"))
    page.fill("input[name=username]", "alice")
    page.fill("input[name=password]", "not-her-password")
    with page.expect_response(f"{school.base}/login") as answer:
        page.click("form.stack button[type=submit]")
    assert answer.value.status == 401
    expect(page.locator(".error")).to_have_text("Wrong user name or password.")
    assert page.context.cookies() == []
    for path in ("/api/status", "/api/history?device=lab1-th", "/api/export.csv?device=lab1-th"):
        assert page.request.get(school.base + path, max_redirects=0).status == 401, path
    screenshot(page, "login", school.shots)
    login(page, school.base, "alice", "/status")
    expect(page.locator("h1")).to_have_text("THCS Web, lab building")


def test_a_viewer_cannot_reach_admin_actions(school: School, page: Page) -> None:
    login(page, school.base, "victor", "/status")
    expect(page.locator("header nav a")).to_have_text(["Status", "Live readings"])  # no Admin link
    response = page.goto(f"{school.base}/admin")
    assert response is not None and response.status == 403
    expect(page.locator("h1")).to_have_text("Admins only")
    csrf = page.locator("meta[name=csrf-token]").get_attribute("content")
    answer = page.request.post(f"{school.base}/api/actions/health-report", headers={"X-CSRF-Token": csrf or ""})
    assert answer.status == 403 and answer.json()["detail"] == "admins only"


def test_an_admin_action_needs_the_csrf_token_and_runs(school: School, page: Page) -> None:
    login(page, school.base, "alice", "/admin")
    assert page.request.post(f"{school.base}/api/actions/health-report").status == 403  # no CSRF token
    page.click("section[data-action=health-report] button")
    expect(page.locator("#action-result")).to_have_text(re.compile(r"health record #\d+ is in the outbox"))
    screenshot(page, "admin", school.shots)



def test_admin_actions_are_audited_and_logging_out_ends_the_session(school: School, page: Page) -> None:
    """The running gateway's audit log (web-audit.jsonl next to the outbox) and server-side logout (issue 18)."""
    login(page, school.base, "alice", "/admin")
    page.click("section[data-action=health-report] button")
    expect(page.locator("#action-result")).to_have_text(re.compile(r"health record #\d+ is in the outbox"))
    audit = school.gateway.outbox_path.parent / "web-audit.jsonl"
    actions = [json.loads(line) for line in audit.read_text().splitlines()]
    assert {"event": "action", "user": "alice", "role": "admin", "from": "127.0.0.1",
            "action": "POST /api/actions/health-report", "status": 200, "site": "gateway"} in [
        {k: v for k, v in a.items() if k != "ts"} for a in actions]
    kept = {c["name"]: c["value"] for c in page.context.cookies()}
    page.click("form.logout button")
    expect(page).to_have_url(re.compile(r"/login$"))
    stale = page.request.get(f"{school.base}/api/status", max_redirects=0,
                             headers={"Cookie": "; ".join(f"{k}={v}" for k, v in kept.items())})
    assert stale.status == 401  # the cookie copied before the logout no longer works
    assert json.loads(audit.read_text().splitlines()[-1])["event"] == "logout"
    school.syslog.settimeout(10)
    lines = []
    while not any(" web-logout " in line for line in lines):  # the same events reached syslog as RFC 5424
        lines.append(school.syslog.recv(65535).decode("utf-8"))
    assert any(line.startswith("<38>1 ") and " web-action " in line and 'user="alice"' in line for line in lines)

def test_a_new_value_appears_live_within_seconds(school: School, page: Page) -> None:
    login(page, school.base, "alice", "/live?room=lab-1")
    tile = page.locator('[data-value="lab1-th.temperature"] .num')
    expect(tile).to_have_text("22.5")
    expect(page.locator("#live-state")).to_have_text("live")
    school.sim.set_value(1, "temperature", 31.7)
    expect(tile).to_have_text("31.7", timeout=5_000)  # simulator -> gateway -> SSE -> page
    expect(page.locator('[data-value="lab1-th.temperature"]')).to_have_class(re.compile(r"\bhigh\b"))  # max 30
    expect(page.locator('[data-plot="lab1-th.temperature"] canvas')).to_have_count(1)
    expect(page.locator('[data-plot="lab1-co2.co2"] canvas')).to_have_count(1)
    page.wait_for_timeout(1500)  # a few more points on the plot
    screenshot(page, "live", school.shots)


def test_csv_download_holds_what_the_gateway_has(school: School, page: Page) -> None:
    school.sim.set_value(1, "humidity", 55.5)
    login(page, school.base, "alice", "/live?device=lab1-th")

    def humidity_seen() -> bool:
        history = page.request.get(f"{school.base}/api/history?device=lab1-th").json()
        return 55.5 in history["values"]["humidity"]

    wait_for(humidity_seen, 10, "the new humidity in the gateway's history")
    with page.expect_download() as info:
        page.click("#csv")
    download = info.value
    assert re.fullmatch(r"edugate-thcs-web-lab1-th-\d{8}-\d{4}\.csv", download.suggested_filename)
    rows = list(csv.DictReader(io.StringIO(Path(download.path()).read_text())))
    history = page.request.get(f"{school.base}/api/history?device=lab1-th").json()
    assert len(rows) >= 3  # one row per second since the gateway started
    assert list(rows[0]) == ["time", "ts_ms", "device", "room", "humidity", "temperature"]
    by_ts = {round(ts * 1000): i for i, ts in enumerate(history["ts"])}
    for row in rows[:-1]:  # the newest row may still take a newer reading in its 1 s slot
        i = by_ts[int(row["ts_ms"])]
        assert (row["device"], row["room"]) == ("lab1-th", "lab-1")
        assert float(row["temperature"]) == history["values"]["temperature"][i]
        assert float(row["humidity"]) == history["values"]["humidity"][i]
    assert rows[-1]["humidity"] == "55.5"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+07:00", rows[0]["time"])  # the school's zone


def test_pages_fit_a_phone(school: School, browser: Browser) -> None:
    context = browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True, device_scale_factor=2)
    try:
        page = context.new_page()
        login(page, school.base, "victor", "/status")
        expect(page.locator("#devices")).to_be_visible()
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, f"the page is {overflow} px wider than a phone screen"
        screenshot(page, "status-phone", school.shots)
        page.goto(f"{school.base}/live?device=lab1-th")
        expect(page.locator('[data-plot="lab1-th.temperature"] canvas')).to_have_count(1)
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, f"the live page is {overflow} px wider than a phone screen"
        screenshot(page, "live-phone", school.shots)
    finally:
        context.close()


def test_status_page_shows_a_device_going_offline(school: School, page: Page, context: BrowserContext) -> None:
    login(page, school.base, "victor", "/status")
    row = page.locator('tr[data-device="lab1-co2"]')
    expect(row.locator("td.state")).to_have_attribute("data-state", "online")
    expect(page.locator("#uplink .badge")).to_have_text("connected")
    school.sim_thread.call(school.sim.stop)  # the bridge loses power
    try:
        expect(row.locator("td.state")).to_have_attribute("data-state", "offline", timeout=15_000)
        expect(row.locator("td.last-error")).to_contain_text(re.compile(r"\S"))
        assert int(row.locator("td.errors").inner_text()) >= 1
        screenshot(page, "status", school.shots)
    finally:
        school.sim_thread.call(school.sim.start)
    expect(row.locator("td.state")).to_have_attribute("data-state", "online", timeout=40_000)
