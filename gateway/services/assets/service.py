"""The asset registry service: what equipment a school has, what it is, where, and how much it is used.

Every device this gateway talks to becomes an **asset** keyed by its device id, with what its protocol
reveals (make, model, serial number, firmware: a PJLink ``device_info`` event, a lab kit's ``kit_hello``,
or any driver's ``device_info``, e.g. Modbus Read Device Identification), its room and driver, and when it was
first and last seen. Equipment without electronics (microscopes, robot kits, VR headsets) enters from the
school's inventory CSV (:mod:`.inventory`); an item whose ``tag`` is the address of a BLE device of this
gateway is marked present whenever that device is heard (the BLE device is then the item's tag, not an asset
of its own).

**Usage evidence** per asset and local day: power-on hours (from ``power_on`` telemetry: the time between
two readings that both say on, at most ``max_gap_s``), lamp hours consumed (last minus first
``lamp_hours`` of the day), readings and events seen, tag sightings, last seen. It is kept in ``state_file``
across restarts and forwarded as records: an ``asset`` event when an asset appears or what it is changes, and
an ``asset_usage`` event per asset and day that changed, every ``report_every_s`` (central keeps the latest
per asset and day, so a repeat never double-counts).

**The energy rule** (``energy:``, :mod:`.energy`): a board or projector on outside school hours, or in an
empty room, raises ``energy_left_on``; with ``switch_off: true`` the service then sends the device ``power
off`` through its driver and records the answer as ``energy_auto_off``.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import datetime as dt
import json
import logging
import os
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict

from edugate.contract.records import Emit, Event
from edugate.gateway.services.assets.config import AssetsConfig
from edugate.gateway.services.assets.energy import EnergyRule
from edugate.gateway.services.assets.inventory import Asset, Inventory, InventoryProblem, read_inventory
from edugate.gateway.services.base import Command, DeviceLookup, Record, Section, Service, ServiceSetup

log = logging.getLogger(__name__)

OWN_EVENTS = frozenset({"asset", "asset_usage", "energy_left_on", "energy_switched_off", "energy_auto_off"})
IDENTITY_KEYS = ("make", "model", "serial", "firmware")
POWER_DRIVERS = frozenset({"pjlink", "display_serial"})
"""Drivers whose ``power`` command takes ``{"value": "off"}``: the ones the energy rule may switch off."""
SWITCH_OFF_TIMEOUT_S = 20.0
GATEWAY = "_gateway"
KEEP_DAYS = 62  # two months of usage per asset on the gateway (central keeps the rest)


@dataclass
class Usage:
    on_s: float = 0.0
    lamp_first: int | None = None
    lamp_last: int | None = None
    readings: int = 0
    events: int = 0
    last_seen: int = 0
    powered: bool = False  # the asset reported a power state that day (then use means power-on time)
    seen: int = 0  # sightings of an inventory item's tag

    def record(self, asset: str, day: str) -> dict[str, Any]:
        lamp = (self.lamp_last - self.lamp_first) if self.lamp_first is not None and self.lamp_last is not None \
            else None
        return {"asset": asset, "day": day, "power_on_h": round(self.on_s / 3600, 3), "powered": self.powered,
                "lamp_h": lamp, "readings": self.readings, "events": self.events, "seen": self.seen,
                "last_seen": self.last_seen}


@dataclass
class _Power:
    on: bool = False
    at: int = 0  # ms of the last power reading


class ReportArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AssetsService(Service):
    name = "assets"
    order = 60  # bookkeeping: after the rules and the sessions
    section = Section("assets", AssetsConfig, "The asset registry, usage evidence and the energy rule; "
                      "leave out: no registry.")

    @classmethod
    def from_config(cls, setup: ServiceSetup) -> Service | None:
        if not isinstance(setup.section, AssetsConfig):
            return None
        return cls(setup.section, setup, setup.section.state_file or setup.data_dir / "assets.json")

    def __init__(self, config: AssetsConfig, setup: ServiceSetup, state_file: Path) -> None:
        self.config = config
        self.tz = ZoneInfo(setup.timezone)
        self.state_file = state_file
        self.assets: dict[str, Asset] = {}
        self.usage: dict[tuple[str, str], Usage] = {}
        self.power: dict[str, _Power] = {}
        self.inventory = Inventory()
        self.counts = {"asset_records": 0, "usage_records": 0, "energy_events": 0, "switch_offs": 0,
                       "switch_off_failures": 0, "tag_sightings": 0}
        self._queue: deque[Event] = deque()
        self._switch_off: deque[tuple[str, str]] = deque()  # (asset, reason): power off is due
        self._announce: set[str] = set()  # assets whose identity changed: an ``asset`` record is due
        self._usage_dirty: set[tuple[str, str]] = set()
        self._dirty = False
        self._wakeup: asyncio.Event | None = None
        self._emit: Emit | None = None
        self._devices: DeviceLookup | None = None
        self._day_cache: tuple[int, int, str, int] = (0, 0, "", 0)
        self._drivers = {dev.id: dev.driver for dev in setup.devices}
        self._ble = {str(addr).upper(): dev.id for dev in setup.devices
                     if dev.driver == "ble" and isinstance(addr := getattr(dev, "address", None), str)}
        self._tags: dict[str, str] = {}  # BLE device id -> the inventory item it tags
        self._seen: dict[str, tuple[int | None, int | None]] = {}  # inventory items' sightings, as last saved
        self.rule = None if config.energy is None else EnergyRule(
            config.energy, self._local, {dev.room for dev in setup.devices if dev.room and getattr(dev, "role", None)})
        self._load()
        for dev in setup.devices:
            asset = self.assets.get(dev.id)
            if asset is None:
                asset = self.assets[dev.id] = Asset(dev.id, "device")
            before = asset.identity()
            asset.source, asset.driver, asset.room = "device", dev.driver, dev.room or asset.room
            model = getattr(dev, "profile", None)
            if isinstance(model, str) and not asset.model:
                asset.model = model
            if asset.identity() != before or asset.first_seen is None:
                self._announce.add(dev.id)
        self._device_ids = {dev.id for dev in setup.devices}
        self._read_inventory()

    def use_devices(self, lookup: DeviceLookup) -> None:
        self._devices = lookup

    # ------------------------------------------------------------------ the pipeline stage

    def stage(self, record: Record) -> Record:
        if self.rule is not None:
            self.rule.observe(record)
        device = record.get("device")
        if not isinstance(device, str) or device == GATEWAY or record.get("type") in OWN_EVENTS:
            return record
        ts = record.get("ts")
        if not isinstance(ts, int):
            return record
        tagged = self._tags.get(device)
        if tagged is not None:
            self._sighting(tagged, ts)
            return record
        asset = self.assets.get(device)
        if asset is None:
            return record
        if asset.first_seen is None:
            asset.first_seen = ts
        asset.last_seen = max(asset.last_seen or 0, ts)
        if isinstance(record.get("room"), str) and record["room"] != asset.room:
            asset.room = record["room"]
            self._announce.add(device)
        usage = self._usage_of(device, ts)
        if record.get("kind") == "event":
            usage.events += 1
            self._identity(asset, record.get("type"), record.get("data"))
        else:
            usage.readings += 1
            values = record.get("values")
            if isinstance(values, Mapping):
                self._usage(asset, usage, ts, values)
        if self._announce:
            self._wake()  # an asset record is due (usage and the state file wait for their timers)
        return record

    def _usage_of(self, asset_id: str, ts: int) -> Usage:
        day = self._day(ts)
        usage = self.usage.get((asset_id, day))
        if usage is None:
            usage = self.usage[(asset_id, day)] = Usage()
        usage.last_seen = max(usage.last_seen, ts)
        self._usage_dirty.add((asset_id, day))
        self._dirty = True
        return usage

    def _sighting(self, item_id: str, ts: int) -> None:
        """An inventory item's BLE tag was heard: the item is present."""
        item = self.inventory.assets.get(item_id)
        if item is None:
            return
        if item.first_seen is None:
            item.first_seen = ts
            self._announce.add(item_id)
            self._wake()
        item.last_seen = max(item.last_seen or 0, ts)
        self._usage_of(item_id, ts).seen += 1
        self.counts["tag_sightings"] += 1

    def _identity(self, asset: Asset, kind: Any, data: Any) -> None:
        if not isinstance(data, Mapping):
            return
        found: dict[str, str] = {}
        if kind == "device_info":
            found = {k: str(data[k]) for k in IDENTITY_KEYS if data.get(k) not in (None, "")}
        elif kind == "kit_hello":
            found = {"model": str(data.get("board") or ""), "firmware": str(data.get("firmware") or ""),
                     "serial": str(data.get("node_id") or "")}
            found = {k: v for k, v in found.items() if v}
        changed = False
        for key, value in found.items():
            value = value[:128]
            if getattr(asset, key) != value:
                setattr(asset, key, value)
                changed = True
        if changed:
            self._announce.add(asset.asset)

    def _usage(self, asset: Asset, usage: Usage, ts: int, values: Mapping[str, Any]) -> None:
        lamp = values.get("lamp_hours")
        if isinstance(lamp, int | float) and not isinstance(lamp, bool):
            usage.lamp_first = int(lamp) if usage.lamp_first is None else min(usage.lamp_first, int(lamp))
            usage.lamp_last = int(lamp) if usage.lamp_last is None else max(usage.lamp_last, int(lamp))
        on = values.get("power_on")
        if not isinstance(on, bool):
            return
        usage.powered = True
        power = self.power.get(asset.asset)
        if power is None:
            power = self.power[asset.asset] = _Power()
        gap_s = (ts - power.at) / 1000 if power.at else None
        if on and power.on and gap_s is not None and 0 < gap_s <= self.config.max_gap_s:
            usage.on_s += gap_s
        power.on, power.at = on, ts
        if self.rule is None:
            return
        for kind, data in self.rule.power(asset.asset, asset.room or None, ts, on):
            self._event(asset, kind, data)
            energy = self.config.energy
            if kind == "energy_left_on" and energy is not None and energy.switch_off:
                self._switch_off.append((asset.asset, str(data["reason"])))

    def _event(self, asset: Asset, kind: str, data: dict[str, Any]) -> None:
        device = asset.asset if asset.asset in self._device_ids else GATEWAY
        self._queue.append(Event(device, kind, data))
        self.counts["energy_events"] += 1
        log.info("assets: %s %s", kind, data)
        self._wake()

    async def _switch_off_due(self) -> None:
        """Send ``power off`` to each device the rule found left on (the school opted in), and record the answer
        as an ``energy_auto_off`` event: result ``ok``, or ``failed`` with the driver's error."""
        while self._switch_off:
            asset_id, reason = self._switch_off.popleft()
            driver = self._drivers.get(asset_id, "")
            data: dict[str, Any] = {"asset": asset_id, "reason": reason, "command": "power off"}
            if driver not in POWER_DRIVERS:
                data |= {"result": "skipped", "error": f"the {driver or 'unknown'} driver has no power command"}
            elif self._devices is None or (device := self._devices(asset_id)) is None:
                data |= {"result": "failed", "error": "the device is not running on this gateway"}
            else:
                try:
                    async with asyncio.timeout(SWITCH_OFF_TIMEOUT_S):
                        await device.command("power", {"value": "off"})
                    data["result"] = "ok"
                except Exception as exc:  # CommandError, a timeout, a driver bug: recorded, the rule goes on
                    data |= {"result": "failed", "error": str(exc) or type(exc).__name__}
            self.counts["switch_offs" if data["result"] == "ok" else "switch_off_failures"] += 1
            log.log(logging.INFO if data["result"] == "ok" else logging.WARNING, "assets: switch-off %s", data)
            self._queue.append(Event(asset_id, "energy_auto_off", data))

    # ------------------------------------------------------------------ background: records, state, inventory

    async def run(self, emit: Emit) -> None:
        self._emit = emit
        self._wakeup = asyncio.Event()
        next_report = time.monotonic() + self.config.report_every_s
        next_save = next_inventory = time.monotonic()
        try:
            while True:
                self._wakeup.clear()  # here, not after the work: a wake-up during the work starts another round
                now = time.monotonic()
                if now >= next_inventory:
                    self._read_inventory()
                    next_inventory = now + 10
                await self._send_announcements(emit)
                while self._queue:
                    await emit(self._queue[0])
                    self._queue.popleft()
                if self._switch_off:
                    await self._switch_off_due()
                    continue  # its events go out at once
                if now >= next_report:
                    await self.report(emit)
                    next_report = now + self.config.report_every_s
                if self._dirty and now >= next_save:
                    self.save()
                    next_save = now + 5
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(max(0.05, min(next_report, next_inventory, next_save + 5) - now)):
                        await self._wakeup.wait()
        finally:
            self.save()

    async def _send_announcements(self, emit: Emit) -> None:
        for asset_id in sorted(self._announce):
            asset = self.assets.get(asset_id) or self.inventory.assets.get(asset_id)
            if asset is None:
                continue
            device = asset_id if asset_id in self._device_ids else GATEWAY
            data = {k: v for k, v in asset.identity().items() if v not in ("", None)}
            data["first_seen"] = asset.first_seen
            self._announce.discard(asset_id)  # before the await: a change staged meanwhile is announced next
            try:
                await emit(Event(device, "asset", data))
            except BaseException:
                self._announce.add(asset_id)
                raise
            self.counts["asset_records"] += 1
            self._dirty = True

    async def report(self, emit: Emit) -> int:
        """Send the usage of every asset and day that changed since the last report."""
        dirty, self._usage_dirty = sorted(self._usage_dirty), set()
        for asset_id, day in dirty:
            usage = self.usage.get((asset_id, day))
            if usage is None:
                continue
            device = asset_id if asset_id in self._device_ids else GATEWAY
            await emit(Event(device, "asset_usage", usage.record(asset_id, day)))
            self.counts["usage_records"] += 1
        return len(dirty)

    def commands(self) -> dict[str, Command]:
        async def report_now(args: ReportArgs) -> dict[str, Any]:
            if self._emit is None:
                raise RuntimeError("the assets service is not running yet")
            return {"usage_records": await self.report(self._emit)}
        return {"assets.report": Command(ReportArgs, report_now)}

    def _wake(self) -> None:
        if self._wakeup is not None:
            self._wakeup.set()

    def _day(self, ts_ms: int) -> str:
        return self._local(ts_ms)[0]

    def _local(self, ts_ms: int) -> tuple[str, int, float]:
        """(local day, weekday, seconds since local midnight) of a record time; the day's bounds are cached, so
        the hot path does no time zone arithmetic (a day with a clock change is off by its shift after it)."""
        start, end, day, weekday = self._day_cache
        if not start <= ts_ms < end:
            when = dt.datetime.fromtimestamp(ts_ms / 1000, self.tz)
            midnight = when.replace(hour=0, minute=0, second=0, microsecond=0)
            start = int(midnight.timestamp() * 1000)
            end = int((midnight + dt.timedelta(days=1)).timestamp() * 1000)
            day, weekday = midnight.date().isoformat(), midnight.weekday()
            self._day_cache = (start, end, day, weekday)
        return day, weekday, (ts_ms - start) / 1000

    def _read_inventory(self) -> None:
        path = self.config.inventory_csv
        if path is None:
            return
        try:
            mtime = path.stat().st_mtime
        except OSError as exc:
            if self.inventory.error != str(exc):
                log.error("assets: inventory %s cannot be read: %s (the registry keeps the last one read)", path,
                          exc.strerror or exc)
            self.inventory.error = f"{path}: {exc.strerror or exc}"
            return
        if mtime == self.inventory.mtime:
            return
        try:
            assets, problems = read_inventory(path)
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            self.inventory.error = f"{path}: {exc}"
            log.error("assets: inventory %s cannot be read: %s", path, exc)
            return
        for p in problems:
            log.warning("assets: %s:%d: %s (row skipped)", path, p.line, p.message)
        clash = sorted(set(assets) & self._device_ids)
        for asset_id in clash:
            problems.append(InventoryProblem(0, f"{asset_id}: is a device of this gateway; the row is skipped"))
            del assets[asset_id]
        for asset_id, asset in assets.items():
            old = self.inventory.assets.get(asset_id)
            if old is not None:  # sightings are the gateway's, not the file's
                asset.first_seen, asset.last_seen = old.first_seen, old.last_seen
            else:
                asset.first_seen, asset.last_seen = self._seen.get(asset_id, (None, None))
            if old is None or old.identity() != asset.identity():
                self._announce.add(asset_id)
        self.inventory = Inventory(mtime, assets, problems, "")
        self._link_tags()
        log.info("assets: inventory %s: %d item(s), %d problem(s)", path, len(assets), len(problems))
        self._wake()

    def _link_tags(self) -> None:
        """An inventory item tagged with the address of one of this gateway's BLE devices: that device is its
        tag (heard = the item is present), not an asset of its own."""
        self._tags = {}
        for item in self.inventory.assets.values():
            device = self._ble.get(item.ble_address or "")
            if device is not None:
                self._tags[device] = item.asset
                self.assets.pop(device, None)
                self._announce.discard(device)

    # ------------------------------------------------------------------ state

    def _load(self) -> None:
        try:
            doc = json.loads(self.state_file.read_text())
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            log.error("assets: state %s cannot be read (%s); starting an empty registry", self.state_file, exc)
            return
        try:
            for a in doc.get("assets", []):
                self.assets[a["asset"]] = Asset(**a)
            for u in doc.get("usage", []):
                self.usage[(u.pop("asset"), u.pop("day"))] = Usage(**u)
            for item, (first, last) in doc.get("sightings", {}).items():
                self._seen[item] = (first, last)
        except (TypeError, KeyError, AttributeError, ValueError) as exc:
            log.error("assets: state %s has a bad entry (%s); the rest is kept", self.state_file, exc)

    def save(self) -> None:
        cutoff = (dt.date.today() - dt.timedelta(days=KEEP_DAYS)).isoformat()
        for key in [k for k in self.usage if k[1] < cutoff]:
            del self.usage[key]
        doc = {"assets": [asdict(a) for a in self.assets.values()],
               "usage": [{"asset": a, "day": d, **asdict(u)} for (a, d), u in sorted(self.usage.items())],
               "sightings": {i.asset: [i.first_seen, i.last_seen] for i in self.inventory.assets.values()
                             if i.first_seen is not None}}
        tmp = self.state_file.with_name(self.state_file.name + ".tmp")
        try:
            self.state_file.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps(doc))
            os.replace(tmp, self.state_file)
            self._dirty = False
        except OSError as exc:
            log.error("assets: state %s cannot be written: %s", self.state_file, exc)

    def state_files(self) -> list[Path]:
        return [self.state_file]

    # ------------------------------------------------------------------ status (the equipment panel)

    def status(self) -> Mapping[str, Any]:
        today = self._day(int(time.time() * 1000))
        now_ms = int(time.time() * 1000)
        missing_ms = self.config.missing_after_days * 86_400_000
        rows = []
        for asset in [*self.assets.values(), *self.inventory.assets.values()]:
            week = [u for (a, d), u in self.usage.items() if a == asset.asset and d > _days_before(today, 7)]
            usage = self.usage.get((asset.asset, today))
            power = self.power.get(asset.asset)
            observable = asset.source == "device" or asset.ble_address is not None  # as central judges it
            rows.append({**asdict(asset),
                         "on": bool(power and power.on),
                         "left_on": bool(self.rule and self.rule.left_on(asset.asset)),
                         "missing": observable and (asset.last_seen is None
                                                    or now_ms - asset.last_seen > missing_ms),
                         "today_on_h": round(usage.on_s / 3600, 2) if usage else 0.0,
                         "week_on_h": round(sum(u.on_s for u in week) / 3600, 2),
                         "today_lamp_h": usage.record(asset.asset, today)["lamp_h"] if usage else None})
        in_use = sum(1 for r in rows if r["week_on_h"] > 0 or (r["source"] == "device" and not r["missing"]))
        energy = self.config.energy
        return {"assets": rows, "devices": len(self.assets), "inventory": len(self.inventory.assets),
                "in_use": in_use, "inventory_file": str(self.config.inventory_csv or ""),
                "inventory_problems": [str(p) for p in self.inventory.problems],
                "inventory_error": self.inventory.error,
                "energy": None if energy is None else {
                    "days": energy.days, "start": f"{energy.start:%H:%M}", "end": f"{energy.end:%H:%M}",
                    "grace_min": energy.grace_min, "empty_min": energy.empty_min,
                    "switch_off": energy.switch_off},
                **self.counts}


def _days_before(day: str, n: int) -> str:
    return (dt.date.fromisoformat(day) - dt.timedelta(days=n)).isoformat()
