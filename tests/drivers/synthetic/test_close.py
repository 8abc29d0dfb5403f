"""A synthetic device says ``stopped`` once closed, as every other driver does (issue 13, defect 5)."""

from __future__ import annotations

import asyncio

from edugate.drivers.base import DeviceState
from edugate.drivers.synthetic.driver import SyntheticDeviceConfig, SyntheticDriver
from tests.drivers.fakes import FakeEmit


async def test_closed_after_running_it_is_stopped() -> None:
    driver = SyntheticDriver(SyntheticDeviceConfig.model_validate({"id": "sim-1", "driver": "synthetic",
                                                                   "interval_s": 0.01}))
    emit = FakeEmit()
    task = asyncio.create_task(driver.run(emit))
    await emit.next()
    await emit.next()
    assert driver.health.state is DeviceState.ONLINE
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await driver.close()
    assert driver.health.state is DeviceState.STOPPED
