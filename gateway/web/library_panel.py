"""The library panel of the status page: the ``library`` service's status as tiles, bars and rows.

:meth:`edugate.gateway.services.library.LibraryService.status` keeps what a librarian asks (today's visitors, visitors
per local hour, the recent gate alarms, loans, returns and refusals, each gate's health);
:func:`library_view` turns it into what ``templates/_library.html`` draws: the numbers, a bar chart of
the last 24 hours as plain SVG geometry (server-rendered, readable without JavaScript and allowed by
the pages' Content-Security-Policy, which forbids inline styles), readable reasons, times in the
school's time zone, and a state per gate (``ok``, ``trouble``, ``stale``, ``waiting``).

Every key of the status may be missing or wrong (a gateway that just started, an older service): the
panel shows zeros and empty lists then, and says what it has not seen yet; it never fails the page.
Nothing here adds a person or an item: the alarms hold time, gate, reason and the offline flag only.
"""

from __future__ import annotations

import datetime as dt
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

from edugate.common.web.timefmt import ago, local_time

CHART_HOURS = 24
CHART_SLOT = 20.0  # chart units per hour; the SVG stretches to the card's width
CHART_WIDTH = CHART_HOURS * CHART_SLOT
CHART_HEIGHT = 120.0
BAR_WIDTH = 7.0
MIN_BAR = 1.5  # a hour with one visitor stays visible next to a busy one
MAX_TS_MS = 253_370_764_800_000  # 9999-01-01 UTC: a later timestamp cannot be shown in every zone
TICK_EVERY_H = 3  # a label every 3 hours, every 6 on a phone; none on the last two hours (no room)
MAJOR_TICK_EVERY_H = 6

ALARM_REASONS = {
    "not_charged": "not checked out",
    "unknown_item": "unknown to the library system; tag secured",
    "secured_tag": "tag secured (library system offline)",
    "unknown_afi": "unknown tag security value",
}
REFUSAL_REASONS = {
    "unknown_card": "card not registered with the library",
    "patron_blocked": "patron blocked",
    "checkout_refused": "checkout refused by the library system",
    "checkin_refused": "return refused by the library system",
    "ils_unavailable": "library system unavailable",
    "outcome_unknown": "outcome unknown (sent to the librarian)",
}
CIRCULATION = {  # SIP2 circulation status (field of the item information response)
    "01": "other", "02": "on order", "03": "available", "04": "charged", "05": "charged, not to be recalled",
    "06": "in process", "07": "recalled", "08": "on the hold shelf", "09": "waiting to be re-shelved",
    "10": "in transit", "11": "claimed returned", "12": "lost", "13": "missing",
}


@dataclass(frozen=True)
class HourBar:
    """One hour of the visitors chart; ``x``, ``*_y`` and ``*_h`` are SVG units (0 height: no bar)."""

    key: str  # "2026-11-24T09:00", local, as the service keys its hours
    hour: str  # "09:00"
    visitors_in: int
    visitors_out: int
    x: float
    in_y: float
    in_h: float
    out_y: float
    out_h: float
    tick: bool  # labelled on the time axis
    major: bool  # still labelled on a phone

    @property
    def in_x(self) -> float:
        return self.x + CHART_SLOT / 2 - BAR_WIDTH - 0.5

    @property
    def out_x(self) -> float:
        return self.x + CHART_SLOT / 2 + 0.5

    @property
    def label(self) -> str:
        return f"{self.hour}–{(int(self.hour[:2]) + 1) % 24:02d}:00"

    @property
    def title(self) -> str:
        return f"{self.label}: {self.visitors_in} in, {self.visitors_out} out"


@dataclass(frozen=True)
class VisitorChart:
    bars: list[HourBar]
    top: int  # the value at the top of the chart (a round number >= the busiest hour)
    width: float = CHART_WIDTH
    height: float = CHART_HEIGHT
    slot: float = CHART_SLOT
    bar_width: float = BAR_WIDTH

    @property
    def total_in(self) -> int:
        return sum(b.visitors_in for b in self.bars)

    @property
    def total_out(self) -> int:
        return sum(b.visitors_out for b in self.bars)

    @property
    def busy(self) -> list[HourBar]:
        """The hours with anyone counted (the chart's table)."""
        return [b for b in self.bars if b.visitors_in or b.visitors_out]

    @property
    def aria_label(self) -> str:
        what = f"Visitors per hour, last {len(self.bars)} hours: {self.total_in} in, {self.total_out} out"
        if not self.busy:
            return what + "; nobody counted yet."
        peak = max(self.bars, key=lambda b: (b.visitors_in, b.visitors_out))
        return f"{what}; busiest hour {peak.label} with {peak.visitors_in} in."


