"""Stopping the Modbus driver while a request is outstanding: the cancellation must end the task, also when it
meets the device's answer in the same turn of the event loop.

On Python 3.11 ``asyncio.wait_for`` (which pymodbus awaits every response with) returns the result, and drops
the cancellation, when the awaited future is already done as the cancellation is delivered. The tests make
exactly that happen (the task is cancelled from pymodbus's receive hook, just before the answer resolves the
request's future), against a real pymodbus server over TCP (the project's simulator, in this process).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from edugate.contract.records import Item, Reading
from edugate.drivers.modbus.driver import ModbusDeviceConfig, ModbusDriver, _Link
from edugate.simulators.modbus import ModbusSimulator
from tests.helpers import wait_for_async


def config(port: int) -> ModbusDeviceConfig:
    return ModbusDeviceConfig.model_validate({"id": "fridge", "driver": "modbus", "host": "127.0.0.1", "port": port,
                                              "unit": 1, "profile": "lab-th", "poll_interval_s": 0.02,
                                              "timeout_s": 2.0})


def cancel_on_next_answer(link: _Link, task: asyncio.Task[object]) -> Callable[[], bool]:
    """Cancel ``task`` as the next answer comes in (before pymodbus resolves the request with it); returns a
    function saying whether that happened."""
    ctx = link.client.ctx
    trace = ctx.trace_packet
    fired: list[bool] = []

    def hook(sending: bool, data: bytes) -> bytes:
        data = trace(sending, data)
        if not sending and not fired:
            fired.append(True)
            task.cancel()
        return data

    ctx.trace_packet = hook
    return lambda: bool(fired)


async def test_cancelling_the_driver_as_an_answer_arrives_stops_it_promptly() -> None:
    async with ModbusSimulator({1: "lab-th"}, drift=False) as sim:
        driver = ModbusDriver(config(sim.port))
        items: list[Item] = []

        async def emit(item: Item) -> None:
            items.append(item)

        task: asyncio.Task[None] = asyncio.create_task(driver.run(emit))
        try:
            await wait_for_async(lambda: any(isinstance(i, Reading) for i in items), 10, "a first reading")
            assert driver._endpoint is not None
            fired = cancel_on_next_answer(driver._endpoint._links[0], task)  # type: ignore[arg-type]
            done, _ = await asyncio.wait({task}, timeout=5)
            assert fired(), "the driver sent no request"
            assert task in done, "the driver kept polling after it was cancelled (the cancellation was lost)"
            assert task.cancelled()
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await driver.close()


async def test_a_request_cancelled_as_its_answer_arrives_raises_cancelled() -> None:
    """One level down: the request itself re-raises the cancellation instead of returning the registers."""
    async with ModbusSimulator({1: "lab-th"}, drift=False) as sim:
        link = _Link(config(sim.port))
        try:
            await link.read("input", 1, 2, 1, 2.0)  # connected, and the device answers
            outcome: list[object] = []

            async def request() -> None:
                try:
                    outcome.append(await link.read("input", 1, 2, 1, 2.0))
                except asyncio.CancelledError:
                    outcome.append("cancelled")
                    raise

            task = asyncio.create_task(request())
            fired = cancel_on_next_answer(link, task)  # type: ignore[arg-type]
            await asyncio.gather(task, return_exceptions=True)
            assert fired()
            assert outcome == ["cancelled"], f"the request swallowed its cancellation and returned {outcome}"
            assert task.cancelled()
        finally:
            link.close()
