"""The library panel's view-model (gateway/web/library_panel.py): the library service's status as the
status page shows it: bars, rows, readable reasons, local times, gate states; and partial statuses."""

from __future__ import annotations

import datetime as dt
import time
from zoneinfo import ZoneInfo

import pytest

from edugate.gateway.services.library import LibraryService
from edugate.gateway.web.library_panel import CHART_HEIGHT, library_view, scale_top
from edugate.gateway.web.views import status_view

TZ_NAME = "Asia/Ho_Chi_Minh"
TZ = ZoneInfo(TZ_NAME)
NOW = dt.datetime(2026, 11, 24, 10, 30, 15, tzinfo=TZ).timestamp()


def ms(day: int, hour: int, minute: int = 0, second: int = 0) -> int:
    return int(dt.datetime(2026, 11, day, hour, minute, second, tzinfo=TZ).timestamp() * 1000)


def full_status() -> dict:
    """A ``LibraryService.status()`` of 10:30 on a school day."""
    return {
        "date": "2026-11-24",
        "visitors": {"today_in": 21, "today_out": 9, "per_hour": [
            {"hour": "2026-11-22T09:00", "in": 99, "out": 99},  # two days ago: outside the chart
            {"hour": "2026-11-23T16:00", "in": 4, "out": 6},
            {"hour": "2026-11-24T08:00", "in": 12, "out": 1},
            {"hour": "2026-11-24T09:00", "in": 7, "out": 5},
            {"hour": "2026-11-24T10:00", "in": 2, "out": 3},
        ]},
        "alarms": {"today": 3, "offline_today": 1, "recent": [
            {"ts": ms(24, 10, 2, 11), "time": "10:02:11", "device": "gate-1", "room": "library",
             "reason": "secured_tag", "offline": True, "circulation": None},
            {"ts": ms(24, 9, 15, 0), "time": "09:15:00", "device": "gate-2", "room": "annex",
             "reason": "not_charged", "offline": False, "circulation": "08"},
            {"ts": ms(23, 16, 40, 5), "time": "16:40:05", "device": "gate-1", "room": "library",
             "reason": "unknown_item", "offline": False, "circulation": "01"},
        ]},
        "loans": {"today": 8, "returns_today": 5, "refused_today": 4,
                  "refused_reasons": {"ils_unavailable": 1, "unknown_card": 3}},
        "gates": {
            "gate-2": {"room": "annex", "last_report_ts": ms(24, 9, 40), "reader_online": True, "ils_online": True,
                       "stale": True},
            "gate-1": {"room": "library", "last_report_ts": ms(24, 10, 30), "reader_online": True,
                       "ils_online": False, "stale": False},
            "gate-3": {"room": "hall", "last_report_ts": None, "reader_online": None, "ils_online": None,
                       "stale": True},
            "gate-4": {"room": "hall", "last_report_ts": ms(24, 10, 29), "reader_online": True, "ils_online": True,
                       "stale": False},
        },
        "stations": ["sc-1", "sc-2"],
    }


def test_numbers_of_today() -> None:
    panel = library_view(full_status(), TZ_NAME, NOW)
    assert (panel.date, panel.visitors_in, panel.visitors_out) == ("2026-11-24", 21, 9)
    assert (panel.alarms_today, panel.alarms_offline_today) == (3, 1)
    assert (panel.loans_today, panel.returns_today, panel.refused_today) == (8, 5, 4)
    assert [(r.reason, r.text, r.count) for r in panel.refusals] == [
        ("unknown_card", "card not registered with the library", 3),
        ("ils_unavailable", "library system unavailable", 1)]


