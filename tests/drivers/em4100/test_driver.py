"""The EM4100 (RDM6300-style) driver against its simulator: real frames over a real pseudo-terminal.

No mocks of the serial port: :mod:`simulators.em4100` writes the reader's
bytes into a pty, the driver opens its path with pyserial. Waits are on events
and conditions with timeouts, never fixed sleeps. Every test also checks that
no card UID reached the log, in any spelling.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from edugate.common.privacy import Pseudonymizer
from edugate.contract.records import Event
from edugate.drivers.base import DeviceState, DriverContext
from edugate.drivers.card_reader import CardReaderDriver
from edugate.drivers.em4100.driver import BadFrame, EM4100Config, EM4100Decoder, EM4100Driver
from edugate.simulators.em4100 import EM4100Simulator, encode_frame
from tests.drivers.fakes import FakeEmit, until

PSEUDONYMIZE = Pseudonymizer(bytes(range(32)))
CARD = bytes.fromhex("0A1B2C3D4E")
OTHER = bytes.fromhex("4F00BA7711")
THIRD = bytes.fromhex("12AB34CD56")
UIDS = (CARD, OTHER, THIRD)


# ---------------------------------------------------------------- helpers (the PN532 tests use them too)


def uid_spellings(uid: bytes) -> list[str]:
    """Every way a UID could show up in a log line."""
    hexes = [uid.hex(), uid.hex().upper()]
    forms = hexes + [uid.hex(sep).upper() for sep in ": -"] + [uid.hex(sep) for sep in ": -"]
    forms.append(repr(uid)[2:-1])
    forms.append(str(int.from_bytes(uid, "big")))
    forms.append(str(int.from_bytes(uid, "little")))
    if len(uid) == 5:  # EM4100 cards are often printed as the decimal of their last 4 bytes
        forms.append(str(int.from_bytes(uid[1:], "big")))
    return forms


def assert_no_uid_logged(text: str, uids: tuple[bytes, ...]) -> None:
    for uid in uids:
        for form in uid_spellings(uid):
            assert form not in text, f"a card UID ({len(uid)} bytes) appears in the log as {form!r}"


def messages(caplog: pytest.LogCaptureFixture, level: int = logging.WARNING) -> list[str]:
    """What the drivers logged at ``level`` or above, in the test and its fixtures' setup."""
    records = caplog.get_records("setup") + caplog.get_records("call")
    return [r.getMessage() for r in records if r.levelno >= level and r.name.startswith("edugate.drivers.")]


@contextlib.asynccontextmanager
async def running(driver: CardReaderDriver[Any], taps: FakeEmit) -> AsyncIterator[asyncio.Task[None]]:
    """Run the driver as the gateway would, and stop it (cancel, close) afterwards."""
    driver.ctx = DriverContext(pseudonymize=PSEUDONYMIZE)
    task = asyncio.create_task(driver.run(taps), name=f"driver-{driver.device_id}")
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await driver.close()
    assert driver.health.state == DeviceState.STOPPED


# ---------------------------------------------------------------- the decoder on plain bytes


def test_decoder_reads_a_frame_in_every_framing_and_split_anywhere() -> None:
    for framing in ("rdm6300", "crlf", "id12"):
        stream = encode_frame(CARD, framing) * 2  # type: ignore[arg-type]
        decoder = EM4100Decoder()
        out = [item for b in stream for item in decoder.feed(bytes([b]))]
        assert out == [CARD, CARD], framing
        assert not decoder.pending


def test_decoder_accepts_lower_case_hex() -> None:
    assert EM4100Decoder().feed(encode_frame(CARD).lower()) == [CARD]


@pytest.mark.parametrize(("data", "kind", "detail"), [
    (b"\x020A1B?C3D4E35\x03", "garbled", "not a hex digit at position 5 of 12"),
    (b"\x020A1B2C3D4E00\x03", "checksum", "bad checksum"),
    (b"\x020A1B2C3D4E\x03", "length", "10 characters between STX and ETX, expected 12"),
    (b"\x020A1B2C\x02", "partial", "frame cut short: a new STX after 6 of 12 characters"),
    (b"\x02" + b"0" * 33, "length", "no ETX after 32 characters"),
    (b"\xff\x17zz\x02", "noise", "4 stray bytes outside a frame"),
])
def test_decoder_names_each_bad_frame(data: bytes, kind: str, detail: str) -> None:
    [bad] = EM4100Decoder().feed(data)
    assert isinstance(bad, BadFrame)
    assert bad.kind == kind
    assert detail in bad.detail


