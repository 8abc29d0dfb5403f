"""Indicators per school from the stores, summed up to districts and the city (true values, before anonymising).

Store figures: one PromQL query per component (``catalogue.STORE_QUERIES``), ``sum_over_time`` over the period's
window evaluated at its end (or now, for a period in progress), summed per school. Event store figures: the
``alert`` events of the period, paired raised -> cleared per (school, gateway, device, rule).
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
import statistics
import urllib.error
import urllib.parse
import urllib.request
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edugate.central.eventstore import EventStore
from edugate.central.indicators.catalogue import CATALOGUE, EVENT_COMPONENTS, ROOM_QUERIES, STORE_QUERIES, Indicator
from edugate.central.indicators.periods import Period

UNASSIGNED = "unassigned"
"""The district of a school central.yaml's ``api.districts`` does not list."""


class StoreUnavailable(OSError):
    """The time-series store or the event store did not answer or refused a query; the message says which."""


@dataclass
class Figures:
    """The components of one area (a school, or the sum of several) for one period."""

    components: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    clear_minutes: list[float] = field(default_factory=list)
    has_data: bool = False
    has_events: bool = False

    def add(self, other: Figures) -> None:
        for name, value in other.components.items():
            self.components[name] += value
        self.clear_minutes.extend(other.clear_minutes)
        self.has_data |= other.has_data
        self.has_events |= other.has_events

    def value(self, indicator: Indicator) -> float | None:
        """The true value (None: no data), before anonymising."""
        if indicator.kind == "median_minutes":
            return round(statistics.median(self.clear_minutes), 1) if self.clear_minutes else None
        if indicator.numerator in EVENT_COMPONENTS:
            return round(self.components[indicator.numerator], 3) if self.has_events else None
        if not self.has_data:
            return None
        numerator = self.components[indicator.numerator]
        if indicator.denominator is None:
            return round(numerator, 3)
        denominator = self.components[indicator.denominator]
        if denominator <= 0:
            return None
        return round(min(100.0, 100.0 * numerator / denominator), 1)


def prom_query(store_url: str, promql: str, at: float, timeout_s: float = 30.0) -> list[dict[str, Any]]:
    url = f"{store_url.rstrip('/')}/api/v1/query?" + urllib.parse.urlencode(
        {"query": promql, "time": f"{at:.3f}", "nocache": "1"})
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:
            body = json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        raise StoreUnavailable(f"store {store_url} refused a query ({exc.code}): "
                               f"{exc.read().decode(errors='replace')[:200]}") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise StoreUnavailable(f"store {store_url} not answering: {getattr(exc, 'reason', exc)}") from None
    if body.get("status") != "success":
        raise StoreUnavailable(f"store {store_url}: query failed: {body.get('error', body)}")
    return list(body["data"]["result"])


def school_figures(store_url: str, events_db: Path | None, period: Period, now: dt.datetime,
                   health_interval_s: float, events_dsn: str | None = None,
                   expected_students: Mapping[str, Mapping[str, int]] | None = None) -> dict[str, Figures]:
    """Every school's components for ``period`` (schools with any series or event in it). The event store: the
    PostgreSQL database ``events_dsn`` (central.yaml ``events.postgres_dsn``) if given, else the SQLite file.
    ``expected_students`` (school -> room -> students; central.yaml ``api.expected_students``): presence rates."""
    at = period.evaluated_at(now)
    window = max(1, int((at - period.start).total_seconds()))
    schools: dict[str, Figures] = defaultdict(Figures)
    for component, template in STORE_QUERIES.items():
        for series in prom_query(store_url, template.format(w=window), at.timestamp()):
            school = series["metric"].get("school")
            if school:
                schools[school].components[component] += float(series["value"][1])
    if expected_students:
        present, periods = (prom_query(store_url, ROOM_QUERIES[name].format(w=window), at.timestamp())
                            for name in ("room_present", "room_periods"))
        for component, results in (("present_known", present), ("expected_present", periods)):
            for series in results:
                school, room = series["metric"].get("school"), series["metric"].get("room")
                students = expected_students.get(school or "", {}).get(room or "")
                if school and students:
                    value = float(series["value"][1])
                    schools[school].components[component] += value if component == "present_known" else \
                        value * students
    for figures in schools.values():
        c = figures.components
        figures.has_data = c["gateways"] > 0
        c["expected_health_records"] = c["gateways"] * window / health_interval_s
        c["devices_total"] = c["devices_online"] + c["devices_offline"]
    if events_db is not None or events_dsn:
        for school, from_events in event_figures(events_db, period, at, events_dsn).items():
            schools[school].add(from_events)
        for figures in schools.values():
            figures.has_events = True
    return dict(schools)


