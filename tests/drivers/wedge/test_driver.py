"""The keyboard-wedge driver, fed raw evdev events by ``simulators.wedge.FakeKeyboard``.

Only the event source is fake; the key decoder, the format interpretation,
reopening, the card-reader base (pseudonyms, debounce, the ``card_tap``
event) are the real code. Waits are on events and conditions, never fixed sleeps.
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
from edugate.drivers.wedge import evdev_keys as keys
from edugate.drivers.wedge.driver import BadRead, KeyDecoder, WedgeConfig, WedgeDriver, interpret
from edugate.simulators.wedge import FakeKeyboard, press_events, typing_events
from tests.drivers.fakes import FakeEmit, until

KEY = bytes(range(32))
PSEUDO = Pseudonymizer(KEY)
PATH = "/dev/input/by-id/usb-ACME_RFID_Reader-event-kbd"
UID_HEX = "04A22B1C"
UID = bytes.fromhex(UID_HEX)


def config(**options: Any) -> WedgeConfig:
    fields: dict[str, Any] = {"id": "door-1", "driver": "wedge", "device_path": PATH, "reopen_max_s": 0.05,
                              "role": "door"}
    return WedgeConfig.model_validate(fields | options)


@contextlib.asynccontextmanager
async def running(cfg: WedgeConfig) -> AsyncIterator[tuple[WedgeDriver, FakeKeyboard, FakeEmit]]:
    kb = FakeKeyboard(PATH)
    driver = WedgeDriver(cfg, source_factory=kb.open)
    driver.ctx = DriverContext(pseudonymize=PSEUDO)
    emit = FakeEmit()
    task = asyncio.create_task(driver.run(emit), name="wedge")
    try:
        await kb.wait_open()
        yield driver, kb, emit
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await driver.close()
        assert not kb.is_open, "the driver left the device open"


# ---------------------------------------------------------------- key codes and pure decoding


def test_key_codes_are_the_kernels() -> None:
    ecodes = pytest.importorskip("evdev.ecodes", reason="python-evdev not installed")
    assert (keys.EV_SYN, keys.EV_KEY, keys.EV_MSC, keys.MSC_SCAN) == (
        ecodes.EV_SYN, ecodes.EV_KEY, ecodes.EV_MSC, ecodes.MSC_SCAN)
    for name in ("KEY_ENTER", "KEY_KPENTER", "KEY_LEFTSHIFT", "KEY_RIGHTSHIFT"):
        assert getattr(keys, name) == getattr(ecodes, name), name
    for ch, code in keys.DIGIT_KEYS.items():
        assert code == getattr(ecodes, f"KEY_{ch}")
    for ch, code in keys.KEYPAD_KEYS.items():
        assert code == getattr(ecodes, f"KEY_KP{ch}")
    for ch, code in keys.LETTER_KEYS.items():
        assert code == getattr(ecodes, f"KEY_{ch.upper()}")
    names = {"-": "KEY_MINUS", ".": "KEY_DOT", "/": "KEY_SLASH", " ": "KEY_SPACE"}
    for ch, code in keys.PUNCTUATION_KEYS.items():
        assert code == getattr(ecodes, names[ch])


def decode(events: list[tuple[int, int, int]]) -> list[str | BadRead]:
    decoder, out = KeyDecoder(), []
    for event in events:
        try:
            text = decoder.feed(*event)
        except BadRead as exc:
            out.append(exc)
        else:
            if text is not None:
                out.append(text)
    return out


def test_typing_events_look_like_a_usb_reader() -> None:
    events = typing_events("1A")
    assert events[:3] == [(4, 4, 0x7001E), (1, 2, 1), (0, 0, 0)]  # MSC_SCAN '1', KEY_1 down, SYN
    assert (1, keys.KEY_LEFTSHIFT, 1) in events and (1, keys.KEY_LEFTSHIFT, 0) in events
    assert events[-3:] == [(4, 4, 0x70028), (1, 28, 0), (0, 0, 0)]  # Enter released


def test_decoder_reads_digits_letters_shift_and_keypad() -> None:
    assert decode(typing_events("04a22B1C")) == ["04a22B1C"]
    assert decode(typing_events("0012345678", keypad=True)) == ["0012345678"]
    assert decode(typing_events("LIB-0042.7/X Y")) == ["LIB-0042.7/X Y"]
    repeat = [(1, 2, 1), (1, 2, 2), (1, 2, 2), (1, 2, 0), *press_events(keys.KEY_ENTER)]
    assert decode(repeat) == ["1"]  # auto-repeat is not typing


@pytest.mark.parametrize(("events", "reason"), [
    (press_events(keys.KEY_ENTER), "empty"),
    (typing_events("12", enter=False) + press_events(15, keys.KEY_ENTER), "unexpected_key"),  # Tab
    (typing_events("12", enter=False) + press_events(39, keys.KEY_ENTER), "unexpected_key"),  # ';'
    ([(1, 42, 1), *press_events(2), (1, 42, 0), *press_events(keys.KEY_ENTER)], "unexpected_key"),  # '!'
    (typing_events("7" * 200), "too_long"),
])
def test_decoder_rejects_bad_sequences_then_reads_the_next(events: list[Any], reason: str) -> None:
    out = decode(events + typing_events("99"))
    assert isinstance(out[0], BadRead) and out[0].reason == reason
    assert out[1:] == ["99"]


def test_rejections_never_quote_the_read() -> None:
    (err,) = decode(typing_events("1234", enter=False) + press_events(39, keys.KEY_ENTER))  # ';'
    assert "1234" not in str(err) and "withheld" in str(err)
    (err,) = decode(typing_events("1234", enter=False) + press_events(15, keys.KEY_ENTER))
    assert "Tab" in str(err)


def test_interpret_formats() -> None:
    assert interpret("04a22b1c", config()) == UID
    assert interpret("ABC", config()) == b"\x0a\xbc"
    assert interpret("0077736732", config(format="decimal")) == (77736732).to_bytes(4, "big")
    assert interpret("0000000001", config(format="decimal", uid_bytes=4)) == b"\0\0\0\1"
    assert interpret(str(int.from_bytes(UID, "little")), config(format="decimal", uid_bytes=4,
                                                                byte_order="little")) == UID
    assert interpret("LIB-0042", config(format="text")) == b"LIB-0042"
    with pytest.raises(BadRead, match="2 of 8 characters are not hex") as info:
        interpret("04A22BXY", config())
    assert "04A2" not in str(info.value)
    with pytest.raises(BadRead, match="not decimal digits"):
        interpret("04A2", config(format="decimal"))
    with pytest.raises(BadRead, match="more than uid_bytes=2"):
        interpret("70000", config(format="decimal", uid_bytes=2))
    with pytest.raises(BadRead, match="read of 6 characters; this reader sends 8 or 10"):
        interpret("04A22B", config(read_lengths=[8, 10]))


def test_config_rejects_decimal_options_on_hex() -> None:
    with pytest.raises(ValueError, match="apply to format: decimal only"):
        config(uid_bytes=4)
    with pytest.raises(ValueError, match="read_lengths"):
        config(read_lengths=[0])
    with pytest.raises(ValueError, match="device_path"):
        config(device_path="input/event3")


def test_registered_as_wedge() -> None:
    assert driver_class("wedge") is WedgeDriver


# ---------------------------------------------------------------- the driver with the fake keyboard


async def test_a_card_becomes_one_pseudonymous_tap_and_repeats_are_debounced() -> None:
    async with running(config(debounce_s=60)) as (driver, kb, emit):
        kb.type(UID_HEX)
        tap = await emit.next()
        assert isinstance(tap, Event) and tap.type == "card_tap" and tap.device == "door-1"
        assert tap.data == {"card": PSEUDO(UID), "role": "door", "direction": "in"}
        kb.type(UID_HEX.lower())  # same card, again: debounced
        await until(lambda: driver.health.counters.get("debounced") == 1)
        kb.type("04A22B1D")  # another card
        other = await emit.next()
        assert other.data["card"] == PSEUDO(bytes.fromhex("04A22B1D"))
        assert len(emit.taps()) == 2
        assert driver.health.state is DeviceState.ONLINE
        assert driver.health.counters["taps"] == 2


async def test_decimal_reader_gives_the_same_pseudonym_as_a_hex_reader() -> None:
    cfg = config(format="decimal", uid_bytes=4, read_lengths=[10])
    async with running(cfg) as (_, kb, emit):
        kb.type(f"{int(UID_HEX, 16):010d}", keypad=True)
        tap = await emit.next()
        assert tap.data["card"] == PSEUDO(UID)


async def test_bad_reads_are_counted_and_the_next_card_works(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with running(config(read_lengths=[8])) as (driver, kb, emit):
        kb.type("04A2ZZ1C")  # not hex
        kb.send(typing_events("04A2", enter=False) + press_events(15) + typing_events("2B1C"))  # Tab inside
        kb.type("04A22B")  # too short
        kb.type("")  # a bare Enter
        kb.type(UID_HEX)
        tap = await emit.next()
        assert tap.data["card"] == PSEUDO(UID)
        counters = driver.health.counters
        assert counters["bad_reads"] == 4
        assert counters["bad_reads.not_hex"] == counters["bad_reads.unexpected_key"] == 1
        assert counters["bad_reads.bad_length"] == counters["bad_reads.empty"] == 1
        assert driver.health.state is DeviceState.ONLINE  # a bad read is not a dead reader
        assert driver.health.last_error and "read rejected" in driver.health.last_error
        messages = [r.getMessage() for r in caplog.records if r.name == "edugate.drivers.wedge.driver"]
        assert any("door-1" in m and "not hex digits" in m for m in messages)
        assert len(emit.taps()) == 1


async def test_a_fragment_without_enter_is_dropped_after_the_key_timeout() -> None:
    async with running(config(key_timeout_s=0.05)) as (driver, kb, emit):
        kb.type("04A2", enter=False)  # the reader lost power mid-card
        await until(lambda: kb.is_open)
        await asyncio.sleep(0.1)  # longer than key_timeout_s: the point of the test
        kb.type(UID_HEX)
        tap = await emit.next()
        assert tap.data["card"] == PSEUDO(UID)
        assert driver.health.counters["bad_reads.incomplete"] == 1


async def test_unplugged_reader_goes_offline_and_comes_back(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="edugate.drivers.wedge.driver")
    async with running(config()) as (driver, kb, emit):
        kb.type(UID_HEX)
        await emit.next()
        kb.unplug()
        await until(lambda: driver.health.state is DeviceState.OFFLINE)
        assert "No such device" in (driver.health.last_error or "")
        await until(lambda: "No such file" in (driver.health.last_error or ""))  # reopening fails for now
        kb.plug()
        await kb.wait_open(opens=2)
        await until(lambda: driver.health.state is DeviceState.ONLINE)
        kb.type("11223344")
        tap = await emit.next()
        assert tap.data["card"] == PSEUDO(bytes.fromhex("11223344"))
        assert driver.health.counters["disconnects"] == 1
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert sum("offline" in m for m in warnings) <= 2  # lost + cannot reopen: not one per retry
    assert any("is back" in r.getMessage() for r in caplog.records)


async def test_missing_evdev_is_a_clear_error_and_nothing_crashes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "evdev", None)  # import evdev -> ImportError
    driver = WedgeDriver(config())  # the real evdev source
    driver.ctx = DriverContext(pseudonymize=PSEUDO)
    task = asyncio.create_task(driver.run(FakeEmit()))
    try:
        await until(lambda: driver.health.last_error is not None)
        assert driver.health.state is DeviceState.OFFLINE
        assert "pip install evdev" in driver.health.last_error
        assert not task.done()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_the_card_number_never_reaches_the_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    uid = bytes.fromhex("9F8E7D6C")
    forms = {uid.hex(), uid.hex().upper(), str(int.from_bytes(uid, "big")), str(int.from_bytes(uid, "little"))}
    async with running(config()) as (driver, kb, emit):
        kb.type(uid.hex().upper())
        await emit.next()
        kb.type(uid.hex().upper()[:6] + "ZZ")  # a garbled read of the same card
        kb.type(uid.hex().upper(), enter=False)
        kb.press(15, keys.KEY_ENTER)
        await until(lambda: driver.health.counters.get("bad_reads") == 2)
        kb.unplug()
        await until(lambda: driver.health.state is DeviceState.OFFLINE)
    text = "\n".join(f"{r.getMessage()} {r.exc_text or ''}" for r in caplog.records)
    text += repr(driver.health.as_dict())
    for form in forms:
        assert form not in text
    assert uid.hex().upper()[:6] not in text


def test_real_evdev_on_a_missing_or_wrong_device_raises_oserror(tmp_path: Any) -> None:
    pytest.importorskip("evdev", reason="python-evdev not installed")
    from edugate.drivers.wedge.driver import EvdevSource

    with pytest.raises(FileNotFoundError):
        EvdevSource.open(str(tmp_path / "event99"))
    with pytest.raises(OSError):  # not an input device (ENOTTY)
        EvdevSource.open("/dev/null")