def test_decoder_flush_reports_a_partial_frame_and_noise() -> None:
    decoder = EM4100Decoder()
    assert decoder.feed(b"\x020A1B2C3") == []
    assert decoder.pending
    [bad] = decoder.flush(0.2)
    assert bad == BadFrame("partial", "partial frame: 7 of 12 characters after STX, then no ETX within 0.2 s")
    assert decoder.feed(b"x") == [] and decoder.pending
    assert [b.kind for b in decoder.flush(0.2)] == ["noise"]
    assert not decoder.pending


# ---------------------------------------------------------------- config


def test_config_defaults_and_errors() -> None:
    cfg = EM4100Config(id="door-1", driver="em4100", port="/dev/serial/by-id/usb-FTDI_FT232R-if00-port0")
    assert (cfg.baudrate, cfg.frame_timeout_s, cfg.reopen_max_s, cfg.debounce_s, cfg.role) == (
        9600, 0.2, 30.0, 2.0, "attendance")
    with pytest.raises(ValidationError, match="'ttyUSB0' is not a device path"):
        EM4100Config(id="door-1", driver="em4100", port="ttyUSB0")
    with pytest.raises(ValidationError, match="baudrate"):
        EM4100Config(id="door-1", driver="em4100", port="/dev/ttyUSB0", baudrate=9601)
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        EM4100Config(id="door-1", driver="em4100", port="/dev/ttyUSB0", baud=9600)  # type: ignore[call-arg]


# ---------------------------------------------------------------- the driver over a pty


@dataclass
class Rig:
    sim: EM4100Simulator
    driver: EM4100Driver
    taps: FakeEmit

    async def online(self) -> None:
        await until(lambda: self.driver.health.state == DeviceState.ONLINE, "the reader to be online")

    async def tapped(self, uid: bytes) -> Event:
        """Tap ``uid`` and return its event, failing if another event comes first."""
        self.sim.tap(uid)
        event = await self.taps.next()
        assert event.data["card"] == PSEUDONYMIZE(uid)
        return event


def make_driver(link: Path, **options: Any) -> EM4100Driver:
    return EM4100Driver(EM4100Config(id="door-1", driver="em4100", port=str(link), reopen_max_s=0.2,
                                     frame_timeout_s=0.1, **options))


