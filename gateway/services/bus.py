"""The school bus: boarding and alighting with the bus's position, and the "child left on the bus" check.

A tap at a reader with role ``bus`` boards the card (direction ``in``), alights
it (``out``), or toggles (``both``: the first tap boards, the next alights).
The tap event is annotated with ``action`` and the latest GPS fix of the bus
(from any device reporting ``lat``/``lon`` with ``fix`` 1). Who is on board is
kept in a small file, written atomically at every change, so a gateway restart
mid-route forgets nobody. At the end of a route (a configured time, or the
``bus.end_route`` command), every card still on board raises a
``bus_left_onboard`` alert event, and a ``bus_route_end`` event sums up.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import os
import time
from pathlib import Path
from typing import Any, TypedDict
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field

from edugate.contract.records import Emit, Event
from edugate.gateway.services.base import Command, Section, Select, Service, ServiceSetup, card_taps, card_taps_at

log = logging.getLogger(__name__)


class BusConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    route_end_times: list[dt.time] = Field(default_factory=list, description="Local times at which routes end, "
                                           "e.g. ['07:45', '17:30']: every card still on board then is an alert.")
    state_file: Path | None = Field(None, description="Who is on board (default: next to the outbox).")


class BusStatus(TypedDict):
    onboard: int
    boarded: int
    alighted: int
    left_onboard: int


class EndRoute(BaseModel):
    """The arguments of ``bus.end_route``: none."""

    model_config = ConfigDict(extra="forbid")


class BusRoute(Service):
    name = "bus"
    order = 30
    section = Section("bus", BusConfig, "School bus routes (a bus gateway).")
    observes = (Select(kinds=frozenset({"telemetry"})), card_taps_at("bus"))  # GPS fixes, and taps on the bus

    @classmethod
    def from_config(cls, setup: ServiceSetup) -> BusRoute | None:
        """On a gateway with a ``bus:`` section or a reader with role bus."""
        bus_readers = list(setup.readers("bus"))
        if setup.section is None and not bus_readers:
            return None
        bus = setup.section if isinstance(setup.section, BusConfig) else BusConfig()
        readers = bus_readers or [d.id for d in setup.devices][:1] or ["bus"]
        return cls(bus, setup.timezone, bus.state_file or setup.data_dir / "bus-onboard.json", readers)

    def __init__(self, cfg: BusConfig, tz: str, state_file: Path, readers: list[str]) -> None:
        self.cfg = cfg
        self.tz = ZoneInfo(tz)
        self.state_file = Path(state_file)
        self.readers = readers
        self.position: dict[str, float] | None = None  # lat, lon, ts (s)
        self.onboard: dict[str, dict[str, Any]] = self._load()
        self.counts = {"boarded": 0, "alighted": 0, "left_onboard": 0}
        self._ended: set[tuple[str, dt.time]] = set()

    # ------------------------------------------------------------------ state on disk

    def _load(self) -> dict[str, dict[str, Any]]:
        try:
            data = json.loads(self.state_file.read_text())
        except FileNotFoundError:
            return {}
        except ValueError as exc:
            log.error("bus state %s unreadable (%s): starting with nobody on board", self.state_file, exc)
            return {}
        if data:
            log.warning("bus: %d cards still on board from before the restart", len(data))
        return dict(data)

    def _save(self) -> None:
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.state_file.with_suffix(".tmp")
        with tmp.open("w") as fh:
            json.dump(self.onboard, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.state_file)

    # ------------------------------------------------------------------ pipeline

    def stage(self, record: dict[str, Any]) -> dict[str, Any] | None:
        values = record.get("values")
        if values is not None:
            if values.get("fix") == 1 and "lat" in values and "lon" in values:
                self.position = {"lat": float(values["lat"]), "lon": float(values["lon"]), "ts": record["ts"] / 1000}
            return record
        data = card_taps(record, "bus")
        if data is None:
            return record
        card = data["card"]
        direction = data.get("direction", "both")
        action = {"in": "board", "out": "alight"}.get(direction) or ("alight" if card in self.onboard else "board")
        data["action"] = action
        if self.position is not None:
            data.update(lat=round(self.position["lat"], 5), lon=round(self.position["lon"], 5),
                        position_age_s=round(record["ts"] / 1000 - self.position["ts"], 1))
        if action == "board":
            self.onboard[card] = {"boarded_at": record["ts"], "device": record["device"],
                                  **{k: data[k] for k in ("lat", "lon") if k in data}}
            self.counts["boarded"] += 1
        else:
            self.onboard.pop(card, None)
            self.counts["alighted"] += 1
        self._save()
        return record

    # ------------------------------------------------------------------ end of route

    def end_route(self, reason: str) -> list[Event]:
        """Alerts for every card still on board, and the route summary; empties the bus."""
        device = self.readers[0]
        now = time.time()
        events = [Event(entry.get("device", device), "bus_left_onboard",
                        {"card": card, "boarded_at": entry["boarded_at"],
                         **{k: entry[k] for k in ("lat", "lon") if k in entry}, "alert": True}, ts=now)
                  for card, entry in sorted(self.onboard.items())]
        events.append(Event(device, "bus_route_end", {"reason": reason, "left_onboard": len(self.onboard),
                                                      "boarded": self.counts["boarded"],
                                                      "alighted": self.counts["alighted"]}, ts=now))
        if self.onboard:
            log.error("bus: %d card(s) still on board at the end of the route: alert raised", len(self.onboard))
        self.counts["left_onboard"] += len(self.onboard)
        self.counts["boarded"] = self.counts["alighted"] = 0
        self.onboard = {}
        self._save()
        return events

    def due(self, now: dt.datetime) -> bool:
        for t in self.cfg.route_end_times:
            key = (now.date().isoformat(), t)
            if now.time() >= t and key not in self._ended:
                self._ended.add(key)
                return True
        return False

    async def run(self, emit: Emit) -> None:
        now = dt.datetime.now(self.tz)
        self._ended = {(now.date().isoformat(), t) for t in self.cfg.route_end_times if now.time() >= t}
        self._emit = emit
        while True:
            await asyncio.sleep(10)
            if self.due(dt.datetime.now(self.tz)):
                for event in self.end_route("scheduled"):
                    await emit(event)

    def commands(self) -> dict[str, Command]:
        async def end_route(_args: EndRoute) -> dict[str, Any]:
            events = self.end_route("command")
            for event in events:
                await self._emit(event)
            return {"left_onboard": len(events) - 1}

        return {"bus.end_route": Command(EndRoute, end_route)}

    def status(self) -> BusStatus:
        return {"onboard": len(self.onboard), "boarded": self.counts["boarded"],
                "alighted": self.counts["alighted"], "left_onboard": self.counts["left_onboard"]}

    def state_files(self) -> list[Path]:
        return [self.state_file]
