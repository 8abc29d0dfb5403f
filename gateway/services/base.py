"""Gateway services: school logic that sits on the pipeline (access decisions, attendance, the bus).

A service may look at (and annotate) every record through :meth:`Service.stage`,
run a background task that emits its own events (:meth:`Service.run`), accept
downlink commands, and report status. The runtime builds the services the
config asks for; drivers never see them.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edugate.contract.records import Emit

if TYPE_CHECKING:
    from edugate.gateway.config import GatewayConfigBase


class Service:
    name = "service"

    def stage(self, record: dict[str, Any]) -> dict[str, Any] | None:
        """Called for every record before it is committed; return it (possibly annotated)."""
        return record

    async def run(self, emit: Emit) -> None:
        """Background work; the default has none."""
        await asyncio.Event().wait()

    def commands(self) -> dict[str, Any]:
        """Downlink commands this service handles: name -> (args model, async handler)."""
        return {}

    def status(self) -> dict[str, Any]:
        return {}


def card_taps(record: dict[str, Any], *roles: str) -> dict[str, Any] | None:
    """The data of a ``card_tap`` event from a reader with one of ``roles``, else None."""
    if record.get("type") != "card_tap":
        return None
    data = record.get("data") or {}
    return data if not roles or data.get("role") in roles else None


def build_services(cfg: GatewayConfigBase) -> list[Service]:
    """The services this gateway's config asks for, in pipeline order: access, attendance, bus."""
    from edugate.gateway.services.access import AccessControl
    from edugate.gateway.services.attendance import Attendance
    from edugate.gateway.services.bus import BusConfig, BusRoute

    data_dir = Path(cfg.storage.path).parent
    devices = [d for d in cfg.devices if d.enabled]
    by_role: dict[str, dict[str, str | None]] = {}
    for dev in devices:
        role = getattr(dev, "role", None)
        if role:
            by_role.setdefault(role, {})[dev.id] = dev.room
    services: list[Service] = []
    if by_role.get("door") or by_role.get("lab"):
        path = cfg.access.allowlist_file or data_dir / "allowlist.json"
        services.append(AccessControl(path, {d.id: d.room for d in devices}))
    if cfg.timetable is not None:
        readers = {**by_role.get("attendance", {}), **by_role.get("lab", {})}
        services.append(Attendance(cfg.timetable, cfg.timezone, readers,
                                   state_file=cfg.timetable.state_file or data_dir / "attendance-tallies.json"))
    if cfg.bus is not None or by_role.get("bus"):
        bus = cfg.bus or BusConfig()
        readers = list(by_role.get("bus", {})) or [d.id for d in devices][:1] or ["bus"]
        services.append(BusRoute(bus, cfg.timezone, bus.state_file or data_dir / "bus-onboard.json", readers))
    # --- smart library (issue 7): the librarian's view of gates and self-check stations
    from edugate.gateway.services.library import library_service

    library = library_service(devices, cfg.timezone)
    if library is not None:
        services.append(library)
    return services
