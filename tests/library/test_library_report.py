"""``edugate library-report`` against a real VictoriaMetrics: sums per school and month, month boundaries
in the schools' time zone, CSV and JSON, and nothing below the school level."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import subprocess
import sys
import urllib.request
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from edugate.central.library_report import ReportError, build_report, month_bounds, queries
from edugate.simulators.servers import VictoriaMetrics

REPO = Path(__file__).resolve().parents[2]
TZ = ZoneInfo("Asia/Ho_Chi_Minh")


def at(*args: int) -> int:
    return int(dt.datetime(*args, tzinfo=TZ).timestamp() * 1000)


def write(vm: VictoriaMetrics, lines: list[str]) -> None:
    req = urllib.request.Request(f"{vm.url}/api/v2/write?precision=ms", data="\n".join(lines).encode(), method="POST")
    urllib.request.urlopen(req, timeout=10).read()
    vm.flush()


def gate(school: str, device: str, ts: int, vin: int, vout: int) -> str:
    return f"edugate,school={school},gateway=gw,device={device},room=library visitors_in={vin},visitors_out={vout} {ts}"


def event(school: str, kind: str, ts: int, device: str = "sc-1") -> str:
    return f"edugate_event,school={school},gateway=gw,device={device},room=library,type={kind} count=1 {ts}"


def run(vm: VictoriaMetrics, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edugate.central.library_report", "--store-url", vm.url, *args],
                          capture_output=True, text=True, cwd=REPO, timeout=60)


def test_month_bounds_follow_the_time_zone() -> None:
    start, end = month_bounds("2026-02", "Asia/Ho_Chi_Minh")
    assert start.isoformat() == "2026-02-01T00:00:00+07:00" and end.isoformat() == "2026-03-01T00:00:00+07:00"
    assert 'sum by (school) (sum_over_time(edugate_event_count{type="library_loan",school=~"a|b"}[60s]))' == \
        queries(60, ["a", "b"])["loans"]


def test_monthly_report_per_school(victoria: VictoriaMetrics) -> None:
    write(victoria, [
        gate("school-a", "gate-1", at(2026, 9, 30, 23, 59), 100, 100),  # September
        gate("school-a", "gate-1", at(2026, 10, 1, 0, 0), 50, 50),  # stamped at the end of September's last minute
        gate("school-a", "gate-1", at(2026, 10, 1, 7, 1), 3, 1),
        gate("school-a", "gate-2", at(2026, 10, 15, 9, 0), 4, 2),  # a second gate of the same school
        gate("school-a", "gate-1", at(2026, 11, 1, 0, 0), 2, 6),  # October's last minute
        gate("school-b", "gate-1", at(2026, 10, 20, 8, 0), 10, 9),
        gate("school-b", "gate-1", at(2026, 11, 2, 8, 0), 70, 70),  # November
        event("school-a", "library_loan", at(2026, 10, 2, 9, 0)),
        event("school-a", "library_loan", at(2026, 10, 3, 9, 0)),
        event("school-a", "library_return", at(2026, 10, 4, 9, 0)),
        event("school-a", "gate_alarm", at(2026, 10, 4, 9, 5), device="gate-1"),
        event("school-a", "card_tap", at(2026, 10, 4, 9, 6)),  # not a library figure
        event("school-b", "library_loan", at(2026, 9, 29, 9, 0)),  # September
        event("school-b", "library_return", at(2026, 10, 30, 16, 59)),
    ])
    exact = build_report(victoria.url, "2026-10", "Asia/Ho_Chi_Minh")  # the true sums, before anonymisation
    assert [{c: r[c] for c in ("school", "visitors_in", "visitors_out", "loans", "returns", "gate_alarms")}
            for r in exact["schools"]] == [
        {"school": "school-a", "visitors_in": 9, "visitors_out": 9, "loans": 2, "returns": 1, "gate_alarms": 1},
        {"school": "school-b", "visitors_in": 10, "visitors_out": 9, "loans": 0, "returns": 1, "gate_alarms": 0}]
    # what leaves central: below k suppressed (empty), the rest rounded to round_to; 0 stays 0
    result = run(victoria, "--month", "2026-10", "--format", "csv", "--k", "2", "--round-to", "1")
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert rows == [
        {"school": "school-a", "month": "2026-10", "visitors_in": "9", "visitors_out": "9", "loans": "2",
         "returns": "", "gate_alarms": ""},
        {"school": "school-b", "month": "2026-10", "visitors_in": "10", "visitors_out": "9", "loans": "0",
         "returns": "", "gate_alarms": "0"},
    ]
    default = list(csv.DictReader(io.StringIO(run(victoria, "--month", "2026-10").stdout)))  # k 5, round to 5
    assert [(r["visitors_in"], r["visitors_out"], r["loans"]) for r in default] == [("10", "10", ""), ("10", "10", "0")]
    result = run(victoria, "--month", "2026-10", "--format", "json", "--school", "school-b")
    report = json.loads(result.stdout)
    assert report["complete"] and report["from"] == "2026-10-01T00:00:00+07:00"
    assert [s["school"] for s in report["schools"]] == ["school-b"] and report["totals"]["visitors_in"] == 10
    assert (report["k"], report["round_to"], report["totals"]["returns"]) == (5, 5, None)
    assert "device" not in result.stdout and "gate-1" not in result.stdout, "nothing below the school level"


def test_month_in_progress_and_errors(victoria: VictoriaMetrics) -> None:
    now = dt.datetime.now(dt.UTC)
    write(victoria, [gate("school-a", "gate-1", int(now.timestamp() * 1000) - 1000, 5, 4)])
    report = build_report(victoria.url, now.astimezone(TZ).strftime("%Y-%m"), "Asia/Ho_Chi_Minh")
    assert not report["complete"] and report["schools"][0]["visitors_in"] == 5
    bad = run(victoria, "--month", "2026-13")
    assert bad.returncode == 2 and "--month '2026-13' must be YYYY-MM" in bad.stderr
    assert run(victoria, "--month", "2026-10", "--format", "xml").returncode == 2
    future = run(victoria, "--month", f"{now.year + 1}-01")
    assert future.returncode == 2 and "has not begun yet" in future.stderr
    down = subprocess.run([sys.executable, "-m", "edugate.central.library_report", "--store-url", "http://127.0.0.1:9",
                           "--month", "2026-10"], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert down.returncode == 2 and "cannot reach the store" in down.stderr


@pytest.mark.parametrize("month", ["2026-1", "26-10", "2026-00", "abc"])
def test_bad_months(month: str) -> None:
    with pytest.raises(ReportError, match="must be YYYY-MM"):
        month_bounds(month, "Asia/Ho_Chi_Minh")
