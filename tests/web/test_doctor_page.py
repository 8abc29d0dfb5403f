"""The status page links each problem it shows to the doctor's check that explains it (issue 19), in a real
browser against a real ``edugate run``: a Modbus device whose address answers nothing is offline on the status
page; its "why?" link opens ``/doctor`` at that device's check, which fails and says how to fix it. Viewers see
no such link, and may not run the doctor (it names files and their permissions)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from edugate.simulators.servers import Mosquitto, free_port, wait_for_port
from tests.helpers import GatewayProcess
from tests.web.conftest import add_users, login, screenshot

pytestmark = pytest.mark.timeout(120)


@dataclass
class Gateway:
    base: str
    shots: Path


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    workdir = tmp_path_factory.mktemp("doctor-page")
    broker = Mosquitto(workdir / "mosquitto")
    broker.start()
    port, nobody = free_port(), free_port()  # nothing listens on `nobody`
    gw = GatewayProcess(workdir / "gw", {
        "school": "thcs-doc", "gateway": "gw-1", "uplink": {"port": broker.port},
        "web": {"enabled": True, "port": port},
        "devices": [{"id": "lab1-th", "driver": "modbus", "room": "lab-1", "host": "127.0.0.1", "port": nobody,
                     "unit": 1, "profile": "lab-th", "poll_interval_s": 0.5}],
    })
    add_users("--config", gw.config_path, workdir)
    gw.start()
    try:
        wait_for_port("127.0.0.1", port, timeout=20)
        yield Gateway(f"http://127.0.0.1:{port}", workdir)
    finally:
        gw.stop()
        broker.stop()


def test_an_offline_device_links_to_the_doctor_check_that_explains_it(gateway: Gateway, page: Page) -> None:
    login(page, gateway.base, "alice", "/status")
    row = page.locator("tr[data-device=lab1-th]")
    expect(row.locator(".state")).to_have_attribute("data-state", "offline", timeout=20_000)
    why = row.locator("a.why")
    expect(why).to_have_attribute("href", "/doctor#check-device-lab1-th")
    why.click()
    expect(page).to_have_url(re.compile(r"/doctor#check-device-lab1-th$"), timeout=60_000)
    check = page.locator("#check-device-lab1-th")
    expect(check).to_have_attribute("data-verdict", "fail")
    expect(check.locator(".doctor-message")).to_contain_text("127.0.0.1")
    expect(check.locator(".doctor-fix")).to_contain_text("Fix:")
    expect(page.locator("#check-config")).to_have_attribute("data-verdict", re.compile("ok|warn"))
    expect(page.locator("#doctor-verdict")).to_have_text("fail")
    screenshot(page, "gateway-doctor", gateway.shots)
    answer = page.request.get(f"{gateway.base}/api/doctor")
    assert answer.status == 200
    checks = {c["check"]: c["verdict"] for c in answer.json()["checks"]}
    assert checks["device:lab1-th"] == "fail" and checks["broker"] == "ok"


def test_a_viewer_sees_no_doctor_link_and_may_not_run_it(gateway: Gateway, page: Page) -> None:
    login(page, gateway.base, "victor", "/status")
    row = page.locator("tr[data-device=lab1-th]")
    expect(row.locator(".state")).to_have_attribute("data-state", "offline", timeout=20_000)
    expect(row.locator("a.why")).to_have_count(0)
    assert page.request.get(f"{gateway.base}/api/doctor").status == 403
