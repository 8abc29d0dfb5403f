"""The librarian's view (the library service's status) and the shipped library sample config."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from pathlib import Path
from zoneinfo import ZoneInfo

from edugate.gateway.config import load_config
from edugate.gateway.services.library import LibraryService
from edugate.gateway.services.registry import build_services

REPO = Path(__file__).resolve().parents[3]
SAMPLE = REPO / "drivers" / "library" / "sample.yaml"
TZ = ZoneInfo("Asia/Ho_Chi_Minh")


def ms(hour: int, minute: int = 0, day: dt.date | None = None) -> int:
    day = day or dt.datetime.now(TZ).date()
    return int(dt.datetime(day.year, day.month, day.day, hour, minute, tzinfo=TZ).timestamp() * 1000)


def reading(ts: int, **values: int) -> dict:
    base = {"visitors_in": 0, "visitors_out": 0, "tags": 0, "alarms": 0, "offline_decisions": 0,
            "ils_online": 1, "reader_online": 1}
    return {"kind": "telemetry", "device": "gate-1", "room": "library", "ts": ts, "values": base | values}


def event(device: str, kind: str, ts: int, **data: object) -> dict:
    return {"kind": "event", "device": device, "room": "library", "ts": ts, "type": kind, "data": data}


def test_the_sample_config_passes_edugate_check() -> None:
    result = subprocess.run([sys.executable, "-m", "edugate.cli.main", "check", str(SAMPLE)], capture_output=True,
                            text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert "2 devices (library-gate, library-selfcheck)" in result.stdout


def test_build_services_adds_the_library_service() -> None:
    cfg = load_config(SAMPLE)
    services = {s.name: s for s in build_services(cfg)}
    library = services["library"]
    assert isinstance(library, LibraryService)
    assert library.gates == {"library-gate": "library"} and library.stations == {"selfcheck-1": "library"}
    assert set(library.status()) == {"date", "visitors", "alarms", "loans", "gates", "stations"}


def test_status_counts_visitors_per_hour_alarms_loans_and_gate_health() -> None:
    service = LibraryService({"gate-1": "library"}, {"sc-1": "library"}, "Asia/Ho_Chi_Minh")
    yesterday = dt.datetime.now(TZ).date() - dt.timedelta(days=1)
    records = [
        reading(ms(23, 59, yesterday), visitors_in=7),  # yesterday: in the hourly view, not in today's totals
        reading(ms(9, 1), visitors_in=3, visitors_out=1),
        reading(ms(9, 2), visitors_in=2),
        reading(ms(10, 0), visitors_in=1, visitors_out=4),  # stamped 10:00: the minute before, i.e. 09:xx
        reading(ms(10, 30), visitors_out=2, ils_online=0),
        event("gate-1", "gate_alarm", ms(9, 5), item="p1-" + "0" * 32, decision="alarm", reason="not_charged",
              source="ils", offline=False, circulation="03"),
        event("gate-1", "gate_alarm", ms(10, 31), item="p1-" + "1" * 32, decision="alarm", reason="secured_tag",
              source="tag", offline=True),
        event("sc-1", "library_loan", ms(9, 10), source="rfid", renewal=False, recovered=False),
        event("sc-1", "library_loan", ms(9, 11), source="barcode", renewal=False, recovered=False),
        event("sc-1", "library_return", ms(9, 12), source="rfid", alert=False),
        event("sc-1", "library_refused", ms(9, 13), reason="patron_blocked"),
        {"kind": "telemetry", "device": "lab-1", "ts": ms(9), "values": {"visitors_in": 99}},  # not a gate
    ]
    for record in records:
        assert service.stage(dict(record)) == record, "the service never changes a record"
    status = service.status()
    today = dt.datetime.now(TZ).date().isoformat()
    assert status["date"] == today
    assert status["visitors"]["today_in"] == 6 and status["visitors"]["today_out"] == 7
    hours = {h["hour"][-5:]: (h["in"], h["out"]) for h in status["visitors"]["per_hour"] if h["hour"] >= today}
    assert hours == {"09:00": (6, 5), "10:00": (0, 2)}
    assert any(h["in"] == 7 for h in status["visitors"]["per_hour"] if h["hour"] < today)
    assert status["alarms"]["today"] == 2 and status["alarms"]["offline_today"] == 1
    recent = status["alarms"]["recent"]
    assert [a["reason"] for a in recent] == ["secured_tag", "not_charged"]
    assert set(recent[0]) == {"ts", "time", "device", "room", "reason", "offline", "circulation"}, "no item, no one"
    assert status["loans"] == {"today": 2, "returns_today": 1, "refused_today": 1,
                               "refused_reasons": {"patron_blocked": 1}}
    gate = status["gates"]["gate-1"]
    assert gate["ils_online"] is False and gate["reader_online"] is True and gate["last_report_ts"] == ms(10, 30)
    assert status["stations"] == ["sc-1"]
