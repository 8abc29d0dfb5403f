"""What may leave central: every figure row of a period, each value anonymised.

The rule (``docs/metrics.md``, anonymisation):

* a *personal* count (children's taps, presences, visits, loans, gate alarms) below ``k`` and above 0 is
  suppressed (value null, status ``suppressed``); any other personal count is rounded to the nearest multiple
  of ``round_to`` (default ``k``), so a difference of two published figures is never the exact hidden count;
* a district's and the city's figure are computed from their schools' *true* components and then anonymised
  the same way; a district or a city of one small school is suppressed as that school is;
* a filter (district, school, indicator) only selects rows: the rows themselves never depend on it, so two
  overlapping queries return the same figure for the same area, never two sums to subtract;
* periods are whole calendar buckets (``periods.py``): no arbitrary ranges to difference;
* rows carry area ids (city, district, school) only: never a gateway, device, room, card or pseudonym;
* a rate of children's actions (presence) is computed from its numerator anonymised as above.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from edugate.central.indicators.catalogue import CATALOGUE, Indicator
from edugate.central.indicators.compute import Figures, areas, district_of
from edugate.central.indicators.periods import Period

Level = Literal["school", "district", "city"]
Status = Literal["ok", "suppressed", "no_data"]
CITY = "city"


@dataclass(frozen=True)
class Rule:
    k: int = 5
    round_to: int | None = None  # None: k

    @property
    def base(self) -> int:
        return self.round_to or self.k


def anonymise(indicator: Indicator, value: float | None, rule: Rule) -> tuple[float | None, Status]:
    """The published value and its status."""
    if value is None:
        return None, "no_data"
    if not indicator.personal or value == 0:
        return value, "ok"
    return _count(value, rule)


def _count(value: float, rule: Rule) -> tuple[float | None, Status]:
    if value == 0:
        return 0.0, "ok"
    if value < rule.k:
        return None, "suppressed"
    base = rule.base
    return float(max(base, int(value / base + 0.5) * base)), "ok"


def anonymise_count(value: float, rule: Rule) -> float | None:
    """A count of children's actions as it may be published: None (suppressed) below ``k``, else rounded."""
    return _count(float(value), rule)[0]


def anonymise_rate(indicator: Indicator, figures: Figures, rule: Rule) -> tuple[float | None, Status]:
    """A rate of children's actions (presence): its numerator is anonymised as a count first (suppressed below k,
    rounded), so the rate times its denominator (known: the expected students) never gives back a hidden count;
    a denominator below k is suppressed too."""
    if figures.value(indicator) is None or indicator.denominator is None:
        return None, "no_data"
    denominator = figures.components[indicator.denominator]
    if denominator < rule.k:
        return None, "suppressed"
    published, status = _count(figures.components[indicator.numerator], rule)
    if published is None:
        return None, status
    return round(min(100.0, 100.0 * published / denominator), 1), "ok"


def published(indicator: Indicator, figures: Figures, rule: Rule) -> tuple[float | None, Status]:
    """What ``rows`` publishes for one area and indicator."""
    if indicator.personal and indicator.kind == "percent":
        return anonymise_rate(indicator, figures, rule)
    return anonymise(indicator, figures.value(indicator), rule)


def rows(schools: Mapping[str, Figures], districts: Mapping[str, Iterable[str]], period: Period,
         now: dt.datetime, rule: Rule) -> list[dict[str, Any]]:
    """Every anonymised figure row of ``period``: city first, then districts, then schools, each by indicator."""
    by_school, by_district, city = areas(schools, districts)
    where = district_of(districts)
    common = {"period": period.name, "from": period.start.isoformat(), "to": period.end.isoformat(),
              "complete": period.complete(now)}
    out: list[dict[str, Any]] = []
    levels: list[tuple[Level, str, str | None, Figures]] = [("city", CITY, None, city)]
    levels += [("district", d, d, f) for d, f in by_district.items()]
    levels += [("school", s, where.get(s, "unassigned"), f) for s, f in by_school.items()]
    for level, area, district, figures in levels:
        for indicator in CATALOGUE:
            value, status = published(indicator, figures, rule)
            out.append({"indicator": indicator.name, "unit": indicator.unit, "level": level, "area": area,
                        "district": district, "value": value, "status": status, **common})
    return out
