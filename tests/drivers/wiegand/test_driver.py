"""The Wiegand driver, fed timestamped GPIO edges by ``simulators.wiegand.FakeWiegandReader``.

Only the edge source and the output lines are fake; frame assembly, decoding,
reopening, the card-reader base and the feedback patterns are the real code.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import AsyncIterator
from typing import Any

import pytest

from edugate.common.privacy import Pseudonymizer
from edugate.contract.records import Event
from edugate.drivers.base import DeviceState, DriverContext
from edugate.drivers.registry import driver_class
from edugate.drivers.wiegand.driver import GpiodEdgeSource, WiegandConfig, WiegandDriver
from edugate.simulators.wiegand import FakeGpioOutput, FakeWiegandReader
from tests.drivers.fakes import FakeEmit, until

KEY = bytes(range(32, 64))
PSEUDO = Pseudonymizer(KEY)
LED, BEEPER = 22, 23
FACILITY, NUMBER = 42, 31337
UID = bytes([FACILITY]) + NUMBER.to_bytes(2, "big")


def config(**options: Any) -> WiegandConfig:
    fields: dict[str, Any] = {"id": "gate-1", "driver": "wiegand", "d0_line": 17, "d1_line": 27,
                              "led_line": LED, "beeper_line": BEEPER, "reopen_max_s": 0.05, "role": "door"}
    return WiegandConfig.model_validate(fields | options)


@contextlib.asynccontextmanager
async def running(cfg: WiegandConfig, emit: FakeEmit | None = None
                  ) -> AsyncIterator[tuple[WiegandDriver, FakeWiegandReader, FakeGpioOutput, FakeEmit]]:
    reader, outputs = FakeWiegandReader(), FakeGpioOutput()
    driver = WiegandDriver(cfg, edge_source_factory=reader.open, output_factory=outputs.open)
    driver.ctx = DriverContext(pseudonymize=PSEUDO)
    emit = emit or FakeEmit()
    task = asyncio.create_task(driver.run(emit), name="wiegand")
    try:
        await reader.wait_open()
        yield driver, reader, outputs, emit
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await driver.close()
        assert not reader.is_open, "the driver left the lines requested"


def test_registered_as_wiegand() -> None:
    assert driver_class("wiegand") is WiegandDriver


def test_config_rejects_shared_lines() -> None:
    with pytest.raises(ValueError, match="d1_line and d0_line are both line 17"):
        config(d1_line=17)
    with pytest.raises(ValueError, match="beeper_line and led_line are both line 5"):
        config(led_line=5, beeper_line=5)
    assert config(led_line=None, beeper_line=None).output_lines == []


async def test_a_card_becomes_one_pseudonymous_tap_and_repeats_are_debounced() -> None:
    async with running(config(debounce_s=60)) as (driver, reader, _, emit):
        await reader.present26(FACILITY, NUMBER)
        tap = await emit.next()
        assert isinstance(tap, Event) and tap.type == "card_tap" and tap.device == "gate-1"
        assert tap.data == {"card": PSEUDO(UID), "role": "door", "direction": "in"}
        await reader.present26(FACILITY, NUMBER)
        await until(lambda: driver.health.counters.get("debounced") == 1)
        await reader.present34(0xDEADBEEF)
        other = await emit.next()
        assert other.data["card"] == PSEUDO(bytes.fromhex("DEADBEEF"))
        assert len(emit.taps()) == 2
        assert driver.health.state is DeviceState.ONLINE


@pytest.mark.parametrize(("damage", "reason"), [
    ({"corrupt_parity": True}, "parity"),
    ({"drop_bit": 7}, "bit_count"),
    ({"both_lines_at": 9}, "both_lines"),
])
async def test_a_bad_frame_is_counted_and_the_next_card_works(damage: dict[str, Any], reason: str,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="edugate.drivers.wiegand.driver")
    async with running(config()) as (driver, reader, _, emit):
        await reader.present26(FACILITY, NUMBER, **damage)
        await until(lambda: driver.health.counters.get("bad_frames") == 1)
        assert driver.health.counters[f"bad_frames.{reason}"] == 1
        assert driver.health.state is DeviceState.ONLINE  # a bad frame is not a dead reader
        await reader.present26(FACILITY, NUMBER)
        tap = await emit.next()
        assert tap.data["card"] == PSEUDO(UID)
        assert len(emit.taps()) == 1
    assert any("gate-1: Wiegand frame rejected" in r.getMessage() for r in caplog.records)


async def test_noise_glitches_are_rejected() -> None:
    async with running(config()) as (driver, reader, _, emit):
        await reader.present26(FACILITY, NUMBER, noise=2)
        await until(lambda: driver.health.counters.get("bad_frames") == 1)
        await reader.present_bits([1])  # a lone glitch between cards
        await until(lambda: driver.health.counters.get("bad_frames") == 2)
        await reader.present26(FACILITY, NUMBER)
        await emit.next()
        assert not emit.items[1:]


async def test_pulse_width_check_catches_glitches() -> None:
    async with running(config(check_pulse_width=True)) as (driver, reader, _, emit):
        await reader.present_bits([0], noise=0)  # a real-looking 50 µs pulse: a 1-bit frame
        await until(lambda: driver.health.counters.get("bad_frames.bit_count") == 1)
        reader.interval_ns = 5_000_000  # a slow reader: 5 ms per bit; glitches land far from bits
        await reader.present26(FACILITY, NUMBER, noise=1)
        await until(lambda: driver.health.counters.get("bad_frames") == 2)
        assert driver.health.counters.get("bad_frames.pulse_short") == 1
        await reader.present26(FACILITY, NUMBER)
        assert (await emit.next()).data["card"] == PSEUDO(UID)


async def test_lost_chip_goes_offline_and_comes_back() -> None:
    async with running(config()) as (driver, reader, _, emit):
        reader.unplug()
        await until(lambda: driver.health.state is DeviceState.OFFLINE)
        assert "lost /dev/gpiochip0 lines 17/27: No such device" == driver.health.last_error
        await until(lambda: "cannot open" in (driver.health.last_error or ""))
        reader.plug()
        await reader.wait_open(opens=2)
        await until(lambda: driver.health.state is DeviceState.ONLINE)
        await reader.present26(FACILITY, NUMBER)
        assert (await emit.next()).data["card"] == PSEUDO(UID)
        assert driver.health.counters["disconnects"] == 1


async def test_feedback_follows_the_durable_event() -> None:
    emit = FakeEmit(delay_s=0.03)
    async with running(config(), emit) as (_, reader, outputs, _):
        await reader.present26(FACILITY, NUMBER)
        await emit.next()
        await until(lambda: len(outputs.transitions) == 4)  # LED on, beep on, beep off, LED off
        committed = emit.returned_at[0]
        assert all(t >= committed for t, _, _ in outputs.transitions)
        assert [(line, on) for _, line, on in outputs.transitions] == [
            (LED, True), (BEEPER, True), (BEEPER, False), (LED, False)]
        first = outputs.transitions[0][0]
        assert first - committed < 0.05  # feedback starts at once
        beep = outputs.transitions[2][0] - outputs.transitions[1][0]
        assert 0.08 <= beep < 0.3


async def test_deny_beeps_three_times_without_the_led() -> None:
    async with running(config(), FakeEmit(decision="deny")) as (_, reader, outputs, emit):
        await reader.present26(FACILITY, NUMBER)
        await emit.next()
        await until(lambda: len(outputs.transitions) == 6)
        assert outputs.on_times(LED) == []
        assert len(outputs.on_times(BEEPER)) == 3
        assert outputs.state == {LED: False, BEEPER: False}


async def test_broken_feedback_lines_do_not_lose_taps(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="edugate.drivers.wiegand.driver")
    async with running(config(debounce_s=0)) as (driver, reader, outputs, emit):
        outputs.fail = OSError(19, "No such device")
        await reader.present26(FACILITY, NUMBER)
        await emit.next()
        await until(lambda: driver.health.counters.get("feedback_errors") == 1)
        outputs.fail = None
        await reader.present26(FACILITY, NUMBER)
        await emit.next()
        await until(lambda: outputs.on_times(LED))
    assert any("could not signal accepted" in r.getMessage() for r in caplog.records)


async def test_no_feedback_lines_configured() -> None:
    async with running(config(led_line=None, beeper_line=None)) as (_, reader, outputs, emit):
        await reader.present26(FACILITY, NUMBER)
        await emit.next()
        assert outputs.opens == 0


async def test_the_card_number_never_reaches_the_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    facility, number = 201, 48879
    uid = bytes([facility]) + number.to_bytes(2, "big")
    forms = {str(number), uid.hex(), uid.hex().upper(), str(int.from_bytes(uid, "big")), f"{facility}:{number}"}
    async with running(config()) as (driver, reader, _, emit):
        await reader.present26(facility, number)
        await emit.next()
        await reader.present26(facility, number, corrupt_parity=True)
        await reader.present26(facility, number, drop_bit=3)
        await until(lambda: driver.health.counters.get("bad_frames") == 2)
        reader.unplug()
        await until(lambda: driver.health.state is DeviceState.OFFLINE)
    text = "\n".join(f"{r.getMessage()} {r.exc_text or ''}" for r in caplog.records)
    text += repr(driver.health.as_dict())
    for form in forms:
        assert form not in text


async def test_missing_gpiod_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "gpiod", None)
    driver = WiegandDriver(config())
    driver.ctx = DriverContext(pseudonymize=PSEUDO)
    task = asyncio.create_task(driver.run(FakeEmit()))
    try:
        await until(lambda: driver.health.last_error is not None)
        assert driver.health.state is DeviceState.OFFLINE
        assert "pip install 'gpiod>=2'" in (driver.health.last_error or "")
        assert not task.done()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def test_real_gpiod_on_a_missing_chip_raises_oserror(tmp_path: Any) -> None:
    pytest.importorskip("gpiod", reason="libgpiod bindings not installed")
    with pytest.raises(OSError):
        GpiodEdgeSource(str(tmp_path / "gpiochip9"), 17, 27)
