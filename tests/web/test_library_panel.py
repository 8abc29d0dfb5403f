"""The librarian's panel on the gateway's status page, in a real browser (Debian's Chromium).

The gateway's pages are served in process by uvicorn on their own event loop, as ``edugate run`` does,
from a config with two security gates and a self-check station (``parse_config`` and ``build_services``:
the real :class:`~gateway.library.LibraryService`). Readings and events go through the real pipeline
into a real outbox, with the library service as a pipeline stage, exactly as the drivers emit them; the
page then has to show what the service counted, in the school's time zone, and follow new records.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import re
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import uvicorn
from playwright.sync_api import Browser, Locator, Page, expect

from edugate.common.web.auth import SessionSigner, UserStore
from edugate.common.web.site import SiteAuth
from edugate.contract.records import Event, Item, Reading
from edugate.gateway.config import parse_config
from edugate.gateway.runtime.clock import Clock
from edugate.gateway.runtime.gateway import observing
from edugate.gateway.runtime.outbox import Outbox
from edugate.gateway.runtime.pipeline import Pipeline
from edugate.gateway.services.library import LibraryService
from edugate.gateway.services.registry import build_services
from edugate.gateway.web.app import GatewaySite, create_gateway_app
from edugate.gateway.web.live import LiveData
from edugate.simulators.servers import free_port, wait_for_port
from tests.web.conftest import PHONE, SCREENSHOTS, login
from tests.web.fakes import users_file

pytestmark = pytest.mark.timeout(90)

TZ_NAME = "Asia/Ho_Chi_Minh"
TZ = ZoneInfo(TZ_NAME)
ITEM = "p1-" + "ab" * 16  # an alarm's item pseudonym: the page must not show it
CONFIG = """
school: thcs-library
gateway: gw-library
name: THCS Library, building C
timezone: {tz}
storage: {{path: {dir}/outbox.sqlite}}
devices:
  - {{id: gate-main, driver: library-gate, room: library, port: {dir}/ttyGATE, count_interval_s: 60,
     sip2: {{host: 127.0.0.1, port: 6001, institution_id: lib, login_user: gate, login_password_file: {dir}/pw}}}}
  - {{id: gate-annex, driver: library-gate, room: reading-room, port: {dir}/ttyANNEX, count_interval_s: 60,
     sip2: {{host: 127.0.0.1, port: 6001, institution_id: lib, login_user: annex, login_password_file: {dir}/pw}}}}
  - {{id: selfcheck-1, driver: library-selfcheck, room: library, port: {dir}/ttySC, patrons_file: {dir}/p.csv,
     sip2: {{host: 127.0.0.1, port: 6001, institution_id: lib, login_user: sc, login_password_file: {dir}/pw}}}}