def test_the_chart_covers_the_last_24_local_hours_to_scale() -> None:
    chart = library_view(full_status(), TZ_NAME, NOW).chart
    assert len(chart.bars) == 24
    assert chart.bars[0].key == "2026-11-23T11:00" and chart.bars[-1].key == "2026-11-24T10:00"
    assert [b.x for b in chart.bars[:3]] == [0.0, 20.0, 40.0]
    by_key = {b.key: b for b in chart.bars}
    assert (by_key["2026-11-23T16:00"].visitors_in, by_key["2026-11-23T16:00"].visitors_out) == (4, 6)
    assert (by_key["2026-11-24T08:00"].visitors_in, by_key["2026-11-24T08:00"].visitors_out) == (12, 1)
    assert sum(b.visitors_in for b in chart.bars) == 4 + 12 + 7 + 2  # not the 99 of two days ago
    assert [b.key for b in chart.busy] == ["2026-11-23T16:00", "2026-11-24T08:00", "2026-11-24T09:00",
                                           "2026-11-24T10:00"]
    assert chart.top == 12
    peak = by_key["2026-11-24T08:00"]
    assert peak.in_h == CHART_HEIGHT and peak.in_y == 0
    assert peak.out_h == CHART_HEIGHT / 12 and peak.out_y == CHART_HEIGHT - CHART_HEIGHT / 12
    assert by_key["2026-11-24T09:00"].in_h == pytest.approx(CHART_HEIGHT * 7 / 12, abs=0.01)
    empty = by_key["2026-11-24T01:00"]
    assert (empty.visitors_in, empty.in_h, empty.out_h) == (0, 0.0, 0.0)
    assert peak.in_x < peak.out_x < peak.x + 20 and peak.in_x > peak.x
    assert peak.title == "08:00–09:00: 12 in, 1 out"
    assert chart.aria_label == ("Visitors per hour, last 24 hours: 25 in, 15 out; "
                                "busiest hour 08:00–09:00 with 12 in.")
    assert [b.hour for b in chart.bars if b.tick] == ["12:00", "15:00", "18:00", "21:00", "00:00", "03:00",
                                                      "06:00"]  # 09:00 is the second-to-last hour: no room
    assert [b.hour for b in chart.bars if b.major] == ["12:00", "18:00", "00:00", "06:00"]


def test_one_visitor_stays_visible_next_to_a_crowd() -> None:
    status = {"visitors": {"per_hour": [{"hour": "2026-11-24T09:00", "in": 500, "out": 1}]}}
    bar = library_view(status, TZ_NAME, NOW).chart.bars[-2]
    assert bar.key == "2026-11-24T09:00" and bar.in_h == CHART_HEIGHT and bar.out_h == 1.5


@pytest.mark.parametrize(("peak", "top"), [(0, 2), (1, 2), (2, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12),
                                           (13, 16), (17, 20), (21, 30), (55, 60), (61, 80), (81, 100),
                                           (101, 120), (999, 1000), (12_345, 16_000)])
def test_the_scale_is_a_round_even_number(peak: int, top: int) -> None:
    assert scale_top(peak) == top


def test_alarms_show_local_time_gate_reason_and_offline_only() -> None:
    alarms = library_view(full_status(), TZ_NAME, NOW).alarms
    assert [(a.time, a.gate, a.room, a.reason_text, a.offline) for a in alarms] == [
        ("10:02:11", "gate-1", "library", "tag secured (library system offline)", True),
        ("09:15:00", "gate-2", "annex", "not checked out (on the hold shelf)", False),
        ("2026-11-23 16:40:05", "gate-1", "library", "unknown to the library system; tag secured", False)]
    assert alarms[0].when == "2026-11-24 10:02:11" and alarms[0].ago == "28 min ago"
    # the same alarms in another school's zone: the times follow the page's zone
    assert library_view(full_status(), "Europe/Berlin", NOW).alarms[0].time == "04:02:11"


def test_gate_states() -> None:
    gates = {g.id: g for g in library_view(full_status(), TZ_NAME, NOW).gates}
    assert list(gates) == ["gate-1", "gate-2", "gate-3", "gate-4"]
    assert [(g.state, g.state_text, g.warning) for g in gates.values()] == [
        ("trouble", "library system offline", True),
        ("stale", "stale: last report 50 min ago", True),
        ("waiting", "no report yet", True),
        ("ok", "ok", False)]
    assert gates["gate-1"].last_report == "2026-11-24 10:30:00" and gates["gate-1"].last_report_ago == "15 s ago"
    assert gates["gate-3"].last_report_ago == "never" and gates["gate-3"].reader_online is None
    assert library_view(full_status(), TZ_NAME, NOW).gates_warning == 3


def test_stations_take_their_state_from_the_device_table() -> None:
    devices = {"sc-1": {"state": "online", "room": "library"}, "sc-2": {"state": "offline", "room": "annex"}}
    stations = library_view(full_status(), TZ_NAME, NOW, devices).stations
    assert [(s.id, s.room, s.state) for s in stations] == [("sc-1", "library", "online"), ("sc-2", "annex", "offline")]
    assert [s.state for s in library_view(full_status(), TZ_NAME, NOW).stations] == ["unknown", "unknown"]


@pytest.mark.parametrize("status", [None, {}, {"date": None, "visitors": [], "alarms": "x", "loans": None,
                                                "gates": ["gate-1"], "stations": "sc-1"},
                                    {"visitors": {"today_in": "many", "per_hour": [None, {"hour": 9, "in": 1}]},
                                     "alarms": {"recent": [None, {"reason": None}]},
                                     "gates": {"gate-1": None}}])
