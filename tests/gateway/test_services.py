"""School logic on the pipeline: access decisions, attendance periods and summaries, the school bus."""

from __future__ import annotations

import datetime as dt
import os
import stat
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from edugate.common.privacy import KeyFileError, Pseudonymizer, load_or_create_key, normalise_uid
from edugate.contract.records import Event, Reading
from edugate.gateway.runtime.clock import Clock
from edugate.gateway.runtime.outbox import Outbox
from edugate.gateway.runtime.pipeline import Pipeline
from edugate.gateway.services.access import AccessControl, AllowList, AllowListRejected
from edugate.gateway.services.attendance import Attendance, TimetableConfig
from edugate.gateway.services.bus import BusConfig, BusRoute

TZ = "Asia/Ho_Chi_Minh"
KEY = bytes(range(32))
P = Pseudonymizer(KEY)
ALICE, BOB = P(normalise_uid("04:A2:2B:1C")), P(normalise_uid("0412345678AB90"))
CAROL = P(normalise_uid("0499887766"))


def tap(device: str, card: str, role: str, direction: str = "in", ts: float | None = None) -> Event:
    return Event(device, "card_tap", {"card": card, "role": role, "direction": direction}, ts=ts)


@pytest.fixture
async def outbox(tmp_path: Path):
    box = await Outbox.open(tmp_path / "o.sqlite", budget_bytes=1 << 30)
    yield box
    await box.close()


# ---------------------------------------------------------------- pseudonyms


def test_pseudonyms_are_keyed_stable_and_hide_the_uid(tmp_path: Path) -> None:
    key = load_or_create_key(tmp_path / "k" / "school.key")
    assert stat.S_IMODE((tmp_path / "k" / "school.key").stat().st_mode) == 0o600
    assert load_or_create_key(tmp_path / "k" / "school.key") == key  # read back, not regenerated
    uid = normalise_uid("04:a2:2b:1c")
    assert uid == bytes.fromhex("04a22b1c") == normalise_uid("0x04A22B1C")
    p1, p2 = Pseudonymizer(key), Pseudonymizer(load_or_create_key(tmp_path / "other.key"))
    assert p1(uid) == p1(uid) and p1(uid) != p2(uid)
    assert p1(uid).startswith("p1-") and len(p1(uid)) == 35
    assert "04a22b1c" not in p1(uid) and key.hex() not in repr(p1)


def test_key_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "school.key"
    load_or_create_key(path)
    os.chmod(path, 0o644)
    with pytest.raises(KeyFileError, match="chmod 600"):
        load_or_create_key(path)


# ---------------------------------------------------------------- access


async def test_door_decides_from_the_allowlist_and_persists_it(outbox: Outbox, tmp_path: Path) -> None:
    path = tmp_path / "allowlist.json"
    access = AccessControl(path, {"door-1": "lab-2", "door-2": "hall"})
    pipe = Pipeline(outbox, Clock("always"), {"door-1": "lab-2", "door-2": "hall"}, rules=[access.stage])
    # no allow-list yet: deny, and say why
    rec = await pipe.submit(tap("door-1", ALICE, "door"))
    assert rec["data"]["decision"] == "deny" and rec["data"]["reason"] == "no allow-list"
    access.replace(AllowList(version=3, lists={"lab-2": [ALICE], "door-2": [BOB]}))
    allowed = await pipe.submit(tap("door-1", ALICE, "door"))
    assert allowed["data"].items() >= {"decision": "allow", "allowlist_version": 3}.items()
    assert (await pipe.submit(tap("door-1", BOB, "door")))["data"]["decision"] == "deny"
    assert (await pipe.submit(tap("door-2", BOB, "door")))["data"]["decision"] == "allow"
    # attendance readers are not access-controlled
    assert "decision" not in (await pipe.submit(tap("door-2", BOB, "attendance")))["data"]
    # older or equal versions are refused; the file survives a restart
    with pytest.raises(AllowListRejected, match="not newer than 3"):
        access.replace(AllowList(version=3, lists={"*": [BOB]}))
    again = AccessControl(path, {"door-1": "lab-2"})
    assert again.allowlist is not None and again.allowlist.version == 3
    assert again.allowlist.allowed(ALICE, "door-1", "lab-2")
    assert access.status() == {"allowlist_version": 3, "allow": 2, "deny": 2}


def test_allowlist_only_takes_pseudonyms() -> None:
    with pytest.raises(ValueError, match=r"lists\.lab-2\.0"):
        AllowList.model_validate({"version": 1, "lists": {"lab-2": ["04A22B1C"]}})


