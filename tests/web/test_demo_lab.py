"""The demo school's lab (``edugate demo``) in Chromium: its alert rules watch the lab, a teacher records an
experiment session on a BLE probe (the simulated lab's real advertisement bytes), stops it, downloads the CSV,
and central answers for the same session by id from its store with the same readings.

Slow (the whole demo starts: about half a minute): ``pytest -m slow tests/web/test_demo_lab.py``."""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect

from edugate.cli.demo import DemoSchool
from edugate.cli.demo_pages import DEMO_USER
from edugate.simulators.servers import wait_for_port
from tests.helpers import wait_for
from tests.web.conftest import DESKTOP

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

PROBE = "lab1-fridge-probe"


def _login(page: Page, base: str, password: str, target: str) -> None:
    page.goto(f"{base}/login?next={target}")
    page.fill("input[name=username]", DEMO_USER)
    page.fill("input[name=password]", password)
    page.click("form.stack button[type=submit]")
    expect(page).to_have_url(re.compile(re.escape(target) + "$"))


def test_the_demo_lab_runs_alerts_and_a_session_on_a_ble_probe_that_central_can_query(
        tmp_path: Path, browser: Browser) -> None:
    with DemoSchool(tmp_path / "demo") as demo:
        gateway = f"http://127.0.0.1:{demo.pages.gateway_port}"
        central = f"http://127.0.0.1:{demo.pages.central_port}"
        wait_for_port("127.0.0.1", demo.pages.gateway_port, timeout=60)
        wait_for_port("127.0.0.1", demo.pages.central_port, timeout=60)
        context = browser.new_context(viewport=DESKTOP)
        context.set_default_timeout(30_000)
        page = context.new_page()
        _login(page, gateway, demo.pages.password, "/status")
        expect(page.locator(f'tr[data-device="{PROBE}"] td.state')).to_have_attribute("data-state", "online")
        expect(page.locator("#alerts")).to_contain_text("Rules in force (4)")

        page.goto(f"{gateway}/live?device={PROBE}")
        page.fill("#session-name", "Fridge check, demo")
        page.click("#session-start button[type=submit]")
        expect(page).to_have_url(re.compile(r"/sessions/s-\d{8}-\d{6}-[0-9a-f]{4}$"))
        session_id = page.url.rsplit("/", 1)[-1]
        plot = page.locator(f"[data-plot='{PROBE}.temperature']")
        wait_for(lambda: int(plot.get_attribute("data-points") or 0) >= 5, 30, "the plot grown to 5 points")
        page.click("#session-stop")
        expect(page.locator("#session-state")).to_have_text("stopped")
        with page.expect_download() as download:
            page.click("#session-csv")
        rows = list(csv.DictReader(io.StringIO(Path(download.value.path()).read_text())))
        assert len(rows) >= 5 and {r["device"] for r in rows} == {PROBE}
        assert all(2 <= float(r["temperature"]) <= 6 and -100 < float(r["rssi"]) < 0 for r in rows)

        _login(page, central, demo.pages.password, "/fleet")

        def central_rows() -> list[dict] | None:
            got = page.request.get(f"{central}/api/sessions/{demo.school}/{demo.gateway_id}/{session_id}")
            body = got.json() if got.ok else None
            return body["readings"] if body and len(body["readings"]) >= len(rows) else None

        readings = wait_for(central_rows, 60, "central's answer for the session with every reading")
        assert [(r["ts"], r["values"]["temperature"]) for r in readings] == [
            (int(r["ts_ms"]), float(r["temperature"])) for r in rows], "the same readings, at the same times"