@pytest.fixture
async def rig(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> AsyncIterator[Rig]:
    caplog.set_level(logging.DEBUG)
    async with EM4100Simulator(tmp_path / "ttyRFID", repeat_interval_s=0.03) as sim:
        driver = make_driver(sim.link)
        taps = FakeEmit()
        async with running(driver, taps):
            r = Rig(sim, driver, taps)
            await r.online()
            yield r
    assert_no_uid_logged(caplog.text, UIDS)


async def test_a_tap_is_one_pseudonymous_event(rig: Rig) -> None:
    rig.sim.tap(CARD)
    event = await rig.taps.next()
    assert event.device == "door-1" and event.type == "card_tap"
    assert event.data == {"card": PSEUDONYMIZE(CARD), "role": "attendance", "direction": "in"}
    assert CARD.hex() not in repr(event).lower()
    await rig.tapped(OTHER)  # the next event is the next card's: the first tap made exactly one
    assert len(rig.taps.events) == 2
    assert rig.driver.health.counters["signal_accepted"] == 2  # feedback, after each event was durable
    assert rig.driver.health.counters["frames"] == 2


async def test_holding_the_card_counts_once(rig: Rig) -> None:
    await rig.sim.hold(CARD, 0.4)  # ~13 frames
    assert rig.sim.frames_sent >= 5
    assert (await rig.taps.next()).data["card"] == PSEUDONYMIZE(CARD)
    await rig.tapped(OTHER)  # the next event is the next card's: the held card made exactly one
    assert [e.data["card"] for e in rig.taps.events] == [PSEUDONYMIZE(CARD), PSEUDONYMIZE(OTHER)]
    assert rig.driver.health.counters["debounced"] >= 4


async def test_feedback_records_the_decision(rig: Rig) -> None:
    rig.taps.decision = "deny"
    await rig.tapped(CARD)
    rig.taps.decision = "allow"
    await rig.tapped(OTHER)
    counters = rig.driver.health.counters
    assert (counters["signal_deny"], counters["signal_allow"]) == (1, 1)


WHERE = r"door-1 \(em4100 reader on .*ttyRFID\)"


@pytest.mark.parametrize(("fault", "kind", "message"), [
    ("garbled", "garbled", "garbled frame: not a hex digit at position 4 of 12"),
    ("checksum", "checksum", "bad checksum: the XOR of the 5 data bytes does not match the checksum characters"),
    ("partial", "partial", "partial frame: 7 of 12 characters after STX, then no ETX within 0.1 s"),
    ("noise", "noise", r"12 stray bytes outside a frame \(noise on the line, or a wrong baudrate\?\)"),
])
async def test_a_bad_frame_is_logged_counted_and_skipped(rig: Rig, caplog: pytest.LogCaptureFixture,
                                                          fault: str, kind: str, message: str) -> None:
    send = {"garbled": rig.sim.send_garbled, "checksum": rig.sim.send_bad_checksum,
            "partial": rig.sim.send_partial, "noise": lambda _uid: rig.sim.send_garbage()}[fault]
    send(CARD)
    await until(lambda: rig.driver.health.counters.get(f"bad_frames_{kind}") == 1, f"a {kind} frame counted")
    assert rig.driver.health.counters["bad_frames"] == 1
    assert any(re.search(f"{WHERE}: {message}", m) for m in messages(caplog)), messages(caplog)
    assert rig.driver.health.state == DeviceState.ONLINE  # a bad frame is not a dead reader
    assert rig.taps.events == []
    await rig.tapped(CARD)  # the next good tap works


async def test_a_frame_cut_short_by_the_next_one(rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    rig.sim.send_partial(CARD, chars=5)
    await rig.tapped(OTHER)  # arrives before the frame timeout: the new STX ends the partial frame
    assert rig.driver.health.counters["bad_frames_partial"] == 1
    assert any("frame cut short: a new STX after 5 of 12 characters" in m for m in messages(caplog))


async def test_unplug_marks_offline_and_replug_recovers(rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    await rig.tapped(CARD)
    rig.sim.unplug()
    await until(lambda: rig.driver.health.state == DeviceState.OFFLINE, "the reader to go offline")
    assert "reader disconnected: end of file on the serial port" in (rig.driver.health.last_error or "")
    await until(lambda: "no such serial port" in (rig.driver.health.last_error or ""), "the reopen to fail")
    warnings = messages(caplog)
    assert any("door-1 (em4100 reader on" in m and "reader disconnected" in m for m in warnings), warnings
    reopen_failures = [m for m in warnings if "cannot open the serial port" in m]
    assert len(reopen_failures) == 1  # logged once, however often the reopen is retried

    rig.sim.replug()
    await rig.online()
    assert any("back online after" in m for m in messages(caplog, logging.INFO))
    await rig.tapped(OTHER)
    await rig.tapped(THIRD)


async def test_a_port_name_that_moves_to_another_reader_is_reopened(rig: Rig) -> None:
    # A second reader appears under the same name while the first one's pty stays open (no end-of-file):
    # the driver notices on its idle check that the name now points elsewhere, and reopens it.
    other = EM4100Simulator(rig.sim.link)
    await other.start()
    try:
        await until(lambda: "now names another device" in (rig.driver.health.last_error or ""),
                    "the driver to notice the moved name")
        await rig.online()
        other.tap(OTHER)
        assert (await rig.taps.next()).data["card"] == PSEUDONYMIZE(OTHER)
    finally:
        await other.stop()


async def test_a_reader_missing_at_start_is_offline_until_plugged(tmp_path: Path,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    sim = EM4100Simulator(tmp_path / "ttyRFID", framing="crlf")
    driver, taps = make_driver(sim.link), FakeEmit()
    async with running(driver, taps):
        await until(lambda: driver.health.state == DeviceState.OFFLINE, "the missing reader to be offline")
        assert "cannot open the serial port: no such serial port" in (driver.health.last_error or "")
        await sim.start()
        await until(lambda: driver.health.state == DeviceState.ONLINE, "the reader to come online")
        sim.tap(CARD)
        assert (await taps.next()).data["card"] == PSEUDONYMIZE(CARD)
        await sim.stop()
    assert_no_uid_logged(caplog.text, UIDS)


@pytest.mark.parametrize("framing", ["crlf", "id12"])
async def test_readers_with_cr_lf(tmp_path: Path, framing: str) -> None:
    async with EM4100Simulator(tmp_path / "ttyRFID", framing=framing) as sim:  # type: ignore[arg-type]
        driver, taps = make_driver(sim.link), FakeEmit()
        async with running(driver, taps):
            await until(lambda: driver.health.state == DeviceState.ONLINE, "the reader to be online")
            sim.tap(CARD, repeats=3)
            sim.tap(OTHER)
            cards = [(await taps.next()).data["card"] for _ in range(2)]
            assert cards == [PSEUDONYMIZE(CARD), PSEUDONYMIZE(OTHER)]
            assert "bad_frames" not in driver.health.counters
