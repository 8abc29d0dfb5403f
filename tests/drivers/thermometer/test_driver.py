"""The serial thermometer against its simulator on a real pty: readings, bad lines, unplug and replug."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from edugate.contract.records import Reading
from edugate.drivers.base import DeviceState
from edugate.drivers.thermometer.codec import BadLine, ThermometerDecoder, parse_line
from edugate.drivers.thermometer.driver import ThermometerConfig, ThermometerDriver
from edugate.simulators.thermometer import ThermometerSimulator
from tests.drivers.fakes import FakeEmit, until

NAMES = {"T": "temperature", "H": "humidity"}


def test_lines_become_values_and_problems_say_where() -> None:
    decoder = ThermometerDecoder(NAMES)
    out = decoder.feed(b"T=21.50\r\nT=21.6,H=40\nX=1\r\nT=warm\r\nT\r\nT=nan\r\n\xff\xfe\r\nT=2")
    assert out[:2] == [{"temperature": 21.5}, {"temperature": 21.6, "humidity": 40.0}]
    assert [b.kind for b in out[2:] if isinstance(b, BadLine)] == ["unknown_key", "not_a_number", "syntax",
                                                                  "not_a_number", "noise"]
    assert decoder.pending
    assert decoder.flush(0.5) == [BadLine("partial", "3 characters, then no end of line within 0.5 s")]
    assert not decoder.pending and decoder.flush(0.5) == []
    assert decoder.feed(b"T=" + b"9" * 200 + b"\r\n") == [BadLine("length", "line longer than 120 characters; "
                                                                              "dropped")]
    assert parse_line(b"H=1,X=2", NAMES) == BadLine("unknown_key", "field 2: unknown key 'X' (known: H, T)")


@asynccontextmanager
async def running(link: Path, **options: object) -> AsyncIterator[tuple[ThermometerDriver, FakeEmit]]:
    cfg = ThermometerConfig.model_validate({"id": "lab1-probe", "driver": "thermometer", "port": str(link),
                                            "names": NAMES, "reopen_max_s": 0.2, **options})
    driver, emit = ThermometerDriver(cfg), FakeEmit()
    task = asyncio.create_task(driver.run(emit))
    try:
        yield driver, emit
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await driver.close()
    assert driver.health.state is DeviceState.STOPPED


async def test_each_line_is_one_reading(tmp_path: Path) -> None:
    async with ThermometerSimulator(tmp_path / "ttyTHERM") as probe, running(probe.link) as (driver, emit):
        await until(lambda: driver.port.link is not None, "the port to open")
        probe.send(T=21.5)
        probe.send(T=21.75, H=40.0)
        first, second = await emit.next(), await emit.next()
        assert isinstance(first, Reading) and first.device == "lab1-probe"
        assert first.values == {"temperature": 21.5}
        assert isinstance(second, Reading) and second.values == {"temperature": 21.75, "humidity": 40.0}
        assert driver.health.state is DeviceState.ONLINE
        assert driver.health.counters.get("bad_lines") is None


async def test_bad_lines_are_counted_logged_once_and_skipped(tmp_path: Path,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="edugate.drivers.thermometer.driver")
    async with ThermometerSimulator(tmp_path / "ttyTHERM") as probe, running(probe.link) as (driver, emit):
        await until(lambda: driver.port.link is not None, "the port to open")
        for _ in range(12):  # a burst of garbage: the log limiter lets 10 per minute through
            probe.send_raw(b"T=oops\r\n")
        probe.send(T=20.0)
        reading = await emit.next()
        assert isinstance(reading, Reading) and reading.values == {"temperature": 20.0}
        assert driver.health.counters["bad_lines.not_a_number"] == 12
        assert driver.health.state is DeviceState.ONLINE
    warnings = [r.getMessage() for r in caplog.records if "bad line" in r.getMessage()]
    assert len(warnings) == 10, warnings
    assert warnings[0] == (f"lab1-probe (thermometer on {probe.link}): bad line (not_a_number): "
                           "field 1 (T): not a number")


async def test_unplug_marks_offline_once_and_replug_recovers(tmp_path: Path,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="edugate.drivers.thermometer.driver")
    async with ThermometerSimulator(tmp_path / "ttyTHERM") as probe, running(probe.link) as (driver, emit):
        await until(lambda: driver.port.link is not None, "the port to open")
        probe.send(T=21.0)
        await emit.next()
        probe.port.unplug()
        await until(lambda: driver.health.state is DeviceState.OFFLINE, "the probe to go offline")
        assert "device disconnected" in (driver.health.last_error or "")
        await until(lambda: "cannot open the serial port" in (driver.health.last_error or ""), "a reopen to fail")
        probe.port.plug()
        await until(lambda: driver.port.link is not None, "the port to reopen")
        probe.send(T=22.0)
        reading = await emit.next()
        assert isinstance(reading, Reading) and reading.values == {"temperature": 22.0}
        assert driver.health.state is DeviceState.ONLINE
        assert driver.health.counters["outages"] == 1 and driver.outage.count == 1
    messages = [(r.levelno, r.getMessage()) for r in caplog.records]
    offline = [m for level, m in messages if level == logging.WARNING]
    assert len(offline) == 2, offline  # one when it was lost, one when the cause changed to "cannot open"
    assert offline[0].startswith(f"lab1-probe (thermometer on {probe.link}): device disconnected")
    assert any(level == logging.INFO and "back online after" in m for level, m in messages)
