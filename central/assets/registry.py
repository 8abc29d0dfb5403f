"""The registry of every school's assets, built from the event store.

An asset is identified by (school, gateway, asset id). What it is comes from its newest ``asset`` event (the
gateway sends one when the asset appears or what it is changes); its use from the ``asset_usage`` events (one
per asset and local day, re-sent as the day goes on: the newest one of a day is the day's figure, so a repeat
never counts twice). Status at a moment ``now``:

* ``not tracked``: an inventory item without a BLE tag; nothing can see it, so it has no use evidence;
* ``never seen``: a device (or BLE-tagged item) with no sighting at all;
* ``missing``: last seen more than ``missing_after_days`` days ago;
* ``in use``: used on a day of the last ``in_use_days`` days (see :func:`used`);
* ``idle``: seen, but not used in those days.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Protocol
from zoneinfo import ZoneInfo

Status = Literal["in use", "idle", "missing", "never seen", "not tracked"]
STATUSES: tuple[Status, ...] = ("in use", "idle", "missing", "never seen", "not tracked")
IDENTITY = ("source", "driver", "name", "category", "room", "make", "model", "serial", "firmware", "tag")
DAY_MS = 86_400_000


class EventSource(Protocol):
    """What the registry needs of an event store (SQLite :class:`~edugate.central.eventstore.EventStore` or
    :class:`~edugate.central.eventstore_pg.PgEventStore`)."""

    def query(self, *, type_: str | None = None, school: str | None = None, gateway: str | None = None,
              since_ms: int | None = None, limit: int = 100) -> list[dict[str, Any]]: ...


@dataclass(frozen=True)
class RegistryWindow:
    """How the status is judged: the days that count as "recent use", and when a device counts as missing."""

    in_use_days: int = 7
    missing_after_days: int = 14
    timezone: str = "Asia/Ho_Chi_Minh"  # the schools' local days (those of the usage records)

    def __post_init__(self) -> None:
        if self.in_use_days < 1 or self.missing_after_days < 1:
            raise ValueError(f"in_use_days ({self.in_use_days}) and missing_after_days "
                             f"({self.missing_after_days}) must be at least 1")

    @property
    def horizon_days(self) -> int:
        return max(self.in_use_days, self.missing_after_days) + 1


@dataclass
class AssetRow:
    school: str
    gateway: str
    asset: str
    district: str = ""
    source: str = ""
    driver: str = ""
    name: str = ""
    category: str = ""
    room: str = ""
    make: str = ""
    model: str = ""
    serial: str = ""
    firmware: str = ""
    tag: str = ""
    first_seen: int | None = None  # ms
    last_seen: int | None = None  # ms
    status: Status = "never seen"
    days_used: int = 0  # in the in-use window
    power_on_h: float = 0.0  # in the in-use window
    lamp_h: float = 0.0  # in the in-use window

    @property
    def observable(self) -> bool:
        """Can the gateway see it (a device, or an item with a BLE tag)? Only these can show use. A barcode in
        ``tag`` does not count: scans are not matched to items (docs/assets.md, *Not yet*)."""
        return self.source != "inventory" or self.tag.upper().startswith("BLE:")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _Day:
    ts: int
    seq: int
    data: Mapping[str, Any] = field(default_factory=dict)


def used(day: Mapping[str, Any]) -> bool:
    """Does one day's usage record show use? Power-on time for what reports a power state (boards,
    projectors, panels); for everything else, any reading, event or tag sighting that day (a sensor that
    measured, a lab kit that ran, a tagged microscope that was seen)."""
    if _number(day.get("power_on_h")) > 0:
        return True
    if day.get("powered"):
        return False
    return _number(day.get("readings")) + _number(day.get("events")) + _number(day.get("seen")) > 0


def build_registry(asset_events: Iterable[Mapping[str, Any]], usage_events: Iterable[Mapping[str, Any]],
                   now_ms: int, window: RegistryWindow = RegistryWindow(),
                   districts: Mapping[str, str] | None = None) -> list[AssetRow]:
    """Event rows (as the event stores' ``query`` returns them) -> one row per asset, sorted by school,
    gateway, asset. Usage of an asset without an ``asset`` event still makes a row (its identity unknown)."""
    districts = districts or {}
    rows: dict[tuple[str, str, str], AssetRow] = {}
    newest: dict[tuple[str, str, str], tuple[int, int]] = {}
    for ev in asset_events:
        data = ev.get("data") or {}
        key = (ev["school"], ev["gateway"], str(data.get("asset") or ev["device"]))
        row = rows.get(key)
        if row is None:
            row = rows[key] = AssetRow(*key, district=districts.get(key[0], ""))
        first = data.get("first_seen")
        if type(first) is int:
            row.first_seen = first if row.first_seen is None else min(row.first_seen, first)
        if (ev["ts"], ev["seq"]) >= newest.get(key, (-1, -1)):
            newest[key] = (ev["ts"], ev["seq"])
            for name in IDENTITY:
                value = data.get(name)
                setattr(row, name, str(value) if value is not None else "")
    days: dict[tuple[str, str, str, str], _Day] = {}
    for ev in usage_events:
        data = ev.get("data") or {}
        day = data.get("day")
        if not isinstance(day, str):
            continue
        key4 = (ev["school"], ev["gateway"], str(data.get("asset") or ev["device"]), day)
        known = days.get(key4)
        if known is None or (ev["ts"], ev["seq"]) > (known.ts, known.seq):
            days[key4] = _Day(ev["ts"], ev["seq"], data)
    since_day = _day_before(now_ms, window.in_use_days, window.timezone)
    for (school, gateway, asset, day), usage in days.items():
        row = rows.get((school, gateway, asset))
        if row is None:
            row = rows[(school, gateway, asset)] = AssetRow(school, gateway, asset,
                                                            district=districts.get(school, ""))
        last = usage.data.get("last_seen")
        if type(last) is int and last > 0:
            row.last_seen = max(row.last_seen or 0, last)
        if day >= since_day and used(usage.data):
            row.days_used += 1
            row.power_on_h = round(row.power_on_h + _number(usage.data.get("power_on_h")), 3)
            row.lamp_h = round(row.lamp_h + _number(usage.data.get("lamp_h")), 3)
    for row in rows.values():
        if row.first_seen is not None:  # seen then, even before any usage record arrived
            row.last_seen = max(row.last_seen or 0, row.first_seen)
        row.status = status_of(row, now_ms, window)
    return [rows[k] for k in sorted(rows)]


def status_of(row: AssetRow, now_ms: int, window: RegistryWindow) -> Status:
    if not row.observable:
        return "not tracked"
    if row.last_seen is None:
        return "never seen"
    if now_ms - row.last_seen > window.missing_after_days * DAY_MS:
        return "missing"
    return "in use" if row.days_used else "idle"


def load_registry(store: EventSource, now_ms: int, window: RegistryWindow = RegistryWindow(), *,
                  schools: Iterable[str] | None = None, districts: Mapping[str, str] | None = None,
                  limit: int = 10_000_000) -> list[AssetRow]:
    """The registry of the given schools (None: every school) from an event store: every ``asset`` event, and
    the ``asset_usage`` events of the last :attr:`RegistryWindow.horizon_days` days (older use cannot change a
    status: such an asset is missing either way)."""
    since = now_ms - window.horizon_days * DAY_MS
    assets: list[dict[str, Any]] = []
    usage: list[dict[str, Any]] = []
    for school in (None,) if schools is None else sorted(set(schools)):
        assets += store.query(type_="asset", school=school, limit=limit)
        usage += store.query(type_="asset_usage", school=school, since_ms=since, limit=limit)
    return build_registry(assets, usage, now_ms, window, districts)


def _number(value: Any) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0


def _day_before(now_ms: int, days: int, timezone: str) -> str:
    """The first local day of the last ``days`` days, today included."""
    today = dt.datetime.fromtimestamp(now_ms / 1000, ZoneInfo(timezone)).date()
    return (today - dt.timedelta(days=days - 1)).isoformat()
