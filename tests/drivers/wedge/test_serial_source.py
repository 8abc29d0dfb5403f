"""The wedge driver's serial source (``source: serial``): a desk reader switched to its virtual serial port,
played by ``simulators.wedge_serial`` on a real pseudo-terminal; the driver opens it with pyserial. Lines are
decoded as the keyboard path decodes key strokes; bad lines are counted; an unplugged reader is reopened."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from edugate.common.privacy import Pseudonymizer
from edugate.contract.records import Event
from edugate.drivers.base import DeviceState, DriverContext
from edugate.drivers.wedge.driver import BadRead, LineDecoder, WedgeConfig, WedgeDriver
from edugate.simulators.wedge_serial import WedgeSerialSimulator, card_text
from tests.drivers.fakes import FakeEmit, until

PSEUDO = Pseudonymizer(bytes(range(32)))
UID = bytes.fromhex("04A22B1C")


def config(port: Path, **options: Any) -> WedgeConfig:
    return WedgeConfig.model_validate({"id": "desk-1", "driver": "wedge", "source": "serial", "port": str(port),
                                       "reopen_max_s": 0.1, "role": "library", "debounce_s": 0} | options)


@contextlib.asynccontextmanager
async def running(cfg: WedgeConfig, sim: WedgeSerialSimulator) -> AsyncIterator[tuple[WedgeDriver, FakeEmit]]:
    driver = WedgeDriver(cfg)
    driver.ctx = DriverContext(pseudonymize=PSEUDO)
    emit = FakeEmit()
    task = asyncio.create_task(driver.run(emit), name="wedge-serial")
    try:
        await until(lambda: driver.health.state == DeviceState.ONLINE, "the port open", 10)
        yield driver, emit
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await driver.close()
        assert driver.port is not None and driver.port.link is None, "the driver left the port open"


def lines(data: bytes) -> list[str | str]:
    return [x if isinstance(x, str) else f"bad:{x.reason}" for x in LineDecoder().feed(data)]


def test_the_line_decoder_cuts_at_cr_or_lf_and_rejects_bad_lines() -> None:
    assert lines(b"04A22B1C\r\n0472621572\nLIB-0042 7\r\r\n") == ["04A22B1C", "0472621572", "LIB-0042 7"]
    assert lines(b"12\x1b34\r\n" + b"9" * 200 + b"\r\n\xff1\n") == ["bad:unexpected_byte", "bad:too_long",
                                                                    "bad:unexpected_byte"]
    decoder = LineDecoder()
    assert decoder.feed(b"0472") == [] and decoder.pending
    [cut] = decoder.flush(0.5)
    assert isinstance(cut, BadRead) and cut.reason == "incomplete" and not decoder.pending
    assert "0472" not in str(cut)


def test_the_source_needs_its_own_option(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="port is required with source: serial"):
        WedgeConfig.model_validate({"id": "d", "driver": "wedge", "source": "serial"})
    with pytest.raises(ValidationError, match="device_path applies to source: keyboard only"):
        config(tmp_path / "tty", device_path="/dev/input/event3")
    with pytest.raises(ValidationError, match="device_path is required with source: keyboard"):
        WedgeConfig.model_validate({"id": "d", "driver": "wedge"})
    with pytest.raises(ValidationError, match="port applies to source: serial only"):
        WedgeConfig.model_validate({"id": "d", "driver": "wedge", "device_path": "/dev/input/e", "port": "/dev/x"})


async def test_cards_over_the_serial_port_bad_lines_counted_and_the_reader_reopened(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    cfg = config(tmp_path / "ttyDESK", format="decimal", uid_bytes=4, byte_order="little", key_timeout_s=0.2)
    async with WedgeSerialSimulator(cfg.port or "", format="decimal", byte_order="little") as sim, \
            running(cfg, sim) as (driver, emit):
        sim.tap(UID)
        tap = await emit.next()
        assert isinstance(tap, Event) and tap.type == "card_tap" and tap.data["card"] == PSEUDO(UID)
        sim.send_line("04A22B1C")  # the reader switched to hex by mistake
        sim.send_raw(b"\x00\xff\r\n")  # noise
        sim.send_partial("0472")  # cut off: dropped after key_timeout_s
        await until(lambda: driver.health.counters.get("bad_reads") == 3, "three bad lines")
        counters = driver.health.counters
        assert (counters["bad_reads.not_decimal"], counters["bad_reads.unexpected_byte"],
                counters["bad_reads.incomplete"]) == (1, 1, 1)
        assert driver.health.state == DeviceState.ONLINE, "a bad line leaves the reader online"

        sim.unplug()
        await until(lambda: driver.health.state == DeviceState.OFFLINE, "the reader offline", 10)
        sim.replug()
        await until(lambda: driver.health.state == DeviceState.ONLINE, "the reader back", 10)
        sim.tap(UID)
        again = await emit.next(within_s=10)
        assert isinstance(again, Event) and again.data["card"] == PSEUDO(UID)
        assert driver.health.counters["disconnects"] >= 1
    logged = caplog.text
    for form in (card_text(UID, "decimal", "little"), card_text(UID), "0472"):
        assert form not in logged, "a card number reached the log"