# ---------------------------------------------------------------- attendance

TIMETABLE = TimetableConfig.model_validate({
    "days": ["mon", "tue", "wed", "thu", "fri"],
    "periods": [{"name": "P1", "start": "07:00", "end": "07:45"}, {"name": "P2", "start": "07:50", "end": "08:35"}],
    "late_after_min": 5, "early_min": 15})


def local(h: int, m: int, day: int = 23) -> dt.datetime:  # 2026-11-23 is a Monday
    return dt.datetime(2026, 11, day, h, m, tzinfo=ZoneInfo(TZ))


async def test_attendance_periods_lateness_and_summaries(outbox: Outbox) -> None:
    att = Attendance(TIMETABLE, TZ, {"r10a": "class-10a", "r10b": "class-10b"})
    pipe = Pipeline(outbox, Clock("always"), {"r10a": "class-10a", "r10b": "class-10b"}, rules=[att.stage])
    early = await pipe.submit(tap("r10a", ALICE, "attendance", ts=local(6, 50).timestamp()))
    assert early["data"].items() >= {"period": "P1", "late": False, "date": "2026-11-23"}.items()
    late = await pipe.submit(tap("r10a", BOB, "attendance", ts=local(7, 10).timestamp()))
    assert late["data"]["late"] is True
    again = await pipe.submit(tap("r10a", BOB, "attendance", ts=local(7, 20).timestamp()))
    assert again["data"]["period"] == "P1"
    outside = await pipe.submit(tap("r10a", ALICE, "attendance", ts=local(12, 0).timestamp()))
    assert outside["data"]["period"] is None
    assert att.due(local(7, 44)) == []
    summaries = {e.data["period"] + "/" + e.device: e.data for e in att.due(local(7, 46))}
    assert summaries == {"P1/r10a": {"date": "2026-11-23", "period": "P1", "present": 2, "late": 1},
                         "P1/r10b": {"date": "2026-11-23", "period": "P1", "present": 0, "late": 0}}
    assert att.due(local(7, 47)) == [], "a period is summarised once"
    assert {e.data["period"] for e in att.due(local(9, 0))} == {"P2"}
    # summaries are valid events for the pipeline
    [first, *_] = att.due(local(7, 46, day=24))
    assert (await pipe.submit(first))["type"] == "attendance_summary"


def test_no_attendance_on_days_off() -> None:
    att = Attendance(TIMETABLE, TZ, {"r10a": "class-10a"})
    assert att.period_at(local(7, 10, day=29)) is None  # a Sunday
    with pytest.raises(ValueError, match="overlap"):
        TimetableConfig.model_validate({"periods": [{"name": "A", "start": "07:00", "end": "08:00"},
                                                    {"name": "B", "start": "07:30", "end": "08:30"}]})


# ---------------------------------------------------------------- bus


async def test_bus_boarding_alighting_with_position_and_left_onboard_alert(outbox: Outbox, tmp_path: Path) -> None:
    state = tmp_path / "bus.json"
    bus = BusRoute(BusConfig(route_end_times=[dt.time(8, 0)]), TZ, state, ["bus-reader"])
    rooms = {"bus-reader": "bus-12", "bus-gps": "bus-12"}
    pipe = Pipeline(outbox, Clock("always"), rooms, rules=[bus.stage])
    await pipe.submit(Reading("bus-gps", {"lat": 10.77621, "lon": 106.70098, "fix": 1, "speed_kmh": 0}))
    board = await pipe.submit(tap("bus-reader", ALICE, "bus", "both"))
    assert board["data"].items() >= {"action": "board", "lat": 10.77621, "lon": 106.70098}.items()
    await pipe.submit(tap("bus-reader", BOB, "bus", "both"))
    await pipe.submit(Reading("bus-gps", {"lat": 10.80001, "lon": 106.71002, "fix": 1}))
    await pipe.submit(Reading("bus-gps", {"fix": 0}))  # a lost fix keeps the last good position
    alight = await pipe.submit(tap("bus-reader", ALICE, "bus", "both"))
    assert alight["data"].items() >= {"action": "alight", "lat": 10.80001}.items()
    # the gateway restarts mid-route: Bob is still on board
    bus2 = BusRoute(BusConfig(route_end_times=[dt.time(8, 0)]), TZ, state, ["bus-reader"])
    assert list(bus2.onboard) == [BOB]
    assert not bus2.due(local(7, 59)) and bus2.due(local(8, 1)) and not bus2.due(local(8, 2))
    events = bus2.end_route("scheduled")
    alerts = [e for e in events if e.type == "bus_left_onboard"]
    assert [a.data["card"] for a in alerts] == [BOB] and alerts[0].data["alert"] is True
    assert events[-1].type == "bus_route_end" and events[-1].data["left_onboard"] == 1
    for e in events:
        await pipe.submit(e)
    assert bus2.onboard == {} and BusRoute(BusConfig(), TZ, state, ["bus-reader"]).onboard == {}


