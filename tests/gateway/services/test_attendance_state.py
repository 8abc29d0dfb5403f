"""The attendance tallies' state file is written off the event loop (a worker thread), coalesced (at most one
write under way and one pending, of the latest state), and flushed when the service stops. The worker's write
is held on an event here, so that taps meet a write in progress every time."""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path
from typing import Any

import pytest

from edugate.contract.records import Event
from edugate.gateway.services.attendance import Attendance
from edugate.gateway.services.state_writer import StateWriter
from tests.gateway.services.cards import TZ, local
from tests.gateway.services.test_attendance import TIMETABLE

READERS = {"r10a": "class-10a"}


def tap_record(n: int) -> dict[str, Any]:
    return {"kind": "event", "device": "r10a", "ts": int(local(7, 10).timestamp() * 1000) + n, "synced": True,
            "type": "card_tap", "data": {"card": f"p:{n:06x}", "role": "attendance", "direction": "in"}}


class HeldWrites:
    """Holds each write in the worker thread until the test lets it go; counts the writes begun."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.started = threading.Event()
        self.go_on = threading.Event()
        self.begun = 0
        self.threads: set[str] = set()
        write = StateWriter._write

        def held(writer: StateWriter, document: Any) -> None:
            self.begun += 1
            self.threads.add(threading.current_thread().name)
            self.started.set()
            assert self.go_on.wait(30), "the test never let the write go on"
            write(writer, document)

        monkeypatch.setattr(StateWriter, "_write", held)


def temporary_files(folder: Path) -> list[Path]:
    return list(folder.glob("*.tmp"))


def cards_in(state: Path) -> set[str]:
    return {card for _, _, _, cards in json.loads(state.read_text())["tallies"] for card in cards}


async def test_taps_during_a_write_make_one_more_write_of_the_latest_state(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    writes = HeldWrites(monkeypatch)
    state = tmp_path / "attendance.json"
    att = Attendance(TIMETABLE, TZ, READERS, state_file=state)
    att.stage(tap_record(0))  # returns at once: the write runs in a worker thread
    assert await asyncio.to_thread(writes.started.wait, 30)
    assert not state.exists(), "the tap waited for nothing: its write is still being held"
    for n in range(1, 200):  # 199 more new cards while the first write is on its way
        att.stage(tap_record(n))
    await asyncio.sleep(0)  # (the loop may run the writer's task: still nothing more may start)
    assert writes.begun == 1, "one write at a time"
    writes.go_on.set()
    await att.flush()
    assert writes.begun == 2 and att.writer is not None and att.writer.writes == 2, "199 taps, one more write"
    assert cards_in(state) == {f"p:{n:06x}" for n in range(200)}
    assert threading.current_thread().name not in writes.threads, "written off the event loop's thread"
    assert not temporary_files(tmp_path), "the temporary file was renamed over the state file"


async def test_stopping_the_service_flushes_the_pending_write(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    writes = HeldWrites(monkeypatch)
    state = tmp_path / "attendance.json"
    att = Attendance(TIMETABLE, TZ, READERS, state_file=state)

    async def emit(event: Event) -> None:
        pass

    run = asyncio.create_task(att.run(emit))
    att.stage(tap_record(0))
    assert await asyncio.to_thread(writes.started.wait, 30)
    att.stage(tap_record(1))  # pending behind the write under way
    run.cancel()  # the gateway stops
    await asyncio.sleep(0)
    assert not run.done(), "the service waits for its state file before it ends"
    writes.go_on.set()
    await asyncio.gather(run, return_exceptions=True)
    assert run.cancelled()
    again = Attendance(TIMETABLE, TZ, READERS, state_file=state)
    assert {c for t in again.tallies.values() for c in t.cards} == {"p:000000", "p:000001"}


async def test_a_state_file_that_cannot_be_written_is_logged_and_taps_go_on(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    att = Attendance(TIMETABLE, TZ, READERS, state_file=blocker / "attendance.json")
    record = att.stage(tap_record(0))
    assert record is not None and record["data"]["period"] == "P1"
    await att.flush()
    assert f"attendance state {blocker / 'attendance.json'} cannot be written" in caplog.text
    att.stage(tap_record(1))
    await att.flush()
    assert att.writer is not None and att.writer.writes == 0


def test_without_an_event_loop_the_file_is_written_at_once(tmp_path: Path) -> None:
    state = tmp_path / "attendance.json"
    att = Attendance(TIMETABLE, TZ, READERS, state_file=state)
    att.stage(tap_record(0))
    assert cards_in(state) == {"p:000000"}
