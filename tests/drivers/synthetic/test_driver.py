"""The synthetic driver: readings with a counter at a steady rate, events every N readings, no hardware."""

from __future__ import annotations

import asyncio

import pytest
from pydantic import ValidationError

from edugate.contract.records import Event, Reading
from edugate.drivers.base import DeviceState
from edugate.drivers.synthetic.driver import SyntheticDeviceConfig, SyntheticDriver
from tests.drivers.fakes import FakeEmit


def _driver(**options: object) -> SyntheticDriver:
    return SyntheticDriver(SyntheticDeviceConfig.model_validate({"id": "sim-1", "driver": "synthetic", **options}))


async def test_readings_count_up_at_the_set_rate_with_events_every_n() -> None:
    driver, emit = _driver(interval_s=0.02, values=2, event_every=3, event_type="synthetic.tick"), FakeEmit()
    task = asyncio.create_task(driver.run(emit))
    try:
        items = [await emit.next() for _ in range(8)]  # 6 readings and the 2 events after the 3rd and 6th
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    readings = [i for i in items if isinstance(i, Reading)]
    events = [i for i in items if isinstance(i, Event)]
    assert [r.values["n"] for r in readings] == [1, 2, 3, 4, 5, 6]
    assert all(set(r.values) == {"n", "v0", "v1"} for r in readings)
    assert [(e.type, e.data["n"]) for e in events] == [("synthetic.tick", 3), ("synthetic.tick", 6)]
    assert isinstance(items[3], Event) and isinstance(items[7], Event)  # each right after its reading
    times = [t for t, _ in emit.readings]
    assert times[-1] - times[0] >= 5 * 0.02 * 0.9  # paced, not fired back to back
    assert driver.health.state is DeviceState.ONLINE
    assert driver.health.counters["readings"] >= 6


def test_bad_options_are_refused() -> None:
    with pytest.raises(ValidationError):
        _driver(interval_s=0)
    with pytest.raises(ValidationError):
        _driver(event_type="Door Opened")