@dataclass(frozen=True)
class AlarmRow:
    time: str  # "14:02:11" today, "2026-11-23 14:02:11" before
    when: str  # the full local time
    ago: str
    gate: str
    room: str
    reason: str
    reason_text: str
    offline: bool


@dataclass(frozen=True)
class GateRow:
    id: str
    room: str
    last_report: str  # local time, "" if none yet
    last_report_ago: str  # "12 s ago", "never"
    reader_online: bool | None  # None: not known yet
    ils_online: bool | None
    stale: bool

    @property
    def state(self) -> str:
        """``waiting`` (no report yet), ``stale`` (reports stopped), ``trouble`` (reader or library system
        offline) or ``ok``."""
        if not self.last_report:
            return "waiting"
        if self.stale:
            return "stale"
        if self.reader_online is False or self.ils_online is False:
            return "trouble"
        return "ok"

    @property
    def state_text(self) -> str:
        state = self.state
        if state == "trouble":
            return ", ".join(what for what, up in (("reader offline", self.reader_online),
                                                   ("library system offline", self.ils_online)) if up is False)
        return {"waiting": "no report yet", "stale": f"stale: last report {self.last_report_ago}",
                "ok": "ok"}[state]

    @property
    def warning(self) -> bool:
        return self.state != "ok"


@dataclass(frozen=True)
class StationRow:
    id: str
    room: str
    state: str  # the device's state from the gateway's device table, "unknown" without it


@dataclass(frozen=True)
class Refusal:
    reason: str
    text: str
    count: int


@dataclass(frozen=True)
class LibraryPanel:
    date: str
    visitors_in: int
    visitors_out: int
    chart: VisitorChart
    alarms_today: int
    alarms_offline_today: int
    alarms: list[AlarmRow]
    loans_today: int
    returns_today: int
    refused_today: int
    refusals: list[Refusal]
    gates: list[GateRow]
    stations: list[StationRow]

    @property
    def gates_warning(self) -> int:
        return sum(g.warning for g in self.gates)


def library_view(info: Mapping[str, Any] | None, tz: str, now: float | None = None,
                 devices: Mapping[str, Any] | None = None) -> LibraryPanel:
    """The panel for ``LibraryService.status()``; ``now`` in Unix seconds, ``devices`` the gateway's
    device table (for the self-check stations' state)."""
    info = _dict(info)
    now = time.time() if now is None else now
    zone = ZoneInfo(tz)
    visitors, alarms, loans = _dict(info.get("visitors")), _dict(info.get("alarms")), _dict(info.get("loans"))
    today = dt.datetime.fromtimestamp(now, zone).date()

    alarm_rows = []
    for alarm in _list(alarms.get("recent")):
        alarm = _dict(alarm)
        ts = _seconds(alarm.get("ts"))
        when = local_time(ts, tz) if ts is not None else str(alarm.get("time") or "")
        shown = when[11:] if ts is not None and dt.datetime.fromtimestamp(ts, zone).date() == today else when
        reason = str(alarm.get("reason") or "")
        text = ALARM_REASONS.get(reason, reason.replace("_", " ") or "?")
        circulation = alarm.get("circulation")
        if circulation is not None and reason == "not_charged":
            text += f" ({CIRCULATION.get(str(circulation), 'status ' + str(circulation))})"
        alarm_rows.append(AlarmRow(time=shown, when=when, ago=ago(ts, now) if ts is not None else "",
                                   gate=str(alarm.get("device") or "?"), room=str(alarm.get("room") or ""),
                                   reason=reason, reason_text=text, offline=bool(alarm.get("offline"))))

    gates = []
    for gate_id, health in sorted(_dict(info.get("gates")).items()):
        health = _dict(health)
        last = _seconds(health.get("last_report_ts"))
        gates.append(GateRow(
            id=str(gate_id), room=str(health.get("room") or ""),
            last_report=local_time(last, tz) if last is not None else "",
            last_report_ago=ago(last, now) if last is not None else "never",
            reader_online=_flag(health.get("reader_online")), ils_online=_flag(health.get("ils_online")),
            stale=bool(health.get("stale", last is None))))

    known = _dict(devices)
    stations = [StationRow(id=str(s), room=str(_dict(known.get(s)).get("room") or ""),
                           state=str(_dict(known.get(s)).get("state") or "unknown"))
                for s in _list(info.get("stations"))]

    refusals = sorted((Refusal(str(r), REFUSAL_REASONS.get(str(r), str(r).replace("_", " ")), _int(n))
                       for r, n in _dict(loans.get("refused_reasons")).items()), key=lambda r: (-r.count, r.reason))

    return LibraryPanel(
        date=str(info.get("date") or today.isoformat()),
        visitors_in=_int(visitors.get("today_in")), visitors_out=_int(visitors.get("today_out")),
        chart=visitor_chart(_list(visitors.get("per_hour")), zone, now),
        alarms_today=_int(alarms.get("today")), alarms_offline_today=_int(alarms.get("offline_today")),
        alarms=alarm_rows,
        loans_today=_int(loans.get("today")), returns_today=_int(loans.get("returns_today")),
        refused_today=_int(loans.get("refused_today")), refusals=refusals,
        gates=gates, stations=stations)


