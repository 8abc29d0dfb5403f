"""Turn status dicts into what the templates show: local times, ages, sizes, fill levels."""

from __future__ import annotations

import json
import time
from typing import Any

from edugate.common.web.timefmt import ago, local_time
from edugate.gateway.web.alerts_panel import alerts_view
from edugate.gateway.web.equipment_panel import equipment_view
from edugate.gateway.web.library_panel import LibraryPanel, library_view
from edugate.gateway.web.models_panel import models_view

PANEL_SERVICES = ("library", "alerts", "assets", "models")
"""Services with a panel of their own on the status page (not a row of the Services card)."""


def size(n: float | None) -> str:
    """Bytes in binary units, as the config's ``budget_mb`` counts them (MiB)."""
    if n is None:
        return "?"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    s = int(seconds)
    days, s = divmod(s, 86400)
    hours, s = divmod(s, 3600)
    minutes, s = divmod(s, 60)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes} min"
    return f"{minutes} min {s} s" if minutes else f"{s} s"


def status_view(status: dict[str, Any], tz: str) -> dict[str, Any]:
    """The gateway status (``Gateway.status()``) for the status page."""
    health = status.get("health") or {}
    uplink = status.get("uplink") or {}
    now = time.time()
    budget = health.get("outbox_budget_bytes") or 0
    used = health.get("outbox_bytes") or 0
    devices = []
    for device_id, d in sorted((status.get("devices") or {}).items()):
        devices.append({
            "id": device_id, "room": d.get("room") or "", "driver": d.get("driver") or "",
            "state": d.get("state") or "unknown", "error_count": d.get("error_count") or 0,
            "last_error": d.get("last_error") or "",
            "last_error_at": local_time(d.get("last_error_at"), tz),
            "last_reading": local_time(d.get("last_reading_at"), tz),
            "last_reading_ago": ago(d.get("last_reading_at"), now),
            "counters": ", ".join(f"{k} {v}" for k, v in sorted((d.get("counters") or {}).items())),
            "about": d.get("about") if isinstance(d.get("about"), str) else "",  # a kit: board, firmware version
        })
    started = (status.get("started_at") or 0) / 1000 or None
    services = status.get("services") or {}
    library = services.get("library")  # a panel of its own (library_panel.py), not a row of JSON
    return {
        "school": status.get("school"), "gateway": status.get("gateway"), "district": status.get("district"),
        "name": status.get("name"), "version": status.get("version"),
        "started": local_time(started, tz), "uptime": duration(health.get("uptime_s")),
        "clock_synced": bool(status.get("clock_synced")),
        "uplink_connected": bool(health.get("uplink_connected")),
        "broker": f"{uplink.get('host', '?')}:{uplink.get('port', '?')}",
        "uplink_error": uplink.get("last_error") or "",
        "reconnects": health.get("uplink_reconnects", 0),
        "published": health.get("published_records", 0),
        "outbox_records": health.get("outbox_records", 0),
        "outbox_events": health.get("outbox_events", 0),
        "outbox_used": size(used), "outbox_budget": size(budget),
        "outbox_fill": round(100 * used / budget, 1) if budget else 0.0,
        "drops": [(label, _yes_no(value), bool(value)) for label, value in (
            ("telemetry thinned (over the disk budget)", health.get("telemetry_thinned", 0)),
            ("events alone over the budget (all kept)", health.get("events_over_budget", False)),
            ("records rejected by the pipeline", health.get("pipeline_rejected", 0)),
            ("records dropped by a stage", health.get("pipeline_dropped", 0)),
            ("skipped polls (device too slow)", health.get("skipped_polls", 0)))],
        "cpu": health.get("cpu_percent"), "rss": size(health.get("rss_bytes")),
        "devices": devices,
        "devices_online": sum(d["state"] == "online" for d in devices),
        "services": [(name, _flat(info)) for name, info in sorted(services.items())
                     if not (name in PANEL_SERVICES and isinstance(info, dict))],
        "panel_services": [name for name in PANEL_SERVICES if isinstance(services.get(name), dict)],
        "alerts": alerts_view(services["alerts"], tz, now) if isinstance(services.get("alerts"), dict) else None,
        "library": _library(library, tz, now, status.get("devices")) if isinstance(library, dict) else None,
        "equipment": equipment_view(services["assets"], tz, now) if isinstance(services.get("assets"), dict)
        else None,
        "models": models_view(services),  # the models stage and the attendance checks' models (issue 14)
        "time": local_time(now, tz),
    }


def _library(info: dict[str, Any], tz: str, now: float, devices: Any) -> LibraryPanel:
    return library_view(info, tz, now, devices if isinstance(devices, dict) else None)


def _yes_no(value: Any) -> Any:
    return ("yes" if value else "no") if isinstance(value, bool) else value


def _flat(info: Any) -> list[tuple[str, str]]:
    if not isinstance(info, dict):
        return [("status", str(info))]
    return [(str(k), v if isinstance(v, str) else json.dumps(v, default=str)) for k, v in info.items()]
