"""RS-232 display control against simulated LG, Epson and BenQ devices on real ptys: the shipped profiles,
polling, identity, power/input commands, a refused command, garbage, a silent device, unplug and replug."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from pydantic import ValidationError

from edugate.contract.records import Event, Reading
from edugate.drivers.base import CommandError, DeviceState
from edugate.drivers.display_serial.driver import DisplaySerialConfig, DisplaySerialDriver
from edugate.drivers.display_serial.profile import Query, load_profile, parse_value
from edugate.simulators.display_serial import SerialDisplay
from tests.drivers.fakes import FakeEmit, until

# family -> (values while off, the input command's value, the input value after it, identity)
FAMILIES = {
    "lg-panel": ({"power": 0, "power_on": False, "volume": 30}, "hdmi2", "hdmi2", {"make": "LG"}),
    "epson-escvp21": ({"power": 0, "power_on": False, "lamp_hours": 2100, "errors": 0}, "lan", "lan",
                      {"make": "Epson", "serial": "X4KJ5678"}),
    "benq-projector": ({"power": 0, "power_on": False, "lamp_hours": 2100}, "hdmi2", "hdmi2",
                       {"make": "BenQ", "model": "MW560"}),
}


@asynccontextmanager
async def running(link: Path, profile: str, **options: object) -> AsyncIterator[tuple[DisplaySerialDriver, FakeEmit]]:
    cfg = DisplaySerialConfig.model_validate({"id": "room104-panel", "driver": "display-serial", "port": str(link),
                                              "profile": profile, "poll_interval_s": 1, "reply_timeout_s": 1,
                                              "reopen_max_s": 0.2, **options})
    driver, emit = DisplaySerialDriver(cfg), FakeEmit()
    task = asyncio.create_task(driver.run(emit))
    try:
        yield driver, emit
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await driver.close()
    assert driver.health.state is DeviceState.STOPPED


def last(emit: FakeEmit) -> dict:
    return dict(emit.readings[-1][1].values) if emit.readings else {}


@pytest.mark.parametrize("family", list(FAMILIES))
async def test_a_family_polled_identified_and_commanded(tmp_path: Path, family: str) -> None:
    off, input_arg, input_value, identity = FAMILIES[family]
    async with SerialDisplay(tmp_path / "ttyD", family) as device, running(device.link, family) as (driver, emit):
        info = await emit.next()
        assert isinstance(info, Event) and info.type == "device_info"
        assert info.data == {"protocol": family, **identity}
        reading = await emit.next()
        assert isinstance(reading, Reading) and dict(reading.values) == off
        assert driver.health.state is DeviceState.ONLINE
        assert await driver.command("power", {"value": "on"}) == {"command": "power", "value": "on", "result": "ok"}
        assert device.power == 1
        await until(lambda: last(emit).get("power_on") is True, "a reading with the power on")
        await driver.command("input", {"value": input_arg})
        await until(lambda: last(emit).get("input") == input_value, "the new input")
        with pytest.raises(CommandError, match="power takes on, off, not 'standby'"):
            await driver.command("power", {"value": "standby"})
        with pytest.raises(CommandError, match="accepts power, input, not 'freeze'"):
            await driver.command("freeze", {})
        await driver.command("power", {"value": "off"})
        await until(lambda: last(emit).get("power_on") is False, "off again")
        assert [e.type for e in emit.events] == ["device_info"]


async def test_a_refused_command_says_what_the_device_said(tmp_path: Path) -> None:
    async with SerialDisplay(tmp_path / "ttyD", "lg-panel") as device, \
            running(device.link, "lg-panel") as (driver, emit):
        await until(lambda: emit.readings, "a reading")
        with pytest.raises(CommandError, match=r"refused input hdmi1: b 01 NG90"):  # input while off: NG
            await driver.command("input", {"value": "hdmi1"})
        assert driver.health.counters["refused"] >= 1


async def test_garbage_is_counted_and_polling_goes_on(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async with SerialDisplay(tmp_path / "ttyD", "epson-escvp21") as device, \
            running(device.link, "epson-escvp21") as (driver, emit):
        await until(lambda: emit.readings, "a reading")
        device.garble(1)
        await until(lambda: driver.health.counters.get("garbled"), "the garbage counted")
        assert "not understood" in (driver.health.last_error or "")
        n = len(emit.readings)
        await until(lambda: len(emit.readings) > n + 1, "readings after the garbage")
        assert driver.health.state is DeviceState.ONLINE
    assert any("not understood" in r.message for r in caplog.records)


async def test_a_silent_device_and_an_unplugged_adapter(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    async with SerialDisplay(tmp_path / "ttyD", "benq-projector") as device, \
            running(device.link, "benq-projector") as (driver, emit):
        await until(lambda: emit.readings, "a reading")
        device.silent = True
        await until(lambda: driver.health.state is DeviceState.OFFLINE, "offline when it does not answer", within_s=10)
        assert "no reply within 1 s" in (driver.health.last_error or "")
        with pytest.raises(CommandError, match="is not reachable"):
            await driver.command("power", {"value": "on"})
        device.silent = False
        n = len(emit.readings)
        await until(lambda: len(emit.readings) > n, "readings once it answers", within_s=5)
        device.port.unplug()
        await until(lambda: driver.health.state is DeviceState.OFFLINE, "offline when unplugged")
        device.port.plug()
        n = len(emit.readings)
        await until(lambda: len(emit.readings) > n, "readings after the replug", within_s=5)
    assert sum("back online after" in r.message for r in caplog.records) == 2


def test_profiles_and_their_errors(tmp_path: Path) -> None:
    assert [q.name for q in load_profile("epson-escvp21").poll] == ["power", "lamp_hours", "input", "errors"]
    q = Query(name="power", send="x", reply="(?P<value>..)", map={"00": 0, "01": 1})
    assert parse_value(q, "01") == 1
    with pytest.raises(ValueError, match="'07' is not one of 00, 01"):
        parse_value(q, "07")
    with pytest.raises(ValueError, match="'zz' is not a hex number"):
        parse_value(Query(name="v", send="x", reply="(?P<value>..)", type="hex"), "zz")
    with pytest.raises(ValidationError, match="unknown display profile 'sony' \\(known: benq-projector, "
                                              "epson-escvp21, lg-panel"):
        DisplaySerialConfig.model_validate({"id": "p", "driver": "display-serial", "port": "/dev/ttyUSB0",
                                            "profile": "sony"})
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nreply_end: x\npoll:\n  - {name: power, send: 'a', reply: 'OK(\\d+'}\n")
    with pytest.raises(ValueError, match=r"bad.yaml is invalid: poll.0.reply: 'OK\(\\\\d\+' is not a valid regular"):
        load_profile(str(bad))
    bad.write_text("name: bad\nreply_end: x\npoll:\n  - {name: power, send: 'a', reply: 'OK'}\n")
    with pytest.raises(ValueError, match=r"needs a group \(\?P<value>...\)"):
        load_profile(str(bad))
