"""Attendance checks in the attendance service: heads above taps, one card in two rooms too quickly.

Records go through a real pipeline and outbox; the classifiers run in onnxruntime on the model engine's worker
thread (method auto), and the rules with ``method: rule``.
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import Any

import pytest

from edugate.common.privacy import normalise_uid
from edugate.contract.records import Event, Item, Reading
from edugate.gateway.runtime.clock import Clock
from edugate.gateway.runtime.outbox import Outbox
from edugate.gateway.runtime.pipeline import Pipeline
from edugate.gateway.services import attendance_checks
from edugate.gateway.services.attendance import Attendance, TimetableConfig
from tests.gateway.services.cards import ALICE, BOB, KEY, TZ, P, local, tap
from tests.helpers import wait_for_async

PERIODS = [{"name": "P1", "start": "07:00", "end": "07:45"}, {"name": "P2", "start": "07:50", "end": "08:35"}]
ROOMS = {"r10a": "class-10a", "r10b": "class-10b", "cam-10a": "class-10a", "env-10b": "class-10b"}
READERS = {"r10a": "class-10a", "r10b": "class-10b"}
PLACES = {"class-10a": {"x": 0, "floor": 0}, "class-10b": {"x": 150, "floor": 2}}


def timetable(method: str = "auto") -> TimetableConfig:
    return TimetableConfig.model_validate({"days": ["mon", "tue", "wed", "thu", "fri"], "periods": PERIODS,
                                           "checks": {"method": method, "rooms": PLACES}})


def service(method: str = "auto") -> Attendance:
    return Attendance(timetable(method), TZ, READERS, head_devices={"cam-10a": "class-10a", "env-10b": "class-10b"})


def cards(n: int) -> list[str]:
    return [P(normalise_uid(f"04{i:08X}")) for i in range(n)]


async def class_period(pipe: Pipeline, reader: str, camera: str | None, estimate: str | None, heads: int,
                       tapping: list[str]) -> None:
    """P1 in one room: ``tapping`` cards tap before the start; ``heads`` people are seen all period."""
    for i, card in enumerate(tapping):
        await pipe.submit(tap(reader, card, "attendance", ts=local(6, 50).timestamp() + i))
    if estimate:  # the model stage reports the estimate when it changes
        await pipe.submit(Event(estimate, "occupancy", {"occupied": True, "people": heads, "model": "m",
                                                        "version": "v"}, ts=local(7, 3).timestamp()))
    for minute in range(0, 46) if camera else ():
        await pipe.submit(Reading(camera, {"people": heads}, ts=local(7, 0).timestamp() + 60 * minute))


@pytest.mark.parametrize("method", ["auto", "rule"])
async def test_heads_clearly_above_taps_are_flagged_and_honest_rooms_are_not(outbox: Outbox, method: str) -> None:
    att = service(method)
    await att.checks.load_models()  # type: ignore[union-attr]
    pipe = Pipeline(outbox, Clock("always"), ROOMS, rules=[att.stage])
    students = cards(60)
    # class 10A: 30 students + the teacher seen by a camera, 22 tapped; class 10B: 28 + 1 estimated, 28 tapped
    await class_period(pipe, "r10a", "cam-10a", None, 31, students[:22])
    await class_period(pipe, "r10b", None, "env-10b", 29, students[30:58])
    summaries = att.due(local(7, 46))
    found = await att.check(summaries)
    assert [(e.device, e.type) for e in found] == [("r10a", "attendance.untapped_heads")]
    data = found[0].data
    assert data["heads"] == 31.0 and data["taps"] == 22 and data["source"] == "camera"
    assert data["excess"] == 31 - 1 - 22 and data["method"] == ("model" if method == "auto" else "rule")
    assert (await pipe.submit(found[0]))["room"] == "class-10a"  # a valid event for the pipeline
    status = att.status()["checks"]
    assert status["untapped_heads"] == {"method": "model" if method == "auto" else "rule",
                                        "why_rule": None if method == "auto" else "method: rule",
                                        "checked": 2, "flagged": 1}
    if method == "auto":
        runner = att.status()["models"]["attendance-untapped-heads"]
        assert runner["loaded"] and runner["calls"] == 2 and len(runner["sha256"]) == 64


@pytest.mark.parametrize("method", ["auto", "rule"])
async def test_one_card_in_two_far_rooms_within_seconds_is_flagged(outbox: Outbox, method: str) -> None:
    att = service(method)
    pipe = Pipeline(outbox, Clock("always"), ROOMS, rules=[att.stage])
    events: list[Item] = []

    async def emit(item: Item) -> dict[str, Any] | None:
        events.append(item)
        return await pipe.submit(item)

    task = asyncio.create_task(att.run(emit))
    try:
        checks = att.checks
        assert checks is not None
        await wait_for_async(lambda: method == "rule" or checks.status()["models"], 10, "models loaded")
        t0 = local(6, 55).timestamp()
        await pipe.submit(tap("r10a", ALICE, "attendance", ts=t0))
        await pipe.submit(tap("r10b", ALICE, "attendance", ts=t0 + 20))  # 190 m in 20 s: another holder
        # Bob: late into P1 in 10A (07:30), then early for P2 in 10B (07:47): one holder walking
        await pipe.submit(tap("r10a", BOB, "attendance", ts=local(7, 30).timestamp()))
        await pipe.submit(tap("r10b", BOB, "attendance", ts=local(7, 47).timestamp()))
        await wait_for_async(lambda: att.status()["checks"]["card_shared"]["checked"] == 2, 10,
                             "both pairs checked")
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    [shared] = [e for e in events if isinstance(e, Event) and e.type == "attendance.card_shared"]
    assert shared.device == "r10b"
    assert shared.data["card"] == ALICE and shared.data["from_room"] == "class-10a"
    assert shared.data["distance_m"] == 190.0 and shared.data["seconds"] == 20.0
    assert shared.data["method"] == ("model" if method == "auto" else "rule")
    raw = "04A22B1C"
    assert raw not in repr(shared.data) and KEY.hex() not in repr(shared.data)  # pseudonyms only


def test_checks_are_off_without_their_section() -> None:
    att = Attendance(TimetableConfig.model_validate({"periods": PERIODS}), TZ, READERS)
    assert att.checks is None and "checks" not in att.status()
    with pytest.raises(ValueError, match="method"):
        TimetableConfig.model_validate({"periods": PERIODS, "checks": {"method": "magic"}})


async def test_a_corrupt_model_leaves_the_rule_running_and_says_why(outbox: Outbox, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "attendance"
    shutil.copytree(attendance_checks.MANIFEST.parent, folder, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    data = (folder / "untapped_heads.onnx").read_bytes()
    (folder / "untapped_heads.onnx").write_bytes(data[: len(data) // 2])  # truncated in place
    monkeypatch.setattr(attendance_checks, "MANIFEST", folder / "manifest.json")
    att = service()
    assert att.checks is not None
    await att.checks.load_models()
    status = att.checks.status()
    assert status["untapped_heads"]["method"] == "rule"
    assert "untapped_heads.onnx" in str(status["untapped_heads"]["why_rule"])
    assert status["card_shared"]["method"] == "model"  # the other check keeps its model
    pipe = Pipeline(outbox, Clock("always"), ROOMS, rules=[att.stage])
    await class_period(pipe, "r10a", "cam-10a", None, 31, cards(22))
    [found] = await att.check(att.due(local(7, 46)))
    assert found.data["method"] == "rule" and found.data["excess"] == 8
