"""The k-anonymity rule on true figures, with adversarial cases: a class of one, differencing overlapping areas
and periods, filters. Pure code; the same rows through the API against real servers: tests/central/api."""

from __future__ import annotations

import datetime as dt
import itertools
import re

import pytest

from edugate.central.indicators.anonymise import Rule, anonymise, rows
from edugate.central.indicators.catalogue import BY_NAME, CATALOGUE
from edugate.central.indicators.compute import Figures
from edugate.central.indicators.periods import PeriodError, current_period, parse_period
from tests.helpers import REPO

TZ = "Asia/Ho_Chi_Minh"
NOW = dt.datetime(2026, 12, 2, tzinfo=dt.UTC)
TAPS = BY_NAME["attendance_taps"]


def school(taps: float, health: float = 10, expected: float = 10) -> Figures:
    figures = Figures(has_data=True)
    figures.components.update({"taps": taps, "gateways": 1, "health_records": health,
                               "expected_health_records": expected})
    return figures


def published(items: list[dict], area: str, indicator: str = "attendance_taps") -> tuple[float | None, str]:
    (row,) = [r for r in items if r["area"] == area and r["indicator"] == indicator]
    return row["value"], row["status"]


def test_small_counts_are_suppressed_and_others_rounded() -> None:
    rule = Rule(k=5)
    assert [anonymise(TAPS, v, rule) for v in (0, 1, 4, 5, 7, 8, 102, None)] == [
        (0, "ok"), (None, "suppressed"), (None, "suppressed"), (5, "ok"), (5, "ok"), (10, "ok"), (100, "ok"),
        (None, "no_data")]
    assert anonymise(TAPS, 9, Rule(k=10)) == (None, "suppressed")
    assert anonymise(BY_NAME["data_completeness_pct"], 3.3, rule) == (3.3, "ok")  # not about children: exact


def test_a_class_of_one_is_hidden_at_every_level() -> None:
    period = parse_period("2026-11", TZ)
    items = rows({"school-c": school(1)}, {"district-2": ["school-c"]}, period, NOW, Rule())
    for area in ("school-c", "district-2", "city"):
        assert published(items, area) == (None, "suppressed")


def test_differencing_two_overlapping_areas_never_gives_a_hidden_count() -> None:
    """Every (A, B) with B hidden (1..k-1): district - school A, the only two published numbers, is a multiple
    of k, so never B; the same holds for every sum and difference of published counts."""
    period = parse_period("2026-11-10", TZ)
    for a, b in itertools.product(range(5, 120), range(1, 5)):
        items = rows({"school-a": school(a), "school-b": school(b)}, {"d": ["school-a", "school-b"]}, period, NOW,
                     Rule())
        assert published(items, "school-b") == (None, "suppressed")
        district, school_a = published(items, "d")[0], published(items, "school-a")[0]
        assert district is not None and school_a is not None
        assert district - school_a != b and district % 5 == 0 and school_a % 5 == 0


def test_differencing_a_week_and_its_days() -> None:
    """A week of 12 taps = 10 on Monday + 2 on Tuesday: week - Monday must not give Tuesday's 2."""
    rule = Rule()
    week, monday, tuesday = (anonymise(TAPS, v, rule)[0] for v in (12, 10, 2))
    assert tuesday is None and week is not None and monday is not None and week - monday != 2


def test_filters_and_periods_are_whole_buckets() -> None:
    with pytest.raises(PeriodError, match="use YYYY-MM-DD"):
        parse_period("2026-11-01..2026-11-15", TZ)  # no arbitrary ranges to difference
    with pytest.raises(PeriodError, match="has not begun"):
        current_period("2027-H1", TZ, NOW)
    assert parse_period("2026-H2", TZ).start.isoformat() == "2026-07-01T00:00:00+07:00"
    assert parse_period("2026-H2", TZ).end.isoformat() == "2027-01-01T00:00:00+07:00"
    assert parse_period("2026-W53", TZ).start.date() == dt.date(2026, 12, 28)
    assert parse_period("2026-12", TZ).end.isoformat() == "2027-01-01T00:00:00+07:00"
    with pytest.raises(PeriodError, match="does not exist"):
        parse_period("2025-W53", TZ)  # 2025 has 52 ISO weeks


def test_rows_name_areas_only() -> None:
    period = parse_period("2026-11", TZ)
    items = rows({"school-a": school(50)}, {}, period, NOW, Rule())
    assert {r["district"] for r in items if r["level"] == "school"} == {"unassigned"}
    assert set(items[0]) == {"indicator", "unit", "level", "area", "district", "value", "status", "period", "from",
                             "to", "complete"}


def test_the_catalogue_in_docs_names_every_indicator() -> None:
    text = (REPO / "docs/metrics.md").read_text()
    documented = set(re.findall(r"^### `([a-z_]+)`", text, re.MULTILINE))
    assert documented == {i.name for i in CATALOGUE}
    for indicator in CATALOGUE:
        section = text.split(f"### `{indicator.name}`")[1].split("###")[0]
        assert f"unit: {indicator.unit}" in section.lower() and "source:" in section.lower() \
            and "missing data:" in section.lower(), indicator.name
