"""Attendance: timetable periods, lateness, summaries, and tallies kept across restarts."""

from __future__ import annotations

from pathlib import Path

import pytest

from edugate.gateway.runtime.clock import Clock
from edugate.gateway.runtime.outbox import Outbox
from edugate.gateway.runtime.pipeline import Pipeline
from edugate.gateway.services.attendance import Attendance, TimetableConfig
from tests.gateway.services.cards import ALICE, BOB, CAROL, TZ, local, tap

TIMETABLE = TimetableConfig.model_validate({
    "days": ["mon", "tue", "wed", "thu", "fri"],
    "periods": [{"name": "P1", "start": "07:00", "end": "07:45"}, {"name": "P2", "start": "07:50", "end": "08:35"}],
    "late_after_min": 5, "early_min": 15})


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




async def test_attendance_tallies_survive_a_restart_mid_period(outbox: Outbox, tmp_path: Path) -> None:
    state = tmp_path / "attendance.json"
    readers = {"r10a": "class-10a", "r10b": "class-10b"}
    att = Attendance(TIMETABLE, TZ, readers, state_file=state)
    pipe = Pipeline(outbox, Clock("always"), readers, rules=[att.stage])
    await pipe.submit(tap("r10a", ALICE, "attendance", ts=local(6, 55).timestamp()))
    await pipe.submit(tap("r10a", BOB, "attendance", ts=local(7, 12).timestamp()))
    await att.flush()  # the tally file is written off the loop, a moment after the tap
    # power cut at 07:20; the gateway is back at 07:30 and Alice taps again, Carol for the first time
    again = Attendance(TIMETABLE, TZ, readers, state_file=state)
    pipe = Pipeline(outbox, Clock("always"), readers, rules=[again.stage])
    await pipe.submit(tap("r10a", ALICE, "attendance", ts=local(7, 30).timestamp()))
    await pipe.submit(tap("r10b", CAROL, "attendance", ts=local(7, 31).timestamp()))
    summaries = {e.device: e.data for e in again.due(local(7, 46))}
    assert summaries == {"r10a": {"date": "2026-11-23", "period": "P1", "present": 2, "late": 1},
                         "r10b": {"date": "2026-11-23", "period": "P1", "present": 1, "late": 1}}
    await again.flush()
    assert Attendance(TIMETABLE, TZ, readers, state_file=state).tallies == {}, "summarised tallies are forgotten"


async def test_a_period_that_ended_while_the_gateway_was_down_is_summarised_when_it_is_back(
        outbox: Outbox, tmp_path: Path) -> None:
    state = tmp_path / "attendance.json"
    readers = {"r10a": "class-10a"}
    att = Attendance(TIMETABLE, TZ, readers, state_file=state)
    await Pipeline(outbox, Clock("always"), readers, rules=[att.stage]).submit(
        tap("r10a", ALICE, "attendance", ts=local(7, 52).timestamp()))
    await att.flush()
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