def test_reidentification_cli_prints_pseudonyms_and_audits(tmp_path: Path) -> None:
    import subprocess
    import sys

    key_path = tmp_path / "school.key"
    key = load_or_create_key(key_path)
    (tmp_path / "roster.csv").write_text("student_id,uid\nHS001,04:A2:2B:1C\n")
    result = subprocess.run([sys.executable, "-m", "edugate.cli.main", "pseudonym", "--key", str(key_path),
                             "--purpose", "bus alert check", "--roster", str(tmp_path / "roster.csv")],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    expected = Pseudonymizer(key)(bytes.fromhex("04a22b1c"))
    assert result.stdout.splitlines() == ["student_id,pseudonym", f"HS001,{expected}"]
    audit = (tmp_path / "reidentification.log").read_text()
    assert "purpose='bus alert check'" in audit and "count=1" in audit
    assert "a22b1c" not in audit.lower()
    missing = subprocess.run([sys.executable, "-m", "edugate.cli.main", "pseudonym", "--key", str(tmp_path / "nokey"),
                              "--purpose", "x", "04a22b1c"], capture_output=True, text=True)
    assert missing.returncode == 2 and "refusing to create a new key" in missing.stderr


async def test_attendance_tallies_survive_a_restart_mid_period(outbox: Outbox, tmp_path: Path) -> None:
    state = tmp_path / "attendance.json"
    readers = {"r10a": "class-10a", "r10b": "class-10b"}
    att = Attendance(TIMETABLE, TZ, readers, state_file=state)
    pipe = Pipeline(outbox, Clock("always"), readers, rules=[att.stage])
    await pipe.submit(tap("r10a", ALICE, "attendance", ts=local(6, 55).timestamp()))
    await pipe.submit(tap("r10a", BOB, "attendance", ts=local(7, 12).timestamp()))
    # power cut at 07:20; the gateway is back at 07:30 and Alice taps again, Carol for the first time
    again = Attendance(TIMETABLE, TZ, readers, state_file=state)
    pipe = Pipeline(outbox, Clock("always"), readers, rules=[again.stage])
    await pipe.submit(tap("r10a", ALICE, "attendance", ts=local(7, 30).timestamp()))
    await pipe.submit(tap("r10b", CAROL, "attendance", ts=local(7, 31).timestamp()))
    summaries = {e.device: e.data for e in again.due(local(7, 46))}
    assert summaries == {"r10a": {"date": "2026-11-23", "period": "P1", "present": 2, "late": 1},
                         "r10b": {"date": "2026-11-23", "period": "P1", "present": 1, "late": 1}}
    assert Attendance(TIMETABLE, TZ, readers, state_file=state).tallies == {}, "summarised tallies are forgotten"


async def test_a_period_that_ended_while_the_gateway_was_down_is_summarised_when_it_is_back(
        outbox: Outbox, tmp_path: Path) -> None:
    state = tmp_path / "attendance.json"
    readers = {"r10a": "class-10a"}
    att = Attendance(TIMETABLE, TZ, readers, state_file=state)
    await Pipeline(outbox, Clock("always"), readers, rules=[att.stage]).submit(
        tap("r10a", ALICE, "attendance", ts=local(7, 52).timestamp()))
    # down from 08:00 until the next morning: P2 of the 23rd ended meanwhile
    back = Attendance(TIMETABLE, TZ, readers, state_file=state)
    events = back.due(local(6, 30, day=24))
    assert [(e.device, e.data) for e in events] == [
        ("r10a", {"date": "2026-11-23", "period": "P2", "present": 1, "late": 0})]
    assert events[0].ts == local(8, 35).timestamp()
    assert back.due(local(6, 31, day=24)) == []


def test_an_unreadable_attendance_state_is_reported_and_ignored(tmp_path: Path,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    state = tmp_path / "attendance.json"
    state.write_text("{not json")
    att = Attendance(TIMETABLE, TZ, {"r10a": "class-10a"}, state_file=state)
    assert att.tallies == {}
    assert f"attendance state {state} unreadable" in caplog.text
