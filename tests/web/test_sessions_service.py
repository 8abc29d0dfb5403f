"""The sessions service on the real pipeline and outbox: records marked with the session id, rows kept on disk,
a running session that survives a restart, the row and session limits, CSV and commands."""

from __future__ import annotations

import asyncio
import csv
import io
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from edugate.contract.records import SESSION_PATTERN, Reading
from edugate.gateway.runtime.clock import Clock
from edugate.gateway.runtime.outbox import Outbox
from edugate.gateway.runtime.pipeline import Pipeline
from edugate.gateway.services.sessions import SessionError, SessionsService, StartArgs, StopArgs
from tests.helpers import assert_stops_when_cancelled_as_it_wakes, wait_for_async

DEVICES = {"probe-a": "lab-1", "probe-b": "lab-1", "probe-c": "lab-2"}
T0 = 1_796_000_000.0


@pytest.fixture
async def outbox(tmp_path: Path) -> AsyncIterator[Outbox]:
    box = await Outbox.open(tmp_path / "o.sqlite", budget_bytes=1 << 30)
    yield box
    await box.close()


def service(folder: Path, **kw: int) -> SessionsService:
    return SessionsService(folder, DEVICES, "Asia/Ho_Chi_Minh", **kw)


async def test_records_carry_the_session_and_its_rows_are_kept(outbox: Outbox, tmp_path: Path) -> None:
    sessions = service(tmp_path / "sessions")
    pipe = Pipeline(outbox, Clock("always"), DEVICES, rules=[sessions.stage])
    before = await pipe.submit(Reading("probe-a", {"temperature": 20.0}, ts=T0))
    session = sessions.start("Boiling point", ["probe-b", "probe-a"], by="ms-lan", now=T0 + 1)
    assert re.match(SESSION_PATTERN, session.id) and session.devices == ["probe-a", "probe-b"]
    marked = [await pipe.submit(Reading(d, {"temperature": 20.0 + i, "ok": True, "label": "x"}, ts=T0 + 2 + i))
              for i, d in enumerate(["probe-a", "probe-b", "probe-c", "probe-a"])]
    sessions.stop(session.id, by="ms-lan", now=T0 + 10)
    later = await pipe.submit(Reading("probe-a", {"temperature": 99.0}, ts=T0 + 11))
    assert before is not None and "session" not in before and later is not None and "session" not in later
    assert [r.get("session") if r else None for r in marked] == [session.id, session.id, None, session.id]
    assert list(sessions.rows(session.id)) == [
        (int((T0 + 2) * 1000), "probe-a", {"temperature": 20.0}),
        (int((T0 + 3) * 1000), "probe-b", {"temperature": 21.0}),
        (int((T0 + 5) * 1000), "probe-a", {"temperature": 23.0})]
    # the plot's data in parts: each answer says where the next one goes on
    part = sessions.series(session.id, max_rows=2)
    assert part["devices"] == {"probe-a": {"ts": [T0 + 2], "values": {"temperature": [20.0]}},
                               "probe-b": {"ts": [T0 + 3], "values": {"temperature": [21.0]}}}
    rest = sessions.series(session.id, after=part["next"])
    assert rest["devices"] == {"probe-a": {"ts": [T0 + 5], "values": {"temperature": [23.0]}}}
    assert sessions.series(session.id, after=rest["next"])["devices"] == {}
    rows = list(csv.DictReader(io.StringIO(sessions.csv(session.id))))
    assert [(r["device"], r["room"], r["temperature"]) for r in rows] == [
        ("probe-a", "lab-1", "20"), ("probe-b", "lab-1", "21"), ("probe-a", "lab-1", "23")]
    assert rows[0]["time"] == "2026-11-30T07:53:22.000+07:00"  # the school's time zone
    events = sessions.take_events()
    assert [(e.device, e.data["action"]) for e in events] == [
        ("probe-a", "started"), ("probe-b", "started"), ("probe-a", "stopped"), ("probe-b", "stopped")]
    assert events[-1].data | {"session": None} == {"action": "stopped", "session": None, "name": "Boiling point",
                                                   "by": "ms-lan", "rows": 3, "duration_s": 9.0}
    with pytest.raises(SessionError, match="stopped already"):
        sessions.stop(session.id, by="ms-lan")


async def test_a_running_session_goes_on_recording_after_a_restart(outbox: Outbox, tmp_path: Path) -> None:
    folder = tmp_path / "sessions"
    first = service(folder)
    pipe = Pipeline(outbox, Clock("always"), DEVICES, rules=[first.stage])
    session = first.start("Overnight fridge", ["probe-c"], by="ms-lan", now=T0)
    for i in range(3):
        await pipe.submit(Reading("probe-c", {"temperature": 4.0 + i}, ts=T0 + i))
    first._files[session.id].flush()  # what the service's task does every second
    again = service(folder)  # a restart (power cut): metadata and rows are on disk
    assert again.get(session.id) is not None and again.get(session.id).running  # type: ignore[union-attr]
    assert again.get(session.id).rows == 3  # type: ignore[union-attr]
    pipe = Pipeline(outbox, Clock("always"), DEVICES, rules=[again.stage])
    record = await pipe.submit(Reading("probe-c", {"temperature": 7.5}, ts=T0 + 10))
    assert record is not None and record["session"] == session.id
    with pytest.raises(SessionError, match="already recording: probe-c in 'Overnight fridge'"):
        again.start("Other", ["probe-c"], by="x")
    assert [v["temperature"] for _, _, v in again.rows(session.id)] == [4.0, 5.0, 6.0, 7.5]