def event_figures(events_db: Path | None, period: Period, at: dt.datetime,
                  events_dsn: str | None = None) -> dict[str, Figures]:
    """Per school, from the event store: alerts (raised in [start, at), cleared, minutes to clear), equipment on
    record (``asset`` events before ``at``), equipment in use and power-on hours (the last ``asset_usage`` of
    each asset and day of the period: a day's usage is re-sent as it grows), lab sessions started."""
    start_ms, end_ms = int(period.start.timestamp() * 1000), int(at.timestamp() * 1000)
    first_day, last_day = period.start.date().isoformat(), at.astimezone(period.start.tzinfo).date().isoformat()
    alerts, assets, usage, sessions = _event_rows(events_db, events_dsn, start_ms)
    out: dict[str, Figures] = defaultdict(Figures)
    open_since: dict[tuple[str, str, str, str], int] = {}
    for ev in sorted(alerts, key=lambda e: (e["ts"], e["seq"])):
        data, figures = ev["data"], out[ev["school"]]
        key = (ev["school"], ev["gateway"], ev["device"], str(data.get("rule")))
        if data.get("state") == "raised" and ev["ts"] < end_ms:
            open_since.setdefault(key, ev["ts"])
            figures.components["alerts_raised"] += 1
        elif data.get("state") == "cleared" and key in open_since:
            figures.clear_minutes.append((ev["ts"] - open_since.pop(key)) / 60_000)
            figures.components["alerts_cleared"] += 1
    on_record = {(e["school"], e["gateway"], str(e["data"].get("asset", e["device"]))) for e in assets
                 if e["ts"] < end_ms}
    last_usage: dict[tuple[str, str, str, str], tuple[int, int, float]] = {}
    for ev in usage:
        data = ev["data"]
        day, hours = data.get("day"), data.get("power_on_h")
        if isinstance(day, str) and first_day <= day <= last_day and isinstance(hours, int | float):
            key = (ev["school"], ev["gateway"], str(data.get("asset", ev["device"])), day)
            if key not in last_usage or (ev["ts"], ev["seq"]) > last_usage[key][:2]:
                last_usage[key] = (ev["ts"], ev["seq"], float(hours))
    in_use: set[tuple[str, str, str]] = set()
    for (school, gateway, asset, _day), (_ts, _seq, hours) in last_usage.items():
        out[school].components["power_on_hours"] += hours
        if hours > 0:
            in_use.add((school, gateway, asset))
    for school, _gateway, _asset in on_record:
        out[school].components["assets_on_record"] += 1
    for school, _gateway, _asset in in_use:
        out[school].components["assets_in_use"] += 1
    started = {(e["school"], e["gateway"], str(e["data"].get("session"))) for e in sessions
               if e["data"].get("action") == "started" and e["ts"] < end_ms}
    for school, _gateway, _session in started:
        out[school].components["lab_sessions"] += 1
    return dict(out)


def _event_rows(events_db: Path | None, events_dsn: str | None, start_ms: int) -> list[list[dict[str, Any]]]:
    """The alert, asset, asset_usage and session events the indicators need, from PostgreSQL or SQLite."""
    store: Any
    if events_dsn:
        from edugate.central.eventstore_pg import PgEventStore  # psycopg: only when used
    else:
        assert events_db is not None
        if not events_db.exists():
            raise StoreUnavailable(f"event store {events_db}: no such file (is events.db right, has ingest run?)")
    try:  # opening can fail too: a database that is down (EventStoreUnavailable, an sqlite3.Error), a file that
        # is not an event log
        store = (PgEventStore(events_dsn) if events_dsn
                 else EventStore(events_db))  # type: ignore[arg-type]  # events_db: asserted above
        try:
            return [store.query(type_=type_, since_ms=None if type_ == "asset" else start_ms, limit=10_000_000)
                    for type_ in ("alert", "asset", "asset_usage", "session")]
        finally:
            store.close()
    except sqlite3.Error as exc:
        raise StoreUnavailable(f"event store: {exc}") from None


def district_of(districts: Mapping[str, Iterable[str]]) -> dict[str, str]:
    return {school: district for district, schools in districts.items() for school in schools}


def areas(schools: Mapping[str, Figures], districts: Mapping[str, Iterable[str]]
          ) -> tuple[dict[str, Figures], dict[str, Figures], Figures]:
    """Schools (every configured one too, without data), districts (their schools summed) and the city."""
    where = district_of(districts)
    by_school = {school: schools.get(school, Figures()) for school in sorted(set(schools) | set(where))}
    by_district: dict[str, Figures] = {district: Figures() for district in districts}
    city = Figures()
    for school, figures in by_school.items():
        by_district.setdefault(where.get(school, UNASSIGNED), Figures()).add(figures)
        city.add(figures)
    return by_school, dict(sorted(by_district.items())), city


def indicator_names() -> list[str]:
    return [indicator.name for indicator in CATALOGUE]
