"""The asset registry: what equipment a school has, what it is, where, and how much it is used.

Every device this gateway talks to becomes an **asset** keyed by its device id, with what its protocol
reveals (make, model, serial number, firmware: a PJLink ``device_info`` event, a lab kit's ``kit_hello``,
or any driver's ``device_info``), its room and driver, and when it was first and last seen. Equipment
without electronics (microscopes, robot kits, VR headsets) enters from the school's inventory CSV
(``inventory_csv``, re-read when it changes; a bad row is reported with its line and skipped).

**Usage evidence** per asset and local day: power-on hours (from ``power_on`` telemetry: the time between
two readings that both say on, at most ``max_gap_s``), lamp hours consumed (last minus first
``lamp_hours`` of the day), readings and events seen, last seen. It is kept in ``state_file`` across
restarts and forwarded as records: an ``asset`` event when an asset appears or what it is changes, and an
``asset_usage`` event per asset and day that changed, every ``report_every_s`` (central keeps the latest
per asset and day, so a repeat never double-counts).

**The energy rule** (``energy:``): a board or projector that is on outside school hours (days and
``start``-``end`` in the school's time zone) for ``grace_min`` minutes raises ``energy_left_on``; switched
off, ``energy_switched_off`` with how long it was left on. Times are those of the records, so the rule
gives the same answer when records are replayed.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import datetime as dt
import json
import logging
import os
import re
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, field_validator

from edugate.contract.ids import ID_PATTERN
from edugate.contract.records import Emit, Event
from edugate.gateway.services.base import Command, Record, Section, Service, ServiceSetup

log = logging.getLogger(__name__)

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
OWN_EVENTS = frozenset({"asset", "asset_usage", "energy_left_on", "energy_switched_off"})
IDENTITY_KEYS = ("make", "model", "serial", "firmware")
INVENTORY_COLUMNS = ("asset_id", "name", "category", "make", "model", "serial", "room", "tag", "acquired")
GATEWAY = "_gateway"
KEEP_DAYS = 62  # two months of usage per asset on the gateway (central keeps the rest)


class EnergyConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    days: list[str] = Field(["mon", "tue", "wed", "thu", "fri", "sat"], description="School days.")
    start: dt.time = Field(dt.time(6, 30), description="School hours begin (local time).")
    end: dt.time = Field(dt.time(17, 30), description="School hours end (local time).")
    grace_min: float = Field(15, ge=0, le=24 * 60, description="On this long outside school hours raises the event.")

    @field_validator("days")
    @classmethod
    def _known_days(cls, days: list[str]) -> list[str]:
        bad = [d for d in days if d not in WEEKDAYS]
        if bad:
            raise ValueError(f"unknown day(s) {bad}: use {', '.join(WEEKDAYS)}")
        return days

    def school_hours(self, weekday: int, seconds: float) -> bool:
        """Is this local time (weekday 0 = Monday, seconds since midnight) within school hours?"""
        start = self.start.hour * 3600 + self.start.minute * 60 + self.start.second
        end = self.end.hour * 3600 + self.end.minute * 60 + self.end.second
        return WEEKDAYS[weekday] in self.days and start <= seconds < end


class AssetsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    inventory_csv: Path | None = Field(None, description="The school's inventory of equipment without electronics "
                                       "(CSV with the columns asset_id,name,category,make,model,serial,room,tag,"
                                       "acquired; asset_id and name required). Re-read when it changes.")
    state_file: Path | None = Field(None, description="The registry and usage, kept across restarts (default: "
                                    "assets.json next to the outbox).")
    report_every_s: float = Field(3600, ge=1, le=86400, description="How often the day's usage is sent as "
                                  "asset_usage records (only what changed).")
    max_gap_s: float = Field(600, ge=1, le=86400, description="Two 'on' readings further apart than this do not "
                             "count the time between them as power-on time (the gateway was off, the device "
                             "unreachable).")
    missing_after_days: int = Field(14, ge=1, le=365, description="A device not seen for this many days is shown "
                                    "as missing.")
    energy: EnergyConfig | None = Field(None, description="The energy rule: a board or projector on outside "
                                        "school hours raises energy_left_on. Leave out: no rule.")


@dataclass
class Asset:
    asset: str
    source: str  # "device" (a device of this gateway) or "inventory" (the school's CSV)
    name: str = ""
    category: str = ""
    driver: str = ""
    room: str = ""
    make: str = ""
    model: str = ""
    serial: str = ""
    firmware: str = ""
    tag: str = ""
    first_seen: int | None = None  # ms
    last_seen: int | None = None  # ms

    def identity(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k not in ("first_seen", "last_seen")}


@dataclass
class Usage:
    on_s: float = 0.0
    lamp_first: int | None = None
    lamp_last: int | None = None
    readings: int = 0
    events: int = 0
    last_seen: int = 0

    def record(self, asset: str, day: str) -> dict[str, Any]:
        lamp = (self.lamp_last - self.lamp_first) if self.lamp_first is not None and self.lamp_last is not None \
            else None
        return {"asset": asset, "day": day, "power_on_h": round(self.on_s / 3600, 3),
                "lamp_h": lamp, "readings": self.readings, "events": self.events, "last_seen": self.last_seen}


@dataclass
class _Power:
    on: bool = False
    at: int = 0  # ms of the last power reading
    off_hours_since: int | None = None  # ms: on outside school hours since
    raised: bool = False


@dataclass
class InventoryProblem:
    line: int
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"


@dataclass
class _Inventory:
    mtime: float | None = None
    assets: dict[str, Asset] = field(default_factory=dict)
    problems: list[InventoryProblem] = field(default_factory=list)
    error: str = ""


def read_inventory(path: Path) -> tuple[dict[str, Asset], list[InventoryProblem]]:
    """The school's CSV -> assets by id, and the rows that could not be used (with their line)."""
    assets: dict[str, Asset] = {}
    problems: list[InventoryProblem] = []
    with path.open(encoding="utf-8-sig", newline="") as f:
        reader = csv.DictReader(f)
        header = [h.strip() for h in reader.fieldnames or []]
        missing = [c for c in ("asset_id", "name") if c not in header]
        unknown = [c for c in header if c not in INVENTORY_COLUMNS]
        if missing or unknown:
            what = [f"missing column(s) {', '.join(missing)}"] if missing else []
            what += [f"unknown column(s) {', '.join(unknown)}"] if unknown else []
            return {}, [InventoryProblem(1, "; ".join(what) + f" (columns: {','.join(INVENTORY_COLUMNS)})")]
        for row in reader:
            line = reader.line_num
            values = {(k or "").strip(): (v or "").strip() for k, v in row.items() if isinstance(v, str)}
            if None in row:
                problems.append(InventoryProblem(line, f"{len(row[None])} value(s) more than the header has columns"))
                continue
            asset_id, name = values.get("asset_id", ""), values.get("name", "")
            if not re.match(ID_PATTERN, asset_id):
                problems.append(InventoryProblem(line, f"asset_id {asset_id[:40]!r} must be lower-case letters, "
                                                 "digits, _ and - (e.g. micro-07)"))
                continue
            if not name:
                problems.append(InventoryProblem(line, f"{asset_id}: name is empty"))
                continue
            if asset_id in assets:
                problems.append(InventoryProblem(line, f"{asset_id}: listed twice (the first row is kept)"))
                continue
            assets[asset_id] = Asset(asset_id, "inventory", name=name, category=values.get("category", ""),
                                     make=values.get("make", ""), model=values.get("model", ""),
                                     serial=values.get("serial", ""), room=values.get("room", ""),
                                     tag=values.get("tag", ""))
    return assets, problems


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
        self.inventory = _Inventory()
        self.counts = {"asset_records": 0, "usage_records": 0, "energy_events": 0}
        self._queue: deque[Event] = deque()
        self._announce: set[str] = set()  # assets whose identity changed: an ``asset`` record is due
        self._usage_dirty: set[tuple[str, str]] = set()
        self._dirty = False
        self._wakeup: asyncio.Event | None = None
        self._emit: Emit | None = None
        self._day_cache: tuple[int, int, str, int] = (0, 0, "", 0)
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

    # ------------------------------------------------------------------ the pipeline stage

    def stage(self, record: Record) -> Record:
        device = record.get("device")
        if not isinstance(device, str) or device == GATEWAY or record.get("type") in OWN_EVENTS:
            return record
        asset = self.assets.get(device)
        if asset is None:
            return record
        ts = record.get("ts")
        if not isinstance(ts, int):
            return record
        if asset.first_seen is None:
            asset.first_seen = ts
        asset.last_seen = max(asset.last_seen or 0, ts)
        if isinstance(record.get("room"), str) and record["room"] != asset.room:
            asset.room = record["room"]
            self._announce.add(device)
        day = self._day(ts)
        usage = self.usage.get((device, day))
        if usage is None:
            usage = self.usage[(device, day)] = Usage()
        usage.last_seen = max(usage.last_seen, ts)
        if record.get("kind") == "event":
            usage.events += 1
            self._identity(asset, record.get("type"), record.get("data"))
        else:
            usage.readings += 1
            values = record.get("values")
            if isinstance(values, Mapping):
                self._usage(asset, usage, ts, values)
        self._usage_dirty.add((device, day))
        self._dirty = True
        if self._announce:
            self._wake()  # an asset record is due (usage and the state file wait for their timers)
        return record

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
        power = self.power.get(asset.asset)
        if power is None:
            power = self.power[asset.asset] = _Power()
        gap_s = (ts - power.at) / 1000 if power.at else None
        if on and power.on and gap_s is not None and 0 < gap_s <= self.config.max_gap_s:
            usage.on_s += gap_s
        power.on, power.at = on, ts
        self._energy(asset, power, ts, on)

    def _energy(self, asset: Asset, power: _Power, ts: int, on: bool) -> None:
        rule = self.config.energy
        if rule is None:
            return
        _, weekday, seconds = self._local(ts)
        if on and not rule.school_hours(weekday, seconds):
            if power.off_hours_since is None:
                power.off_hours_since = ts
            minutes = (ts - power.off_hours_since) / 60000
            if not power.raised and minutes >= rule.grace_min:
                power.raised = True
                self._event(asset, "energy_left_on", {
                    "asset": asset.asset, "since": power.off_hours_since, "minutes": round(minutes, 1),
                    "reason": "outside school hours", "school_hours": f"{rule.start:%H:%M}-{rule.end:%H:%M} "
                    f"{','.join(rule.days)}"})
            return
        if power.raised and not on:
            minutes = (ts - (power.off_hours_since or ts)) / 60000
            self._event(asset, "energy_switched_off", {"asset": asset.asset, "minutes_on": round(minutes, 1)})
        power.off_hours_since, power.raised = None, False

    def _event(self, asset: Asset, kind: str, data: dict[str, Any]) -> None:
        device = asset.asset if asset.asset in self._device_ids else GATEWAY
        self._queue.append(Event(device, kind, data))
        self.counts["energy_events"] += 1
        log.info("assets: %s %s", kind, data)
        self._wake()

    # ------------------------------------------------------------------ background: records, state, inventory

    async def run(self, emit: Emit) -> None:
        self._emit = emit
        self._wakeup = asyncio.Event()
        next_report = time.monotonic() + self.config.report_every_s
        next_save = next_inventory = time.monotonic()
        try:
            while True:
                now = time.monotonic()
                if now >= next_inventory:
                    self._read_inventory()
                    next_inventory = now + 10
                await self._send_announcements(emit)
                while self._queue:
                    await emit(self._queue[0])
                    self._queue.popleft()
                if now >= next_report:
                    await self.report(emit)
                    next_report = now + self.config.report_every_s
                if self._dirty and now >= next_save:
                    self.save()
                    next_save = now + 5
                self._wakeup.clear()
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
            await emit(Event(device, "asset", data))
            self._announce.discard(asset_id)
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
            if old is None or old.identity() != asset.identity():
                self._announce.add(asset_id)
        self.inventory = _Inventory(mtime, assets, problems, "")
        log.info("assets: inventory %s: %d item(s), %d problem(s)", path, len(assets), len(problems))
        self._wake()

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
        except (TypeError, KeyError, AttributeError) as exc:
            log.error("assets: state %s has a bad entry (%s); the rest is kept", self.state_file, exc)

    def save(self) -> None:
        cutoff = (dt.date.today() - dt.timedelta(days=KEEP_DAYS)).isoformat()
        for key in [k for k in self.usage if k[1] < cutoff]:
            del self.usage[key]
        doc = {"assets": [asdict(a) for a in self.assets.values()],
               "usage": [{"asset": a, "day": d, **asdict(u)} for (a, d), u in sorted(self.usage.items())]}
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
            rows.append({**asdict(asset),
                         "on": bool(power and power.on),
                         "left_on": bool(power and power.raised),
                         "missing": asset.source == "device" and (asset.last_seen is None
                                                                   or now_ms - asset.last_seen > missing_ms),
                         "today_on_h": round(usage.on_s / 3600, 2) if usage else 0.0,
                         "week_on_h": round(sum(u.on_s for u in week) / 3600, 2),
                         "today_lamp_h": usage.record(asset.asset, today)["lamp_h"] if usage else None})
        in_use = sum(1 for r in rows if r["week_on_h"] > 0 or (r["source"] == "device" and not r["missing"]))
        return {"assets": rows, "devices": len(self.assets), "inventory": len(self.inventory.assets),
                "in_use": in_use, "inventory_file": str(self.config.inventory_csv or ""),
                "inventory_problems": [str(p) for p in self.inventory.problems],
                "inventory_error": self.inventory.error,
                "energy": None if self.config.energy is None else {
                    "days": self.config.energy.days, "start": f"{self.config.energy.start:%H:%M}",
                    "end": f"{self.config.energy.end:%H:%M}", "grace_min": self.config.energy.grace_min},
                **self.counts}


def _days_before(day: str, n: int) -> str:
    return (dt.date.fromisoformat(day) - dt.timedelta(days=n)).isoformat()
