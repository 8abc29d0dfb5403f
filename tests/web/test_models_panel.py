"""The models panel on the gateway's status page, in a real browser (Debian's Chromium).

A config with the model stage (occupancy for a classroom's sensor; the fridge's anomaly model from a school
folder whose manifest is broken) and the attendance checks, built by the real registry; readings go through the
real pipeline into a real outbox with the services as stages, and the services run their models on their
worker threads. The page has to show every model (version, SHA-256, loaded or failed and why, calls, p99),
what each scores, and the checks' method, and follow new calls without a reload.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from playwright.sync_api import Page, expect

from edugate.common.web.auth import SessionSigner, UserStore
from edugate.common.web.site import SiteAuth
from edugate.contract.records import Item, Reading
from edugate.gateway.config import parse_config
from edugate.gateway.inference import load_manifest
from edugate.gateway.runtime.clock import Clock
from edugate.gateway.runtime.gateway import observing
from edugate.gateway.runtime.outbox import Outbox
from edugate.gateway.runtime.pipeline import Pipeline
from edugate.gateway.services.registry import build_services
from edugate.gateway.web.app import GatewaySite, create_gateway_app
from edugate.gateway.web.live import LiveData
from edugate.simulators.servers import free_port, wait_for_port
from tests.helpers import REPO, wait_for
from tests.web.conftest import login
from tests.web.fakes import users_file
from tests.web.test_library_panel import element_screenshot

pytestmark = pytest.mark.timeout(90)

CONFIG = """
school: thpt-models
gateway: gw-a
timezone: Asia/Ho_Chi_Minh
storage: {{path: {dir}/outbox.sqlite}}
devices:
  - {{id: c10a-env, driver: synthetic, room: class-10a}}
  - {{id: lab-fridge, driver: synthetic, room: lab-2}}
  - {{id: r10a, driver: em4100, room: class-10a, role: attendance, port: /dev/null}}
models:
  occupancy: [{{device: c10a-env}}]
  anomaly: [{{device: lab-fridge, kind: fridge}}]
  folder: {dir}/school-models
timetable:
  periods: [{{name: P1, start: "07:00", end: "07:45"}}]
  checks: {{rooms: {{class-10a: {{x: 0}}}}}}
"""


class ModelsGateway:
    """A gateway's pipeline (outbox, services) and its pages on one event loop in a thread."""

    def __init__(self, workdir: Path) -> None:
        (workdir / "school-models" / "anomaly").mkdir(parents=True)
        (workdir / "school-models" / "anomaly" / "manifest.json").write_text('{"format": 1}')  # no "models"
        self.cfg = parse_config(CONFIG.format(dir=workdir))
        self.services = build_services(self.cfg)
        self.workdir = workdir
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.loop: asyncio.AbstractEventLoop | None = None
        self.pipeline: Pipeline | None = None
        self.server: uvicorn.Server | None = None
        self.ready = threading.Event()
        self.thread = threading.Thread(target=lambda: asyncio.run(self._main()), name="models-gateway", daemon=True)

    def services_status(self) -> dict[str, Any]:
        return {service.name: service.status() for service in self.services}

    def status(self) -> dict[str, Any]:
        now = time.time()
        return {
            "ts": int(now * 1000), "version": "0.1.0", "started_at": int(now * 1000) - 600_000,
            "school": self.cfg.school, "gateway": self.cfg.gateway, "district": None, "name": None,
            "clock_synced": True, "devices": {},
            "health": {"uptime_s": 600.0, "uplink_connected": True, "outbox_bytes": 4096,
                       "outbox_budget_bytes": 1 << 28},
            "uplink": {"host": "127.0.0.1", "port": 1883, "last_error": None},
            "services": self.services_status(),
        }

    async def _main(self) -> None:
        self.loop = asyncio.get_running_loop()
        outbox = await Outbox.open(self.cfg.storage.path, budget_bytes=1 << 26)
        self.pipeline = Pipeline(outbox, Clock("always"), {d.id: d.room for d in self.cfg.devices})
        self.pipeline.rules.extend(observing(service) for service in self.services)
        tasks = [asyncio.create_task(s.run(self.pipeline.submit)) for s in self.services]
        site = GatewaySite(status=self.status, live=LiveData(window_s=600), timezone=self.cfg.timezone)
        auth = SiteAuth(UserStore(users_file(self.workdir / "users.json")), SessionSigner(b"M" * 32),
                        "edugate_gateway_session", "edugate web-user add NAME --role admin")
        self.server = uvicorn.Server(uvicorn.Config(create_gateway_app(site, auth), host="127.0.0.1", port=self.port,
                                                    log_level="warning", lifespan="off", access_log=False))
        self.ready.set()
        try:
            await self.server.serve()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await outbox.close()

    def start(self) -> ModelsGateway:
        self.thread.start()
        assert self.ready.wait(10), "the gateway's loop did not start"
        wait_for_port("127.0.0.1", self.port, timeout=10)
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.should_exit = True
        self.thread.join(timeout=15)

    def submit(self, item: Item) -> None:
        assert self.loop is not None and self.pipeline is not None
        asyncio.run_coroutine_threadsafe(self.pipeline.submit(item), self.loop).result(timeout=10)


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[ModelsGateway]:
    gw = ModelsGateway(tmp_path).start()
    try:
        yield gw
    finally:
        gw.stop()


