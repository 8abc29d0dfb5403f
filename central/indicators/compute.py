"""Indicators per school from the stores, summed up to districts and the city (true values, before anonymising).

Store figures: one PromQL query per component (``catalogue.STORE_QUERIES``), ``sum_over_time`` over the period's
window evaluated at its end (or now, for a period in progress), summed per school. Event store figures: the
``alert`` events of the period, paired raised -> cleared per (school, gateway, device, rule).
"""

from __future__ import annotations

import datetime as dt
import json
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
from edugate.central.indicators.catalogue import CATALOGUE, STORE_QUERIES, Indicator
from edugate.central.indicators.periods import Period

UNASSIGNED = "unassigned"
"""The district of a school central.yaml's ``api.districts`` does not list."""


class StoreUnavailable(OSError):
    """The time-series store did not answer or refused a query; the message says which and where."""


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
        if indicator.numerator.startswith("alerts"):
            return self.components[indicator.numerator] if self.has_events else None
        if not self.has_data:
            return None
        numerator = self.components[indicator.numerator]
        if indicator.denominator is None:
            return numerator
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
                   health_interval_s: float) -> dict[str, Figures]:
    """Every school's components for ``period`` (schools with any series or event in it)."""
    at = period.evaluated_at(now)
    window = max(1, int((at - period.start).total_seconds()))
    schools: dict[str, Figures] = defaultdict(Figures)
    for component, template in STORE_QUERIES.items():
        for series in prom_query(store_url, template.format(w=window), at.timestamp()):
            school = series["metric"].get("school")
            if school:
                schools[school].components[component] += float(series["value"][1])
    for figures in schools.values():
        c = figures.components
        figures.has_data = c["gateways"] > 0
        c["expected_health_records"] = c["gateways"] * window / health_interval_s
        c["devices_total"] = c["devices_online"] + c["devices_offline"]
    if events_db is not None:
        for school, (raised, cleared, minutes) in alert_figures(events_db, period, at).items():
            figures = schools[school]
            figures.components["alerts_raised"] += raised
            figures.components["alerts_cleared"] += cleared
            figures.clear_minutes.extend(minutes)
        for figures in schools.values():
            figures.has_events = True
    return dict(schools)


def alert_figures(events_db: Path, period: Period, at: dt.datetime) -> dict[str, tuple[int, int, list[float]]]:
    """Per school: alerts raised in [start, at), how many of them cleared (by now), their minutes to clear."""
    start_ms, end_ms = int(period.start.timestamp() * 1000), int(at.timestamp() * 1000)
    store = EventStore(events_db)
    try:
        events = store.query(type_="alert", since_ms=start_ms, limit=10_000_000)
    finally:
        store.close()
    open_since: dict[tuple[str, str, str, str], int] = {}
    out: dict[str, tuple[int, int, list[float]]] = {}
    for ev in sorted(events, key=lambda e: (e["ts"], e["seq"])):
        data = ev["data"]
        key = (ev["school"], ev["gateway"], ev["device"], str(data.get("rule")))
        raised, cleared, minutes = out.get(ev["school"], (0, 0, []))
        if data.get("state") == "raised" and ev["ts"] < end_ms:
            open_since.setdefault(key, ev["ts"])
            out[ev["school"]] = (raised + 1, cleared, minutes)
        elif data.get("state") == "cleared" and key in open_since:
            minutes.append((ev["ts"] - open_since.pop(key)) / 60_000)
            out[ev["school"]] = (raised, cleared + 1, minutes)
    return out


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
