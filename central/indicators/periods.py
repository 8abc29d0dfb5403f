"""The periods indicators are computed for: fixed calendar buckets only (a day, an ISO week, a month, a half year).

Only whole calendar periods can be asked for, never an arbitrary range, so two overlapping queries cannot be
differenced down to a few hours (see ``docs/metrics.md``, anonymisation).
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Literal
from zoneinfo import ZoneInfo

Granularity = Literal["day", "week", "month", "half"]
PERIOD_PATTERN = r"^(19|2\d)\d{2}-((0[1-9]|1[0-2])(-(0[1-9]|[12]\d|3[01]))?|W(0[1-9]|[1-4]\d|5[0-3])|H[12])$"
"""``2026-11-28`` (day), ``2026-W48`` (ISO week), ``2026-11`` (month), ``2026-H2`` (half year)."""
FIRST_YEAR = 2000


class PeriodError(ValueError):
    """A period that is not one of the four forms, does not exist, or has not begun."""


@dataclass(frozen=True)
class Period:
    name: str
    granularity: Granularity
    start: dt.datetime  # aware, in the schools' time zone
    end: dt.datetime  # exclusive

    def evaluated_at(self, now: dt.datetime) -> dt.datetime:
        """Where a query over this period ends: its end, or now for a period in progress."""
        return min(self.end, now)

    def complete(self, now: dt.datetime) -> bool:
        return self.end <= now


def parse_period(name: str, tz: str) -> Period:
    """The period ``name`` in the time zone ``tz``; PeriodError says which forms are accepted."""
    zone = ZoneInfo(tz)
    forms = "use YYYY-MM-DD (day), YYYY-Www (ISO week), YYYY-MM (month) or YYYY-H1/YYYY-H2 (half year)"
    if not re.fullmatch(PERIOD_PATTERN, name):
        raise PeriodError(f"period {name!r}: {forms}")
    year = int(name[:4])
    rest = name[5:]
    try:
        if len(rest) == 5:
            day = dt.date.fromisoformat(name)
            start = dt.datetime.combine(day, dt.time(), zone)
            return Period(name, "day", start, dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), zone))
        if rest.startswith("H"):
            first = 1 if rest == "H1" else 7
            start = dt.datetime(year, first, 1, tzinfo=zone)
            end = dt.datetime(year + (first == 7), 7 if first == 1 else 1, 1, tzinfo=zone)
            return Period(name, "half", start, end)
        if rest.startswith("W"):
            day = dt.date.fromisocalendar(year, int(rest[1:]), 1)
            start = dt.datetime.combine(day, dt.time(), zone)
            return Period(name, "week", start, start + dt.timedelta(days=7))
        month = int(rest)
        start = dt.datetime(year, month, 1, tzinfo=zone)
        end = dt.datetime(year + (month == 12), month % 12 + 1, 1, tzinfo=zone)
        return Period(name, "month", start, end)
    except ValueError:
        raise PeriodError(f"period {name!r} does not exist ({forms})") from None


def current_period(name: str, tz: str, now: dt.datetime) -> Period:
    """``parse_period``, refusing a period that has not begun at ``now``."""
    period = parse_period(name, tz)
    if period.start.year < FIRST_YEAR:
        raise PeriodError(f"period {name!r}: nothing before {FIRST_YEAR}")
    if period.start >= now:
        raise PeriodError(f"period {name!r} has not begun yet")
    return period


def last_complete(granularity: Granularity, tz: str, now: dt.datetime) -> Period:
    """The latest period of ``granularity`` that has ended at ``now`` (yesterday, last ISO week, last month, the
    last half year), in the time zone ``tz``."""
    today = now.astimezone(ZoneInfo(tz)).date()
    if granularity == "day":
        name = (today - dt.timedelta(days=1)).isoformat()
    elif granularity == "week":
        year, week, _ = (today - dt.timedelta(days=7)).isocalendar()
        name = f"{year}-W{week:02d}"
    elif granularity == "month":
        last = today.replace(day=1) - dt.timedelta(days=1)
        name = f"{last.year}-{last.month:02d}"
    else:
        name = f"{today.year}-H1" if today.month > 6 else f"{today.year - 1}-H2"
    return parse_period(name, tz)
