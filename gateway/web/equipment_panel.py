"""The equipment panel of the status page: the asset registry of this gateway (``services.assets``).

:meth:`edugate.gateway.services.assets.AssetsService.status` lists every asset (devices and the school's
inventory) with what it is, where, when it was last seen and its usage; :func:`equipment_view` turns that
into rows for ``templates/_equipment.html`` (local times, ages, hours). Every key may be missing or wrong:
the panel then shows less, never fails the page.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from edugate.common.web.timefmt import ago, local_time


@dataclass(frozen=True)
class AssetRow:
    asset: str
    name: str  # what it is: make and model, or the inventory's name
    category: str  # driver or inventory category
    source: str  # "device" | "inventory"
    room: str
    serial: str
    firmware: str
    state: str  # "on" | "left on" | "off" | "missing" | "listed" (inventory, no sighting)
    last_seen: str
    last_seen_ago: str
    today_on: str  # "1.5 h"
    week_on: str
    lamp_today: str


@dataclass(frozen=True)
class EquipmentPanel:
    rows: list[AssetRow]
    devices: int
    inventory: int
    in_use: int
    on_now: int
    left_on: int
    inventory_file: str
    inventory_problems: list[str]
    inventory_error: str
    energy: str  # "on outside school hours 07:00-17:00 mon,... (15 min grace) raises an event; ..." or ""


def equipment_view(info: Mapping[str, Any] | None, tz: str, now: float | None = None) -> EquipmentPanel:
    info = info if isinstance(info, Mapping) else {}
    now = time.time() if now is None else now
    rows = []
    assets = info.get("assets")
    for a in assets if isinstance(assets, list) else []:
        if not isinstance(a, Mapping):
            continue
        seen = _number(a.get("last_seen"))
        seen_s = seen / 1000 if seen else None
        name = " ".join(str(a.get(k) or "") for k in ("make", "model")).strip() or str(a.get("name") or "")
        if a.get("source") == "inventory":
            state = "listed"
        elif a.get("missing"):
            state = "missing"
        else:
            state = "left on" if a.get("left_on") else "on" if a.get("on") else "off"
        rows.append(AssetRow(
            asset=str(a.get("asset") or "?"), name=name, category=str(a.get("category") or a.get("driver") or ""),
            source=str(a.get("source") or ""), room=str(a.get("room") or ""), serial=str(a.get("serial") or ""),
            firmware=str(a.get("firmware") or ""), state=state, last_seen=local_time(seen_s, tz) if seen_s else "",
            last_seen_ago=ago(seen_s, now) if seen_s else "never", today_on=_hours(a.get("today_on_h")),
            week_on=_hours(a.get("week_on_h")), lamp_today=_hours(a.get("today_lamp_h"))))
    rows.sort(key=lambda r: (r.source != "device", r.room, r.asset))
    energy = info.get("energy")
    rule = ""
    if isinstance(energy, Mapping):
        days = energy.get("days")
        rule = (f"on outside school hours {energy.get('start', '?')}-{energy.get('end', '?')} "
                f"{','.join(map(str, days)) if isinstance(days, list) else ''} "
                f"({_number(energy.get('grace_min')) or 0:g} min grace)")
        empty_min = _number(energy.get("empty_min"))
        if empty_min is not None:
            rule += f", or {empty_min:g} min in an empty room,"
        rule += " raises an event"
        if energy.get("switch_off") is True:
            rule += "; the board or projector is then switched off (the school's opt-in)"
    problems = info.get("inventory_problems")
    return EquipmentPanel(
        rows=rows, devices=_int(info.get("devices")), inventory=_int(info.get("inventory")),
        in_use=_int(info.get("in_use")), on_now=sum(r.state in ("on", "left on") for r in rows),
        left_on=sum(r.state == "left on" for r in rows), inventory_file=str(info.get("inventory_file") or ""),
        inventory_problems=[str(p) for p in problems] if isinstance(problems, list) else [],
        inventory_error=str(info.get("inventory_error") or ""), energy=rule)


def _number(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def _int(value: Any) -> int:
    number = _number(value)
    return int(number) if number is not None else 0


def _hours(value: Any) -> str:
    number = _number(value)
    return "" if number is None else f"{number:g} h"