def test_a_partial_or_broken_status_gives_an_empty_panel(status: dict | None) -> None:
    panel = library_view(status, TZ_NAME, NOW)
    assert panel.date == "2026-11-24"  # today in the school's zone
    assert (panel.visitors_in, panel.alarms_today, panel.loans_today, panel.refused_today) == (0, 0, 0, 0)
    assert len(panel.chart.bars) == 24 and panel.chart.busy == [] and panel.chart.top == 2
    assert panel.chart.aria_label.endswith("nobody counted yet.")
    assert panel.refusals == [] and panel.stations == []
    assert all(g.state == "waiting" for g in panel.gates)
    assert all(a.gate == "?" and a.time == "" for a in panel.alarms)


def test_timestamps_no_clock_can_show_are_left_out() -> None:
    status = {"alarms": {"recent": [{"ts": 10**19, "time": "10:00:00", "device": "gate-1", "reason": "not_charged"},
                                    {"ts": float("nan"), "device": "gate-1"}]},
              "gates": {"gate-1": {"last_report_ts": -5, "stale": True}, "gate-2": {"last_report_ts": 10**19}}}
    panel = library_view(status, TZ_NAME, NOW)
    assert [(a.time, a.ago) for a in panel.alarms] == [("10:00:00", ""), ("", "")]
    assert [(g.last_report_ago, g.state) for g in panel.gates] == [("never", "waiting"), ("never", "waiting")]


def test_no_gates_yet() -> None:
    panel = library_view({"date": "2026-11-24", "gates": {}, "stations": ["sc-1"]}, TZ_NAME, NOW)
    assert panel.gates == [] and panel.gates_warning == 0 and [s.id for s in panel.stations] == ["sc-1"]


def test_the_chart_around_a_daylight_saving_change() -> None:
    berlin = ZoneInfo("Europe/Berlin")  # 2026-10-25 03:00 CEST -> 02:00 CET: the hour 02:xx happens twice
    now = dt.datetime(2026, 10, 25, 12, 10, tzinfo=berlin).timestamp()
    chart = library_view({"visitors": {"per_hour": [{"hour": "2026-10-25T02:00", "in": 3, "out": 0}]}},
                         "Europe/Berlin", now).chart
    keys = [b.key for b in chart.bars]
    assert len(keys) == len(set(keys)) == 23 and keys[-1] == "2026-10-25T12:00"
    assert [b.visitors_in for b in chart.bars if b.key == "2026-10-25T02:00"] == [3]


def test_fed_by_the_service_itself() -> None:
    service = LibraryService({"gate-1": "library"}, {"sc-1": "library"}, TZ_NAME, {"gate-1": 60})
    now = time.time()
    values = {"visitors_in": 3, "visitors_out": 1, "tags": 1, "alarms": 1, "offline_decisions": 0,
              "ils_online": 1, "reader_online": 1}
    service.stage({"kind": "telemetry", "device": "gate-1", "room": "library", "ts": int(now * 1000),
                   "values": values})
    service.stage({"kind": "event", "device": "gate-1", "room": "library", "ts": int(now * 1000),
                   "type": "gate_alarm", "data": {"item": "p1-" + "0" * 32, "decision": "alarm",
                                                  "reason": "not_charged", "offline": False, "circulation": "03"}})
    panel = library_view(service.status(), TZ_NAME, now + 1)
    hour = dt.datetime.fromtimestamp(now - 0.001, TZ).strftime("%Y-%m-%dT%H:00")
    assert [(b.key, b.visitors_in, b.visitors_out) for b in panel.chart.busy] == [(hour, 3, 1)]
    assert [(g.id, g.state) for g in panel.gates] == [("gate-1", "ok")]
    assert [(a.gate, a.reason_text) for a in panel.alarms] == [("gate-1", "not checked out (available)")]
    assert "p1-" not in repr(panel)


def test_status_view_shows_the_library_once() -> None:
    service = LibraryService({"gate-1": "library"}, {}, TZ_NAME)
    status = {"services": {"access": {"allowlist_version": 3}, "library": service.status()},
              "devices": {"gate-1": {"state": "online", "room": "library", "driver": "library-gate"}}}
    view = status_view(status, TZ_NAME)
    assert [name for name, _ in view["services"]] == ["access"]
    assert view["library"] is not None and [g.id for g in view["library"].gates] == ["gate-1"]
    assert status_view({"services": {"access": {}}}, TZ_NAME)["library"] is None
    odd = status_view({"services": {"library": "starting"}}, TZ_NAME)  # not a status dict: shown as it is
    assert odd["library"] is None and odd["services"] == [("library", [("status", "starting")])]

