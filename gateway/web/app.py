"""The gateway's own pages: the status page (IT staff), live readings (lab teachers), admin actions.

Built from a small interface, :class:`GatewaySite`, so the pages know nothing
of the runtime: a callable returning the status dict (``Gateway.status()``),
the :class:`~gateway.web.live.LiveData` the pipeline feeds, the thresholds to
draw, and the admin actions. ``gateway/web/serve.py`` builds it from a running
gateway; tests build it from fakes.
"""

from __future__ import annotations

import asyncio
import json
import pathlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any
from zoneinfo import ZoneInfo

from fastapi import FastAPI, HTTPException, Path, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from pydantic import BaseModel

from edugate.common.web.site import Admin, SiteAuth, Viewer, build_site, check_csrf, page
from edugate.drivers.base import ID_PATTERN
from edugate.gateway.services.base import Service
from edugate.gateway.web.alerts_panel import add_alert_routes
from edugate.gateway.web.config import Threshold
from edugate.gateway.web.doctor_page import DoctorRun, add_doctor_routes
from edugate.gateway.web.live import LiveData
from edugate.gateway.web.sessions_pages import add_session_routes
from edugate.gateway.web.views import status_view

ACTION_PATTERN = r"^[a-z][a-z0-9-]{0,40}$"
ROOM_PATTERN = r"^[^\x00-\x1f]{1,64}$"
KEEPALIVE_S = 15.0
UNKNOWN: dict[int | str, dict[str, Any]] = {404: {"description": "No such device, room or action on this gateway"}}

DeviceQuery = Annotated[str | None, Query(pattern=ID_PATTERN, description="A device id.")]
RoomQuery = Annotated[str | None, Query(pattern=ROOM_PATTERN, description="A room (every device in it).")]


@dataclass(frozen=True)
class AdminAction:
    title: str
    description: str
    run: Callable[[], Awaitable[str]]  # returns what happened, for the person who clicked


@dataclass
class GatewaySite:
    """What the gateway lends its pages."""

    status: Callable[[], dict[str, Any]]
    live: LiveData
    timezone: str = "UTC"
    thresholds: Mapping[str, Mapping[str, Threshold]] = field(default_factory=dict)
    actions: Mapping[str, AdminAction] = field(default_factory=dict)
    services: Mapping[str, Service] = field(default_factory=dict)  # the running services (alerts, sessions)
    doctor: DoctorRun | None = None  # runs the doctor on the gateway's config (the /doctor page)

    def devices(self) -> dict[str, dict[str, Any]]:
        return dict(self.status().get("devices") or {})

    def select(self, device: str | None, room: str | None) -> list[str]:
        """Device ids for a ``device`` or a ``room`` query (neither: every device); 404 for an unknown one."""
        devices = self.devices()
        if device:
            if device not in devices:
                raise HTTPException(404, f"no device {device!r} on this gateway")
            return [device]
        if room:
            found = sorted(d for d, info in devices.items() if info.get("room") == room)
            if not found:
                raise HTTPException(404, f"no device in room {room!r}")
            return found
        return sorted(devices)

    def thresholds_json(self) -> dict[str, dict[str, dict[str, float | None]]]:
        return {dev: {name: t.model_dump() for name, t in values.items()} for dev, values in self.thresholds.items()}


class ActionResult(BaseModel):
    ok: bool
    message: str


class Series(BaseModel):
    device: str
    room: str | None
    ts: list[float]
    values: dict[str, list[float | None]]


TEMPLATES = pathlib.Path(__file__).resolve().parent / "templates"  # status, live, library panel


