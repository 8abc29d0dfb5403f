"""Read Device Identification (function 43/14) as the asset registry's identity source: the driver asks the
simulator (a real pymodbus server over TCP) once and sends a ``device_info`` event; a device without it is noted
and polled as before."""

from __future__ import annotations

import asyncio
import logging

import pytest

from edugate.contract.records import Event, Item, Reading
from edugate.drivers.modbus.driver import ModbusDeviceConfig, ModbusDriver, device_info
from edugate.simulators.modbus import ModbusSimulator
from tests.helpers import wait_for_async


def config(port: int, **extra: object) -> ModbusDeviceConfig:
    return ModbusDeviceConfig.model_validate({"id": "fridge", "driver": "modbus", "host": "127.0.0.1", "port": port,
                                              "unit": 1, "profile": "lab-th", "poll_interval_s": 0.05,
                                              "timeout_s": 0.5, **extra})


async def run(driver: ModbusDriver, condition: object, what: str) -> list[Item]:
    items: list[Item] = []

    async def emit(item: Item) -> None:
        items.append(item)

    task = asyncio.create_task(driver.run(emit))
    try:
        await wait_for_async(lambda: condition(items), 10, what)  # type: ignore[operator]
        polls = sum(isinstance(i, Reading) for i in items)  # a few polls more: still one device_info
        await wait_for_async(lambda: sum(isinstance(i, Reading) for i in items) >= polls + 3, 10, "more readings")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await driver.close()
    return items


async def test_identity_is_asked_once_and_sent_as_device_info() -> None:
    async with ModbusSimulator({1: "lab-th"}, drift=False, identity={
            "VendorName": "Sonbest", "ProductCode": "SM1910B", "MajorMinorRevision": "V2.3",
            "ModelName": "XY-MD02"}) as sim:
        items = await run(ModbusDriver(config(sim.port, identify=True)),
                          lambda items: [i for i in items if isinstance(i, Event)], "device_info")
    [info] = [i for i in items if isinstance(i, Event)]
    assert info.type == "device_info" and info.device == "fridge"
    assert info.data == {"protocol": "modbus", "make": "Sonbest", "product_code": "SM1910B", "firmware": "V2.3",
                         "model": "XY-MD02"}
    assert sum(isinstance(i, Reading) for i in items) > 1


async def test_without_identify_nothing_is_asked() -> None:
    async with ModbusSimulator({1: "lab-th"}, drift=False) as sim:
        items = await run(ModbusDriver(config(sim.port)),
                          lambda items: sum(isinstance(i, Reading) for i in items) >= 3, "readings")
    assert not [i for i in items if isinstance(i, Event)]


async def test_a_device_without_identification_is_polled_as_before(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "edugate.drivers.modbus")
    async with ModbusSimulator({1: "lab-th"}, drift=False, identity={}) as sim:
        driver = ModbusDriver(config(sim.port, identify=True))
        items = await run(driver, lambda items: sum(isinstance(i, Reading) for i in items) >= 3, "readings")
    assert not [i for i in items if isinstance(i, Event)]
    assert "answered without a vendor, product or revision" in caplog.text, caplog.text


def test_device_info_from_objects() -> None:
    assert device_info({0: b"ACME\x00", 1: b"P-1", 2: b"1.0", 4: b"Air sensor"}) == {
        "make": "ACME", "product_code": "P-1", "firmware": "1.0", "model": "Air sensor"}
    assert device_info({1: b"P-1"}) == {"product_code": "P-1", "model": "P-1"}
    assert device_info({}) == {}
    assert device_info({0: b"x" * 300})["make"] == "x" * 64