"""


class LibraryGateway:
    """A gateway's pipeline (outbox, services) and its pages on one event loop in a thread."""

    def __init__(self, workdir: Path) -> None:
        self.cfg = parse_config(CONFIG.format(tz=TZ_NAME, dir=workdir))
        self.services = build_services(self.cfg)
        self.library = next(s for s in self.services if isinstance(s, LibraryService))
        self.workdir = workdir
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.device_states = {"gate-main": "online", "gate-annex": "offline", "selfcheck-1": "online"}
        self.loop: asyncio.AbstractEventLoop | None = None
        self.pipeline: Pipeline | None = None
        self.server: uvicorn.Server | None = None
        self.ready = threading.Event()
        self.thread = threading.Thread(target=lambda: asyncio.run(self._main()), name="library-gateway",
                                       daemon=True)

    def status(self) -> dict[str, Any]:
        """The shape of ``Gateway.status()`` (gateway/runtime.py), with the real services' status."""
        now = time.time()
        return {
            "ts": int(now * 1000), "version": "0.1.0", "started_at": int(now * 1000) - 600_000,
            "school": self.cfg.school, "gateway": self.cfg.gateway, "district": None, "name": self.cfg.name,
            "clock_synced": True,
            "devices": {d.id: {"driver": d.driver, "room": d.room, "state": self.device_states[d.id],
                               "error_count": 0, "last_error": None, "last_error_at": None,
                               "last_reading_at": None, "counters": {}} for d in self.cfg.devices},
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
        live = LiveData(window_s=600)
        self.pipeline.observers.append(live.observe)
        site = GatewaySite(status=self.status, live=live, timezone=self.cfg.timezone)
        auth = SiteAuth(UserStore(users_file(self.workdir / "users.json")), SessionSigner(b"L" * 32),
                        "edugate_gateway_session", "edugate web-user add NAME --role admin")
        self.server = uvicorn.Server(uvicorn.Config(create_gateway_app(site, auth), host="127.0.0.1", port=self.port,
                                                    log_level="warning", lifespan="off", access_log=False))
        self.ready.set()
        try:
            await self.server.serve()
        finally:
            await outbox.close()

    def start(self) -> LibraryGateway:
        self.thread.start()
        assert self.ready.wait(10), "the gateway's loop did not start"
        wait_for_port("127.0.0.1", self.port, timeout=10)
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.should_exit = True
        self.thread.join(timeout=15)

    def submit(self, item: Item) -> dict[str, Any]:
        """Through the pipeline, on the gateway's loop, as a driver's ``emit``; returns the committed record."""
        assert self.loop is not None and self.pipeline is not None
        record = asyncio.run_coroutine_threadsafe(self.pipeline.submit(item), self.loop).result(timeout=10)
        assert record is not None
        return record


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[LibraryGateway]:
    gw = LibraryGateway(tmp_path).start()
    try:
        yield gw
    finally:
        gw.stop()


def counts(gate: str, ts: float, n_in: int, n_out: int, *, ils: int = 1, reader: int = 1) -> Reading:
    """A gate's count reading as ``drivers/library_gate.py`` emits it, stamped at the end of its interval."""
    return Reading(gate, {"visitors_in": n_in, "visitors_out": n_out, "tags": 0, "alarms": 0,
                          "offline_decisions": 0, "ils_online": ils, "reader_online": reader}, ts=ts)


def hour_of(ts: float) -> str:
    """The local hour a reading stamped at ``ts`` (the end of its interval) counts for."""
    return dt.datetime.fromtimestamp(ts - 0.001, TZ).strftime("%H:00")


def is_today(ts: float) -> bool:
    return dt.datetime.fromtimestamp(ts, TZ).date() == dt.datetime.now(TZ).date()


def feed(gw: LibraryGateway) -> dict[str, Any]:
    """A morning in the library; returns what the page must show."""
    now = time.time()
    this_hour = dt.datetime.fromtimestamp(now, TZ).replace(minute=0, second=0, microsecond=0).timestamp()
    readings = [
        counts("gate-main", this_hour - 7200 + 20 * 60, 4, 1),
        counts("gate-main", this_hour - 7200 + 50 * 60, 3, 2),
        counts("gate-annex", this_hour - 3600 + 30 * 60, 5, 6, ils=0),  # its last report: stale now
        counts("gate-main", now - 2, 2, 0),
    ]
    for reading in readings:
        gw.submit(reading)
    per_hour: dict[str, list[int]] = {}
    for r in readings:
        assert r.ts is not None
        slot = per_hour.setdefault(hour_of(r.ts), [0, 0])
        slot[0] += int(r.values["visitors_in"])
        slot[1] += int(r.values["visitors_out"])
    not_charged = gw.submit(Event("gate-main", "gate_alarm", {"item": ITEM, "decision": "alarm",
                                                              "reason": "not_charged", "source": "ils",
                                                              "offline": False, "circulation": "03"}))
    offline = gw.submit(Event("gate-main", "gate_alarm", {"item": ITEM, "decision": "alarm", "reason": "secured_tag",
                                                          "source": "tag", "offline": True}))
    for _ in range(3):
        gw.submit(Event("selfcheck-1", "library_loan", {"source": "rfid", "renewal": False, "recovered": False}))
    gw.submit(Event("selfcheck-1", "library_return", {"source": "rfid", "alert": False}))
    for reason in ("unknown_card", "ils_unavailable", "unknown_card"):
        gw.submit(Event("selfcheck-1", "library_refused", {"reason": reason}))
    return {
        "in": sum(int(r.values["visitors_in"]) for r in readings if r.ts is not None and is_today(r.ts)),
        "out": sum(int(r.values["visitors_out"]) for r in readings if r.ts is not None and is_today(r.ts)),
        "per_hour": per_hour,
        "alarms": [offline, not_charged],  # newest first
    }


def num(locator: Locator) -> int:
    return int(locator.inner_text().strip())


def local_hms(record: dict[str, Any]) -> str:
    return dt.datetime.fromtimestamp(record["ts"] / 1000, TZ).strftime("%H:%M:%S")


def element_screenshot(locator: Locator, name: str, tmp_dir: Path) -> None:
    """Like ``conftest.screenshot`` for one element: EDUGATE_SCREENSHOTS=1 copies it to docs/screenshots/."""
    path = tmp_dir / f"{name}.png"
    locator.screenshot(path=str(path))
    if os.environ.get("EDUGATE_SCREENSHOTS"):
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, SCREENSHOTS / f"{name}.png")


