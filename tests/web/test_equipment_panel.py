"""The equipment panel on the gateway's status page, in a real browser (Debian's Chromium).

The gateway's pages are served in process by uvicorn on their own event loop, as ``edugate run`` does, from
a config with three PJLink devices, the school's inventory CSV and the energy rule (``parse_config`` and
``build_services``: the real :class:`~edugate.gateway.services.assets.AssetsService`). Readings and events
go through the real pipeline into a real outbox, with the assets service as a pipeline stage, exactly as
the PJLink driver emits them; the page has to show every asset, what it is, its state and usage, and
follow new records without a reload.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import uvicorn
from playwright.sync_api import Page, expect

from edugate.common.web.auth import SessionSigner, UserStore
from edugate.common.web.site import SiteAuth
from edugate.contract.records import Event, Item, Reading
from edugate.gateway.config import parse_config
from edugate.gateway.runtime.clock import Clock
from edugate.gateway.runtime.gateway import observing
from edugate.gateway.runtime.outbox import Outbox
from edugate.gateway.runtime.pipeline import Pipeline
from edugate.gateway.services.assets import AssetsService
from edugate.gateway.services.registry import build_services
from edugate.gateway.web.app import GatewaySite, create_gateway_app
from edugate.gateway.web.live import LiveData
from edugate.simulators.servers import free_port, wait_for_port
from tests.web.conftest import login
from tests.web.fakes import users_file
from tests.web.test_library_panel import element_screenshot

pytestmark = pytest.mark.timeout(90)

TZ_NAME = "Asia/Ho_Chi_Minh"
TZ = ZoneInfo(TZ_NAME)
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
SCHOOL_DAY = WEEKDAYS[(dt.datetime.now(TZ).weekday() + 3) % 7]  # neither today nor yesterday: both off hours
CONFIG = """
school: thpt-classrooms
gateway: gw-building-a
name: Building A classrooms
timezone: {tz}
storage: {{path: {dir}/outbox.sqlite}}
devices:
  - {{id: room101-projector, driver: pjlink, room: room-101, host: 10.20.1.101}}
  - {{id: room102-board, driver: pjlink, room: room-102, host: 10.20.1.102}}
  - {{id: room103-projector, driver: pjlink, room: room-103, host: 10.20.1.103}}
assets:
  inventory_csv: {dir}/inventory.csv
  energy: {{days: [{day}], start: "07:00", end: "17:00", grace_min: 15}}