def visitor_chart(per_hour: list[Any], zone: ZoneInfo, now: float) -> VisitorChart:
    """Bars for the 24 local hours up to the current one; hours the service has not seen count 0, and
    hours outside the window (older, or ahead of a clock that stepped back) are left out."""
    counts: dict[str, tuple[int, int]] = {}
    for entry in per_hour:
        entry = _dict(entry)
        if isinstance(entry.get("hour"), str):
            counts[entry["hour"]] = (_int(entry.get("in")), _int(entry.get("out")))
    start = dt.datetime.fromtimestamp(now, zone).replace(minute=0, second=0, microsecond=0).astimezone(dt.UTC)
    hours: list[dt.datetime] = []
    for back in range(CHART_HOURS - 1, -1, -1):  # step in UTC: local hours repeat or skip around DST changes
        local = (start - dt.timedelta(hours=back)).astimezone(zone)
        if not hours or local.strftime("%Y-%m-%dT%H") != hours[-1].strftime("%Y-%m-%dT%H"):
            hours.append(local)
    top = scale_top(max((max(counts.get(h.strftime("%Y-%m-%dT%H:00"), (0, 0))) for h in hours), default=0))
    bars = []
    for i, local in enumerate(hours):
        key = local.strftime("%Y-%m-%dT%H:00")
        n_in, n_out = counts.get(key, (0, 0))
        in_h, out_h = _bar(n_in, top), _bar(n_out, top)
        bars.append(HourBar(key=key, hour=local.strftime("%H:00"), visitors_in=n_in, visitors_out=n_out,
                            x=i * CHART_SLOT, in_y=CHART_HEIGHT - in_h, in_h=in_h, out_y=CHART_HEIGHT - out_h,
                            out_h=out_h, tick=local.hour % TICK_EVERY_H == 0 and i < len(hours) - 2,
                            major=local.hour % MAJOR_TICK_EVERY_H == 0 and i < len(hours) - 2))
    return VisitorChart(bars=bars, top=top)


def scale_top(peak: int) -> int:
    """A round, even number >= ``peak`` (at least 2), so the chart's middle line is a whole number too."""
    for magnitude in (10**k for k in range(10)):
        for m in (2, 4, 6, 8, 10, 12, 16, 20, 30, 40, 50, 60, 80):
            if m * magnitude >= peak:
                return m * magnitude
    return peak + peak % 2


def _bar(n: int, top: int) -> float:
    if n <= 0:
        return 0.0
    return round(max(MIN_BAR, CHART_HEIGHT * min(n, top) / top), 2)


def _dict(value: Any) -> dict[str, Any]:
    return dict(value) if isinstance(value, Mapping) else {}


def _list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list | tuple) else []


def _number(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def _seconds(ts_ms: Any) -> float | None:
    """A record's timestamp (Unix ms) in seconds; None if missing or not a date a clock can show."""
    number = _number(ts_ms)
    return number / 1000 if number is not None and 0 < number < MAX_TS_MS else None


def _int(value: Any) -> int:
    number = _number(value)
    return int(number) if number is not None else 0


def _flag(value: Any) -> bool | None:
    return None if value is None else bool(value)