def create_gateway_app(site: GatewaySite, auth: SiteAuth) -> FastAPI:
    app = build_site("EduGate gateway", auth, "/status", [("/status", "Status"), ("/live", "Live readings"),
                                                           ("/admin", "Admin")], template_dirs=[TEMPLATES])
    app.state.site = site
    add_alert_routes(app, site.services)
    add_session_routes(app, site.services, site.timezone)
    add_doctor_routes(app, site.doctor)

    @app.get("/status", response_class=HTMLResponse, summary="Status page (IT staff)")
    async def status_page(request: Request, who: Viewer) -> Response:
        return page(request, "status.html", who, {"s": status_view(site.status(), site.timezone)})

    @app.get("/status/body", response_class=HTMLResponse, summary="The status page's body, refreshed by the page")
    async def status_body(request: Request, who: Viewer) -> Response:
        return page(request, "_status.html", who, {"s": status_view(site.status(), site.timezone)})

    @app.get("/api/status", summary="Everything the status page shows, as JSON")
    async def api_status(who: Viewer) -> dict[str, Any]:
        return site.status()

    @app.get("/live", response_class=HTMLResponse, summary="Live readings (lab teachers)", responses=UNKNOWN)
    async def live_page(request: Request, who: Viewer, device: DeviceQuery = None, room: RoomQuery = None) -> Response:
        devices = site.devices()
        rooms = sorted({info.get("room") for info in devices.values() if info.get("room")})
        chosen: list[str] = []
        if device or room:
            chosen = site.select(device, room)
        query = f"device={device}" if device else (f"room={room}" if room else "")
        return page(request, "live.html", who, {
            "devices": devices, "rooms": rooms, "chosen": chosen, "device": device, "room": room, "query": query,
            "sessions": site.services.get("sessions"),
            "config": {"devices": chosen, "thresholds": site.thresholds_json(), "window_s": site.live.window_s,
                       "resolution_s": site.live.resolution_s, "query": query,
                       "timezone": site.timezone},
        })

    @app.get("/api/devices", summary="Configured devices, their rooms, latest values and thresholds")
    async def api_devices(who: Viewer) -> list[dict[str, Any]]:
        thresholds = site.thresholds_json()
        return [{"id": dev, "room": info.get("room"), "driver": info.get("driver"), "state": info.get("state"),
                 "latest": site.live.latest.get(dev), "thresholds": thresholds.get(dev, {})}
                for dev, info in sorted(site.devices().items())]

    @app.get("/api/history", response_model=Series, summary="A device's recent values (the plot's data)",
             responses=UNKNOWN)
    async def api_history(who: Viewer, device: Annotated[str, Query(pattern=ID_PATTERN)]) -> dict[str, Any]:
        site.select(device, None)
        return site.live.history(device)

    @app.get("/api/live", summary="Live updates as Server-Sent Events (text/event-stream)",
             response_class=StreamingResponse, responses={200: {"content": {"text/event-stream": {}}}, **UNKNOWN})
    async def api_live(request: Request, who: Viewer, device: DeviceQuery = None,
                       room: RoomQuery = None) -> Response:
        wanted = set(site.select(device, room))
        if site.live.clients >= site.live.max_clients:
            return JSONResponse({"detail": f"{site.live.max_clients} live pages are open already; close one"},
                                status_code=503)
        return StreamingResponse(_events(site.live, wanted), media_type="text/event-stream",
                                 headers={"X-Accel-Buffering": "no"})

    @app.get("/api/export.csv", summary="Download what the gateway holds in memory (the last hour) as CSV",
             response_class=Response, responses={200: {"content": {"text/csv": {}}}, **UNKNOWN})
    async def export_csv(who: Viewer, device: DeviceQuery = None, room: RoomQuery = None) -> Response:
        devices = site.select(device, room)
        status = site.status()
        stamp = datetime.now(ZoneInfo(site.timezone)).strftime("%Y%m%d-%H%M")
        name = f"edugate-{status.get('school', 'school')}-{device or _slug(room or 'all')}-{stamp}.csv"
        return Response(site.live.csv(devices, site.timezone), media_type="text/csv; charset=utf-8",
                        headers={"Content-Disposition": f'attachment; filename="{name}"'})

    @app.get("/admin", response_class=HTMLResponse, summary="Admin actions (admins only)")
    async def admin_page(request: Request, who: Admin) -> Response:
        return page(request, "admin.html", who, {"actions": site.actions, "message": None})

    @app.post("/api/actions/{name}", response_model=ActionResult, summary="Run an admin action (CSRF token needed)",
              responses=UNKNOWN)
    async def run_action(request: Request, who: Admin,
                         name: Annotated[str, Path(pattern=ACTION_PATTERN)]) -> Response:
        form = await check_csrf(request, who)
        action = site.actions.get(name)
        if action is None:
            raise HTTPException(404, f"no action {name!r}")
        try:
            message = await action.run()
            ok = True
        except (RuntimeError, OSError, ValueError) as exc:
            message, ok = f"{action.title} failed: {exc}", False
        if form.get("csrf"):  # the page's form (no JavaScript): show the admin page again with the result
            return page(request, "admin.html", who, {"actions": site.actions, "message": message, "ok": ok})
        return JSONResponse({"ok": ok, "message": message})

    return app


async def _events(live: LiveData, wanted: set[str]) -> AsyncIterator[str]:
    with live.subscribe() as queue:
        yield "retry: 2000\n\n"
        for device in sorted(wanted):
            if device in live.latest:
                yield _sse(live.latest[device])
        while True:
            try:  # asyncio.timeout, not wait_for: 3.11's wait_for can drop a cancellation (gh-86296)
                async with asyncio.timeout(KEEPALIVE_S):
                    update = await queue.get()
            except TimeoutError:
                yield f": keep-alive {int(time.time())}\n\n"
                continue
            if update is None:  # the gateway is stopping
                return
            if update["device"] in wanted:
                yield _sse(update)


def _sse(update: dict[str, Any]) -> str:
    return f"event: {update['kind']}\ndata: {json.dumps(update, separators=(',', ':'))}\n\n"


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in text)[:40] or "room"