def test_the_panel_shows_visitors_alarms_loans_and_gate_health(gateway: LibraryGateway, page: Page,
                                                               tmp_path: Path) -> None:
    expected = feed(gateway)
    login(page, gateway.base, "victor", "/status")
    panel = page.locator("#library")
    expect(panel.locator("h2")).to_contain_text("Library")

    # today's visitors
    assert num(panel.locator('[data-count="visitors-in"] .num')) == expected["in"]
    assert num(panel.locator('[data-count="visitors-out"] .num')) == expected["out"]

    # the chart: 24 hours, a bar where people were counted, heights to scale
    chart = panel.locator("#visitors-chart svg")
    expect(chart).to_have_attribute("role", "img")
    total_in = sum(v[0] for v in expected["per_hour"].values())
    expect(chart).to_have_attribute("aria-label", re.compile(rf"last 24 hours: {total_in} in, "))
    expect(chart.locator("g.hour")).to_have_count(24)
    top = int(panel.locator(".y-axis span").first.inner_text())
    busiest = max(max(v) for v in expected["per_hour"].values())
    assert busiest <= top < 2 * busiest
    for hour, (n_in, n_out) in expected["per_hour"].items():
        group = chart.locator(f'g.hour[data-hour="{hour}"]')
        expect(group).to_have_attribute("data-in", str(n_in))
        expect(group).to_have_attribute("data-out", str(n_out))
        for cls, n in (("in", n_in), ("out", n_out)):
            bar = group.locator(f"rect.bar.{cls}")
            if n:
                assert float(bar.get_attribute("height") or 0) == pytest.approx(120 * n / top, abs=0.01)
            else:
                expect(bar).to_have_count(0)
    bars_in = sum(1 for v in expected["per_hour"].values() if v[0])
    expect(chart.locator("rect.bar.in")).to_have_count(bars_in)
    table = panel.locator("details.chart-table tbody tr")
    expect(table).to_have_count(len(expected["per_hour"]))

    # the alarms, newest first: time in the school's zone, gate, reason, offline flag; no item
    rows = panel.locator("#library-alarms tbody tr")
    expect(rows).to_have_count(2)
    offline, online = rows.nth(0), rows.nth(1)
    expect(offline).to_have_attribute("data-gate", "gate-main")
    expect(offline).to_have_attribute("data-offline", "true")
    expect(offline.locator("td.offline .badge")).to_have_text("offline")
    expect(offline.locator("td.reason")).to_have_text("tag secured (library system offline)")
    expect(offline.locator("td.time")).to_contain_text(local_hms(expected["alarms"][0]))
    expect(offline.locator("td.gate")).to_contain_text("library")
    expect(online).to_have_attribute("data-offline", "false")
    expect(online.locator("td.reason")).to_have_text("not checked out (available)")
    expect(online.locator("td.time")).to_contain_text(local_hms(expected["alarms"][1]))
    assert num(panel.locator('[data-count="alarms"] .num')) == 2
    expect(panel.locator('[data-count="alarms"] .limit')).to_have_text("1 offline")
    assert ITEM not in page.content() and "p1-" not in page.content()

    # loans, returns, refusals
    assert num(panel.locator('#library-loans [data-count="loans"] b')) == 3
    assert num(panel.locator('#library-loans [data-count="returns"] b')) == 1
    assert num(panel.locator('#library-loans [data-count="refused"] b')) == 3
    expect(panel.locator("#library-refusals li")).to_have_count(2)
    expect(panel.locator('#library-refusals [data-reason="unknown_card"]')).to_contain_text(
        re.compile(r"card not registered with the library\s+2"))
    expect(panel.locator('#library-refusals [data-reason="ils_unavailable"] b')).to_have_text("1")

    # gates: the annex stopped reporting half an hour ago -> stale, a warning
    annex = panel.locator('#library-gates tr[data-gate="gate-annex"]')
    expect(annex).to_have_attribute("data-state", "stale")
    expect(annex).to_have_class(re.compile(r"\bwarning\b"))
    expect(annex.locator("td.state .badge")).to_have_class(re.compile(r"\bwarn\b"))
    expect(annex.locator("td.state")).to_contain_text(re.compile(r"stale: last report \d+ min ago"))
    expect(annex.locator("td").nth(0)).to_have_text("reading-room")
    expect(annex.locator("td").nth(3)).to_have_text("offline")  # the library system, as last reported
    main = panel.locator('#library-gates tr[data-gate="gate-main"]')
    expect(main).to_have_attribute("data-state", "ok")
    expect(main.locator("td.last-report")).to_have_text(re.compile(r"^\d+ s ago$"))
    expect(panel.locator("#library-attention")).to_have_text("1 gate needs attention")
    expect(panel.locator('#library-stations [data-station="selfcheck-1"] .badge')).to_have_text("online")

    # the library is not shown a second time as JSON among the other services
    expect(page.locator("#services h3")).to_have_count(0)
    assert "per_hour" not in page.content()
    element_screenshot(panel, "library-panel", tmp_path)


