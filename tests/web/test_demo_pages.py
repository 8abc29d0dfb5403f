"""``edugate demo`` opens the pages: the demo school's gateway pages and central's fleet of three schools.

The README's screenshots come from here (``EDUGATE_SCREENSHOTS=1 pytest tests/web`` refreshes them).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from playwright.sync_api import Browser, Page, expect

from edugate.cli.demo import DEMO_CAMERA_VIDEO, DEMO_CONFIG, DemoSchool
from edugate.cli.demo_pages import DEMO_USER, OTHER_SCHOOLS
from edugate.simulators.servers import wait_for_port
from tests.web.conftest import DESKTOP, screenshot

pytestmark = pytest.mark.timeout(150)


def _login(page: Page, base: str, password: str, target: str) -> None:
    page.goto(f"{base}/login?next={target}")
    page.fill("input[name=username]", DEMO_USER)
    page.fill("input[name=password]", password)
    page.click("form.stack button[type=submit]")
    expect(page).to_have_url(re.compile(re.escape(target) + "$"))


def test_the_demo_serves_the_gateway_pages_and_the_fleet(tmp_path: Path, browser: Browser) -> None:
    with DemoSchool(tmp_path / "demo") as demo:
        devices = [d["id"] for d in yaml.safe_load(demo.gateway_config.read_text())["devices"]]
        # every extra is here: the file's devices, and the camera where Debian's opencv-doc has its video
        camera = DEMO_CAMERA_VIDEO.is_file()
        assert len(devices) == len(yaml.safe_load(DEMO_CONFIG.read_text())["devices"]) + camera
        assert ("c10a-cam" in devices) == camera
        pages = demo.pages
        gateway = f"http://127.0.0.1:{pages.gateway_port}"
        central = f"http://127.0.0.1:{pages.central_port}"
        wait_for_port("127.0.0.1", pages.gateway_port, timeout=30)
        wait_for_port("127.0.0.1", pages.central_port, timeout=30)
        context = browser.new_context(viewport=DESKTOP)
        context.set_default_timeout(30_000)
        page = context.new_page()

        _login(page, gateway, pages.password, "/status")
        expect(page.locator("tr[data-device]")).to_have_count(len(devices))
        expect(page.locator('tr[data-device="lab1-co2"] td.state')).to_have_attribute("data-state", "online",
                                                                                      timeout=20_000)
        for device in ("lab1-fridge-probe", "lab1-microbit", "c10a-env", "lab2-fridge"):  # BLE, kit, models' feeds
            expect(page.locator(f'tr[data-device="{device}"] td.state')).to_have_attribute("data-state", "online",
                                                                                         timeout=20_000)
        expect(page.locator('#models tr[data-model="occupancy-occupied"]')).to_have_count(1)  # the models panel
        screenshot(page, "demo-status", tmp_path, full_page=False)

        page.goto(f"{gateway}/live?room=class-10a")  # the occupancy model's event on class 10A's sensor
        expect(page.locator('[data-device="c10a-env"] ul.events li').first).to_contain_text("occupancy",
                                                                                           timeout=40_000)

        page.goto(f"{gateway}/live?room=lab-1")
        expect(page.locator('[data-value="lab1-co2.co2"] .num')).to_have_text(re.compile(r"^\d+$"))
        expect(page.locator("#live-state")).to_have_text("live")
        expect(page.locator('[data-device="lab1-door"] ul.events li').first).to_contain_text("card_tap", timeout=20_000)
        page.wait_for_timeout(4000)  # a few more readings on the plots
        screenshot(page, "demo-live", tmp_path)

        _login(page, central, pages.password, "/fleet")
        expect(page.locator("tr[data-gateway]")).to_have_count(1 + len(OTHER_SCHOOLS))
        for school, (_, gw) in OTHER_SCHOOLS.items():
            expect(page.locator(f'tr[data-gateway="{school}/{gw}"] td.status')).to_have_attribute(
                "data-status", "online")
        expect(page.locator('tr[data-gateway="demo-school/gw-main"]')).to_contain_text(re.compile(r"\d+ records"),
                                                                                    timeout=30_000)  # health: 10 s
        screenshot(page, "demo-fleet", tmp_path)

        page.goto(f"{central}/gateways/demo-school/gw-main")
        plot = page.locator('[data-device="lab1-co2"] [data-plot="lab1-co2.co2"] canvas')
        expect(plot).to_have_count(1, timeout=40_000)  # the page asks again every 5 s while the store is empty
        expect(page.locator('[data-plot="_gateway.outbox_records"] canvas')).to_have_count(1, timeout=40_000)
        screenshot(page, "demo-central-gateway", tmp_path, full_page=False)
        context.close()
    assert all(p.poll() is not None for p in demo.processes.values())
