"""The librarian's view on the gateway: visitors per hour, alarms, loans and gate health.

:class:`LibraryService` watches the records of the library devices as they
pass the pipeline (it never changes them) and keeps, for the local status
page, what a librarian asks: how many came in today and in each of the last
24 hours, the recent gate alarms (time, gate, reason, offline or not; no item,
no person), loans, returns and refusals today, and whether each gate and its
link to the library system work. Counts start again at local midnight and at
a gateway restart (the durable numbers are central's: ``edugate library-report``).
"""

from __future__ import annotations

import datetime as dt
from collections import Counter, deque
from typing import Any, TypedDict
from zoneinfo import ZoneInfo

from edugate.gateway.services.base import Select, Service, ServiceSetup

GATE_DRIVER = "library-gate"
SELFCHECK_DRIVER = "library-selfcheck"
RECENT_ALARMS = 20
HOURS = 24


class LibraryStatus(TypedDict):
    """What ``gateway/web/library_panel.py`` draws (each part is read defensively there)."""

    date: str
    visitors: dict[str, Any]  # today_in, today_out, per_hour [{hour, in, out}]
    alarms: dict[str, Any]  # today, offline_today, recent [...]
    loans: dict[str, Any]  # today, returns_today, refused_today, refused_reasons
    gates: dict[str, dict[str, Any]]  # device id -> room, last_report_ts, reader_online, ils_online, stale
    stations: list[str]


class LibraryService(Service):
    name = "library"
    order = 40

    @classmethod
    def from_config(cls, setup: ServiceSetup) -> LibraryService | None:
        """On a gateway with a library gate or self-check station (no config section: the devices say it)."""
        return library_service(list(setup.devices), setup.timezone)

    def __init__(self, gates: dict[str, str | None], stations: dict[str, str | None], tz: str,
                 count_intervals: dict[str, float] | None = None) -> None:
        self.gates = gates  # device id -> room
        self.stations = stations
        self.tz = ZoneInfo(tz)
        self.count_intervals = count_intervals or {}
        self.hours: dict[str, list[int]] = {}  # "YYYY-MM-DDTHH:00" local -> [in, out]
        self.recent_alarms: deque[dict[str, Any]] = deque(maxlen=RECENT_ALARMS)
        self.gate_health: dict[str, dict[str, Any]] = {g: {"room": room, "last_report_ts": None,
                                                            "reader_online": None, "ils_online": None}
                                                        for g, room in gates.items()}
        self.observes = (Select(devices=frozenset(gates) | frozenset(stations)),)
        self.day = ""
        self.today: Counter[str] = Counter()
        self.refused: Counter[str] = Counter()

    def _local(self, ts_ms: int) -> dt.datetime:
        return dt.datetime.fromtimestamp(ts_ms / 1000, self.tz)

    def _roll(self, when: dt.datetime) -> None:
        day = when.date().isoformat()
        if day > self.day:
            self.day = day
            self.today.clear()
            self.refused.clear()

    def stage(self, record: dict[str, Any]) -> dict[str, Any] | None:
        device = record.get("device")
        if device not in self.gates and device not in self.stations:
            return record
        when = self._local(record["ts"])
        self._roll(when)
        values = record.get("values")
        if values is not None and device in self.gates:
            self._gate_reading(device, record["ts"], when, values)
        elif record.get("kind") == "event":
            self._event(device, record, when)
        return record

    def _gate_reading(self, device: str, ts: int, when: dt.datetime, values: dict[str, Any]) -> None:
        # the reading is stamped at the end of its interval: count it in the hour it covers
        hour = (when - dt.timedelta(milliseconds=1)).strftime("%Y-%m-%dT%H:00")
        slot = self.hours.setdefault(hour, [0, 0])
        slot[0] += int(values.get("visitors_in", 0))
        slot[1] += int(values.get("visitors_out", 0))
        for old in sorted(self.hours)[:-HOURS]:
            del self.hours[old]
        if when.date().isoformat() == self.day:
            self.today["visitors_in"] += int(values.get("visitors_in", 0))
            self.today["visitors_out"] += int(values.get("visitors_out", 0))
        health = self.gate_health[device]
        health.update(last_report_ts=ts, reader_online=bool(values.get("reader_online", 0)),
                      ils_online=bool(values.get("ils_online", 0)))

    def _event(self, device: str, record: dict[str, Any], when: dt.datetime) -> None:
        kind, data = record.get("type"), record.get("data") or {}
        if kind == "gate_alarm":
            self.today["alarms"] += 1
            if data.get("offline"):
                self.today["alarms_offline"] += 1
            self.recent_alarms.appendleft({"ts": record["ts"], "time": when.strftime("%H:%M:%S"), "device": device,
                                           "room": record.get("room"), "reason": data.get("reason"),
                                           "offline": bool(data.get("offline")),
                                           "circulation": data.get("circulation")})
        elif kind == "library_loan":
            self.today["loans"] += 1
        elif kind == "library_return":
            self.today["returns"] += 1
        elif kind == "library_refused":
            self.today["refused"] += 1
            self.refused[str(data.get("reason"))] += 1

    def status(self) -> LibraryStatus:
        now = dt.datetime.now(self.tz)
        self._roll(now)
        now_ms = now.timestamp() * 1000
        gates = {}
        for device, health in self.gate_health.items():
            last = health["last_report_ts"]
            stale_after = 2.5 * self.count_intervals.get(device, 60.0) * 1000
            gates[device] = {**health, "stale": last is None or now_ms - last > stale_after}
        return {
            "date": self.day,
            "visitors": {"today_in": self.today["visitors_in"], "today_out": self.today["visitors_out"],
                         "per_hour": [{"hour": h, "in": v[0], "out": v[1]} for h, v in sorted(self.hours.items())]},
            "alarms": {"today": self.today["alarms"], "offline_today": self.today["alarms_offline"],
                       "recent": list(self.recent_alarms)},
            "loans": {"today": self.today["loans"], "returns_today": self.today["returns"],
                      "refused_today": self.today["refused"], "refused_reasons": dict(self.refused)},
            "gates": gates,
            "stations": sorted(self.stations),
        }


def library_service(devices: list[Any], tz: str) -> LibraryService | None:
    """The service for a config's enabled devices, or None if it has no library device."""
    gates = {d.id: d.room for d in devices if d.driver == GATE_DRIVER}
    stations = {d.id: d.room for d in devices if d.driver == SELFCHECK_DRIVER}
    if not gates and not stations:
        return None
    intervals = {d.id: float(d.count_interval_s) for d in devices if d.driver == GATE_DRIVER}
    return LibraryService(gates, stations, tz, intervals)