"""
INVENTORY = """asset_id,name,category,make,model,serial,room,tag
micro-01,Microscope,microscope,Olympus,CX23,OL-23-0091,lab-2,
robot-01,Robot kit,robotics,LEGO,Spike Prime,,stem-lab,BLE:C4:7F:51:00:00:01
Microscope 2,Microscope,microscope,Olympus,CX23,,lab-2,
"""


class ClassroomGateway:
    """A gateway's pipeline (outbox, services) and its pages on one event loop in a thread."""

    def __init__(self, workdir: Path) -> None:
        (workdir / "inventory.csv").write_text(INVENTORY)
        self.cfg = parse_config(CONFIG.format(tz=TZ_NAME, dir=workdir, day=SCHOOL_DAY))
        self.services = build_services(self.cfg)
        self.assets = next(s for s in self.services if isinstance(s, AssetsService))
        self.workdir = workdir
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.loop: asyncio.AbstractEventLoop | None = None
        self.pipeline: Pipeline | None = None
        self.server: uvicorn.Server | None = None
        self.ready = threading.Event()
        self.thread = threading.Thread(target=lambda: asyncio.run(self._main()), name="classroom-gateway",
                                       daemon=True)

    def status(self) -> dict[str, Any]:
        """The shape of ``Gateway.status()``, with the real services' status."""
        now = time.time()
        return {
            "ts": int(now * 1000), "version": "0.1.0", "started_at": int(now * 1000) - 600_000,
            "school": self.cfg.school, "gateway": self.cfg.gateway, "district": None, "name": self.cfg.name,
            "clock_synced": True,
            "devices": {d.id: {"driver": d.driver, "room": d.room, "state": "online", "error_count": 0,
                               "last_error": None, "last_error_at": None, "last_reading_at": None, "counters": {}}
                        for d in self.cfg.devices},
            "health": {"uptime_s": 600.0, "uplink_connected": True, "outbox_records": 0, "outbox_events": 0,
                       "outbox_bytes": 4096, "outbox_budget_bytes": 1 << 28},
            "uplink": {"host": "127.0.0.1", "port": 1883, "last_error": None},
            "services": {service.name: service.status() for service in self.services},
        }

    async def _main(self) -> None:
        self.loop = asyncio.get_running_loop()
        outbox = await Outbox.open(self.cfg.storage.path, budget_bytes=1 << 26)
        self.pipeline = Pipeline(outbox, Clock("always"), {d.id: d.room for d in self.cfg.devices})
        self.pipeline.rules.extend(observing(service) for service in self.services)
        tasks = [asyncio.create_task(s.run(self.pipeline.submit)) for s in self.services]
        site = GatewaySite(status=self.status, live=LiveData(window_s=600), timezone=self.cfg.timezone)
        auth = SiteAuth(UserStore(users_file(self.workdir / "users.json")), SessionSigner(b"E" * 32),
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

    def start(self) -> ClassroomGateway:
        self.thread.start()
        assert self.ready.wait(10), "the gateway's loop did not start"
        wait_for_port("127.0.0.1", self.port, timeout=10)
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.should_exit = True
        self.thread.join(timeout=15)

    def submit(self, item: Item) -> dict[str, Any]:
        assert self.loop is not None and self.pipeline is not None
        record = asyncio.run_coroutine_threadsafe(self.pipeline.submit(item), self.loop).result(timeout=10)
        assert record is not None
        return record


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[ClassroomGateway]:
    gw = ClassroomGateway(tmp_path).start()
    try:
        yield gw
    finally:
        gw.stop()


def status(power: int, lamp: int | None = None) -> dict[str, Any]:
    """A PJLink poll as drivers/pjlink emits it."""
    values: dict[str, Any] = {"power": power, "power_on": power in (1, 3), "errors": 0}
    if lamp is not None:
        values["lamp_hours"] = lamp
    return values


def feed(gw: ClassroomGateway) -> dict[str, Any]:
    now = time.time()
    gw.submit(Event("room101-projector", "device_info", {"protocol": "pjlink", "host": "10.20.1.101",
                                                          "pjlink_class": 2, "make": "EduSim",
                                                          "model": "PJ-2000 WXGA", "serial": "SN4352000123",
                                                          "firmware": "1.04"}))
    start = now - 40 * 60  # on for the last 40 minutes, on a day without school: left on
    for minute in range(40):
        gw.submit(Reading("room101-projector", status(1, 1200 + minute // 20), ts=start + minute * 60))
    yesterday = dt.datetime.fromtimestamp(now, TZ).replace(hour=10, minute=0, second=0) - dt.timedelta(days=1)
    for minute in range(121):  # the board: two hours yesterday, then off
        gw.submit(Reading("room102-board", status(1), ts=yesterday.timestamp() + minute * 60))
    gw.submit(Reading("room102-board", status(0), ts=yesterday.timestamp() + 121 * 60))
    gw.submit(Reading("room102-board", status(0), ts=now - 5))
    same_day = dt.datetime.fromtimestamp(start, TZ).date() == dt.datetime.fromtimestamp(now, TZ).date()
    return {"today_on": "0.65 h" if same_day else None}


def test_the_panel_lists_every_asset_its_state_and_usage(gateway: ClassroomGateway, page: Page,
                                                         tmp_path: Path) -> None:
    expected = feed(gateway)
    login(page, gateway.base, "victor", "/status")
    panel = page.locator("#equipment")
    expect(panel.locator("h2")).to_contain_text("Equipment")
    expect(panel.locator("#equipment-summary")).to_have_text("3 devices, 2 inventory items, 1 on now")
    expect(panel.locator("#equipment-left-on")).to_have_text("1 left on outside school hours")
    rows = panel.locator("#equipment-table tbody tr")
    expect(rows).to_have_count(5)
    # devices first (by room), then the inventory
    assert [rows.nth(i).get_attribute("data-asset") for i in range(5)] == [
        "room101-projector", "room102-board", "room103-projector", "micro-01", "robot-01"]

    projector = panel.locator('tr[data-asset="room101-projector"]')
    expect(projector).to_have_attribute("data-state", "left on")
    expect(projector).to_have_class("warning")
    cells = projector.locator("td")
    expect(cells.nth(0)).to_contain_text("EduSim PJ-2000 WXGA")
    expect(cells.nth(0)).to_contain_text("pjlink")
    expect(cells.nth(1)).to_have_text("room-101")
    expect(cells.nth(2)).to_contain_text("SN4352000123")
    expect(cells.nth(2)).to_contain_text("firmware 1.04")
    expect(cells.nth(4)).to_have_text(re.compile(r"^\d+ (s|min) ago$"))
    if expected["today_on"]:
        expect(cells.nth(5)).to_have_text(expected["today_on"])
        expect(cells.nth(7)).to_have_text("1 h")  # lamp hours 1200 -> 1201 today

    board = panel.locator('tr[data-asset="room102-board"]')
    expect(board).to_have_attribute("data-state", "off")
    expect(board.locator("td").nth(6)).to_have_text("2 h")  # on for two hours yesterday: in the 7 days
    expect(panel.locator('tr[data-asset="room103-projector"]')).to_have_attribute("data-state", "missing")
    micro = panel.locator('tr[data-asset="micro-01"]')
    expect(micro).to_have_attribute("data-state", "listed")
    expect(micro.locator("td").nth(0)).to_contain_text("Olympus CX23")
    expect(micro.locator("td").nth(2)).to_have_text("OL-23-0091")
    expect(panel.locator("#equipment-problems li")).to_have_text([
        "line 4: asset_id 'Microscope 2' must be lower-case letters, digits, _ and - (e.g. micro-07)"])
    expect(panel).to_contain_text("Energy rule: on outside school hours 07:00-17:00")
    # the registry is not shown a second time as JSON among the services
    expect(page.locator("#services h3")).to_have_count(0)
    element_screenshot(panel, "equipment-panel", tmp_path)

    # the energy event went through the pipeline like any record
    assert gateway.assets.counts["energy_events"] >= 2  # projector left on; the board yesterday, then off

    # switched off: the page follows without a reload
    gateway.submit(Reading("room101-projector", status(0, 1201)))
    expect(projector).to_have_attribute("data-state", "off", timeout=10_000)
    expect(panel.locator("#equipment-left-on")).to_have_count(0)