def test_the_panel_follows_new_records_without_a_reload(gateway: LibraryGateway, page: Page) -> None:
    feed(gateway)
    login(page, gateway.base, "alice", "/status")
    panel = page.locator("#library")
    loans_before = num(panel.locator('[data-count="loans"] .num'))
    visitors_before = num(panel.locator('[data-count="visitors-in"] .num'))
    expect(panel.locator('tr[data-gate="gate-annex"]')).to_have_attribute("data-state", "stale")
    page.evaluate("window.__same_page = true")  # gone if the page reloads

    gateway.submit(counts("gate-annex", time.time(), 6, 0, ils=1))  # the annex is back
    alarm = gateway.submit(Event("gate-annex", "gate_alarm", {"item": ITEM, "decision": "alarm",
                                                              "reason": "not_charged", "source": "ils",
                                                              "offline": False, "circulation": "12"}))
    gateway.submit(Event("selfcheck-1", "library_loan", {"source": "barcode", "renewal": False, "recovered": False}))

    expect(panel.locator('[data-count="loans"] .num')).to_have_text(str(loans_before + 1), timeout=8_000)
    expect(page.locator('#library [data-count="visitors-in"] .num')).to_have_text(str(visitors_before + 6))
    newest = page.locator("#library-alarms tbody tr").first
    expect(newest).to_have_attribute("data-gate", "gate-annex")
    expect(newest.locator("td.reason")).to_have_text("not checked out (lost)")
    expect(newest.locator("td.time")).to_contain_text(local_hms(alarm))
    expect(page.locator('#library-gates tr[data-gate="gate-annex"]')).to_have_attribute("data-state", "ok")
    expect(page.locator("#library-attention")).to_have_count(0)
    assert page.evaluate("window.__same_page") is True


def test_a_new_gateway_without_reports_on_a_phone_without_javascript(gateway: LibraryGateway,
                                                                     browser: Browser) -> None:
    context = browser.new_context(viewport=PHONE, is_mobile=True, java_script_enabled=False)
    context.set_default_timeout(15_000)
    try:
        page = context.new_page()
        login(page, gateway.base, "victor", "/status")
        panel = page.locator("#library")
        expect(panel).to_be_visible()
        for key in ("visitors-in", "visitors-out", "alarms", "loans", "returns", "refused"):
            expect(panel.locator(f'[data-count="{key}"] .num')).to_have_text("0")
        expect(panel.locator("#visitors-chart g.hour")).to_have_count(24)
        expect(panel.locator("#visitors-chart rect.bar")).to_have_count(0)
        expect(panel.locator("#visitors-chart figcaption")).to_contain_text("no visitor counted yet")
        expect(panel.locator("#library-no-alarms")).to_have_text("No alarm since the gateway started.")
        for gate in ("gate-annex", "gate-main"):
            row = panel.locator(f'#library-gates tr[data-gate="{gate}"]')
            expect(row).to_have_attribute("data-state", "waiting")
            expect(row.locator("td.state")).to_have_text("no report yet")
            expect(row.locator("td.last-report")).to_have_text("never")
        expect(panel.locator("#library-attention")).to_have_text("2 gates need attention")
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, f"the status page is {overflow} px wider than a phone screen"
    finally:
        context.close()