async def test_limits_refusals_and_commands(outbox: Outbox, tmp_path: Path) -> None:
    sessions = service(tmp_path / "s", max_rows=100, keep=2)
    pipe = Pipeline(outbox, Clock("always"), DEVICES, rules=[sessions.stage])
    with pytest.raises(SessionError, match="no device 'nope'"):
        sessions.start("x", ["nope"], by="t")
    with pytest.raises(ValueError, match="1 to 80 printable"):
        StartArgs(name="\x07bell", devices=["probe-a"])
    handlers = sessions.commands()
    started = await handlers["sessions.start"].handler(StartArgs(name="Many", devices=["probe-a"], by="central"))
    for i in range(120):
        await pipe.submit(Reading("probe-a", {"v": i}, ts=T0 + i))
    stopped = await handlers["sessions.stop"].handler(StopArgs(session=started["id"], by="central"))
    assert (stopped["rows"], stopped["rows_dropped"], stopped["running"]) == (100, 20, False)
    for i, name in enumerate(("Second", "Third"), start=1):
        s = sessions.start(name, ["probe-b"], by="t", now=time.time() + 10 * i)
        sessions.stop(s.id, by="t", now=time.time() + 10 * i + 5)
    assert [s.name for s in sessions.listing()] == ["Third", "Second"], "the oldest finished session was deleted"
    assert not list((tmp_path / "s").glob(f"{started['id']}*"))
    assert sessions.status() == {"running": [], "sessions": 2, "rows": 0}


async def test_a_row_cut_short_by_a_kill_is_dropped_and_recording_goes_on_cleanly(outbox: Outbox,
                                                                                 tmp_path: Path) -> None:
    folder = tmp_path / "sessions"
    first = service(folder)
    pipe = Pipeline(outbox, Clock("always"), DEVICES, rules=[first.stage])
    session = first.start("Cooling curve", ["probe-a"], by="ms-lan", now=T0)
    for i in range(3):
        await pipe.submit(Reading("probe-a", {"temperature": 30.0 - i}, ts=T0 + i))
    first._files[session.id].flush()
    rows_file = folder / f"{session.id}.jsonl"
    with rows_file.open("a") as fh:  # kill -9 in the middle of writing the fourth row
        fh.write('[1796000003000,"probe-a",{"tempe')
    again = service(folder)
    assert again.get(session.id).rows == 3  # type: ignore[union-attr]
    pipe = Pipeline(outbox, Clock("always"), DEVICES, rules=[again.stage])
    await pipe.submit(Reading("probe-a", {"temperature": 26.5}, ts=T0 + 10))
    again._files[session.id].flush()
    assert [v["temperature"] for _, _, v in again.rows(session.id)] == [30.0, 29.0, 28.0, 26.5]
    assert rows_file.read_text().count("\n") == 4 and again.get(session.id).rows == 4  # type: ignore[union-attr]


async def test_start_and_stop_events_not_in_the_outbox_when_the_gateway_dies_are_sent_after_the_restart(
        outbox: Outbox, tmp_path: Path) -> None:
    """Central finds a session from its start and stop events: kill -9 between starting (or stopping) and the
    service's task putting them in the outbox must not lose them."""
    folder = tmp_path / "sessions"
    first = service(folder)
    session = first.start("Titration", ["probe-a", "probe-b"], by="ms-lan", now=T0)  # its task never runs
    again = service(folder)  # the restart
    events = again.take_events()
    assert [(e.device, e.data["action"], e.ts) for e in events] == [
        ("probe-a", "started", T0), ("probe-b", "started", T0)]
    again.stop(session.id, by="ms-lan", now=T0 + 30)  # stopped; dies again before sending
    third = service(folder)
    stopped = third.take_events()
    assert [(e.device, e.data["action"], e.data["duration_s"]) for e in stopped] == [
        ("probe-a", "stopped", 30.0), ("probe-b", "stopped", 30.0)]
    assert service(folder).take_events() == []  # sent once: nothing left after another restart
    assert "unsent" not in third.get(session.id).meta()  # type: ignore[union-attr]

    # the service's own task sends what is queued and then marks it sent on disk
    fourth = service(folder)
    other = fourth.start("Pendulum", ["probe-c"], by="ms-lan", now=T0 + 60)
    pipe = Pipeline(outbox, Clock("always"), DEVICES, rules=[fourth.stage])
    committed: list[dict] = []

    async def emit(item: Reading) -> dict | None:
        record = await pipe.submit(item)
        committed.append(record or {})
        return record

    task = asyncio.create_task(fourth.run(emit))
    try:
        await wait_for_async(lambda: committed, 10, "the start event committed")
    finally:
        task.cancel()
    assert committed[0]["type"] == "session" and committed[0]["data"]["session"] == other.id
    assert service(folder).take_events() == []


async def test_stopping_the_service_as_it_wakes_up_stops_it(tmp_path: Path) -> None:
    """A cancellation that meets the wake-up must not be lost (Python 3.11's ``asyncio.wait_for`` drops it,
    gh-86296), or stopping the gateway waits for ever."""
    sessions = service(tmp_path / "sessions")

    async def emit(item: object) -> None:
        return None

    await assert_stops_when_cancelled_as_it_wakes(lambda: sessions.run(emit),
                                                  lambda: getattr(sessions, "_wakeup", None))