def classroom(gw: ModelsGateway, minutes: int, start: float) -> None:
    """A class coming in: CO2 climbing, the lights on (the occupancy models' channels, one reading a minute)."""
    for i in range(minutes):
        gw.submit(Reading("c10a-env", {"co2": 450.0 + 30 * i, "temp": 27.0 + 0.05 * i, "humidity": 60.0,
                                       "light": 420.0}, ts=start + 60 * i))


def calls(gw: ModelsGateway, model: str) -> int:
    return int(gw.services_status()["models"]["models"][model]["calls"])


def test_the_panel_shows_every_model_its_checksum_state_and_cost(gateway: ModelsGateway, page: Page,
                                                                  tmp_path: Path) -> None:
    start = time.time() - 3600
    classroom(gateway, 20, start)
    wait_for(lambda: calls(gateway, "occupancy-occupied") >= 6, 15, "the occupancy model called")
    login(page, gateway.base, "victor", "/status")
    panel = page.locator("#models")
    expect(panel.locator("h2")).to_contain_text("Models")
    # four loaded (occupancy x2, the attendance checks' x2), the fridge's failed (its school manifest is broken)
    expect(panel.locator("#models-summary")).to_have_text("4 of 5 loaded")
    expect(panel.locator("#models-failed")).to_have_text("1 failed")
    shipped = load_manifest(REPO / "ml_models" / "occupancy" / "manifest.json")["occupancy-occupied"]
    row = panel.locator('tr[data-model="occupancy-occupied"]')
    expect(row).to_have_attribute("data-state", "loaded")
    cells = row.locator("td")
    expect(cells.nth(0)).to_have_text(shipped.version)
    expect(cells.nth(1).locator("code")).to_have_text(shipped.sha256[:12])
    expect(cells.nth(1).locator("code")).to_have_attribute("title", shipped.sha256)
    expect(cells.nth(5)).to_contain_text(" ms")  # p50 / p99
    fridge = panel.locator('tr[data-model="anomaly-fridge"]')
    expect(fridge).to_have_attribute("data-state", "failed")
    expect(fridge).to_have_class("warning")
    expect(fridge.locator("td").nth(2)).to_contain_text("manifest.json")
    expect(panel.locator('tr[data-model="attendance-card-shared"] th')).to_contain_text("attendance")
    expect(panel.locator('#models-devices tr[data-scored="c10a-env"] td').nth(0)).to_have_text("occupancy-occupied")
    expect(panel.locator('#models-devices tr[data-scored="lab-fridge"] td').nth(2)).to_have_text("no window yet")
    expect(panel.locator('#models-checks li[data-check="untapped heads"]')).to_have_attribute("data-method", "model")
    expect(panel.locator('#models-checks li[data-check="card shared"]')).to_contain_text("0 flagged of 0")
    # the stage is not shown a second time as JSON among the services
    expect(page.locator("#services h3", has_text="models")).to_have_count(0)
    element_screenshot(panel, "models-panel", tmp_path)

    # more readings: the page follows the new calls without a reload
    before = calls(gateway, "occupancy-occupied")
    classroom(gateway, 5, start + 20 * 60)
    wait_for(lambda: calls(gateway, "occupancy-occupied") >= before + 5, 15, "five more calls")
    expect(cells.nth(3)).to_contain_text(str(calls(gateway, "occupancy-occupied")), timeout=10_000)
