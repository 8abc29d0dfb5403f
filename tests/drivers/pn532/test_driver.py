"""The PN532 driver (HSU) against the PN532 emulator: real frames over a real pseudo-terminal.

The emulator (:mod:`simulators.pn532`) answers the driver's frames byte by byte
and misbehaves on demand (bad checksums, NACK, error frame, truncated answer,
silence, unplug). Waits are on events and conditions with timeouts. Every test
checks that no card UID reached the log, in any spelling.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydantic import ValidationError

from edugate.contract.records import Event
from edugate.drivers.base import DeviceState
from edugate.drivers.pn532 import codec as codec
from edugate.drivers.pn532.driver import PN532Config, PN532Driver
from edugate.simulators.pn532 import Fault, PN532Simulator
from tests.drivers.em4100.test_driver import PSEUDONYMIZE, assert_no_uid_logged, messages, running
from tests.drivers.fakes import FakeEmit, until

UID4 = bytes.fromhex("A1B2C3D4")
UID7 = bytes.fromhex("04112233445566")
UID10 = bytes.fromhex("0899AABBCCDDEEFF0011")
OTHER = bytes.fromhex("5E6F7A8B")
UIDS = (UID4, UID7, UID10, OTHER)
WHERE = r"nfc-1 \(pn532 reader on .*ttyNFC\)"


def test_config_defaults_and_errors() -> None:
    cfg = PN532Config(id="nfc-1", driver="pn532", port="/dev/ttyAMA0")
    assert (cfg.baudrate, cfg.poll_interval_s, cfg.timeout_s, cfg.reopen_max_s) == (115200, 0.1, 0.5, 30.0)
    with pytest.raises(ValidationError, match="poll_interval_s"):
        PN532Config(id="nfc-1", driver="pn532", port="/dev/ttyAMA0", poll_interval_s=0)
    with pytest.raises(ValidationError, match="is not a device path"):
        PN532Config(id="nfc-1", driver="pn532", port="COM3")


@dataclass
class Rig:
    sim: PN532Simulator
    driver: PN532Driver
    taps: FakeEmit

    async def online(self) -> None:
        await until(lambda: self.driver.health.state == DeviceState.ONLINE, "the reader to be online")

    async def tapped(self, uid: bytes) -> Event:
        """Put ``uid`` on the reader, return its event (failing if another comes first), take the card away."""
        self.sim.present_card(uid)
        event = await self.taps.next()
        self.sim.remove_card()
        assert event.data["card"] == PSEUDONYMIZE(uid)
        return event

    async def polls(self, n: int = 2) -> None:
        """Let ``n`` more polls happen (so that a fault injected before them has played out)."""
        await self.sim.wait_polls(self.sim.polls + n)


def make_driver(link: Path) -> PN532Driver:
    return PN532Driver(PN532Config(id="nfc-1", driver="pn532", port=str(link), role="door", poll_interval_s=0.02,
                                   timeout_s=0.1, reopen_max_s=0.2))


@pytest.fixture
async def rig(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> AsyncIterator[Rig]:
    caplog.set_level(logging.DEBUG)
    async with PN532Simulator(tmp_path / "ttyNFC") as sim:
        driver = make_driver(sim.link)
        taps = FakeEmit()
        async with running(driver, taps):
            r = Rig(sim, driver, taps)
            await r.online()
            yield r
    assert_no_uid_logged(caplog.text, UIDS)


async def test_start_up_and_poll_frames_are_byte_exact(rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    await rig.polls(2)
    raw = bytes(rig.sim.raw_received)
    assert raw.startswith(codec.WAKEUP + bytes.fromhex("00 00 FF 05 FB D4 14 01 14 01 02 00"))
    assert bytes.fromhex("00 00 FF 02 FE D4 02 2A 00") in raw  # GetFirmwareVersion, as in the manual
    assert bytes.fromhex("00 00 FF 04 FC D4 4A 01 00 E1 00") in raw  # InListPassiveTarget MaxTg=1 BrTy=106A
    codes = [f.code for f in rig.sim.received]
    assert codes[:4] == [codec.SAM_CONFIGURATION, codec.GET_FIRMWARE_VERSION, codec.RF_CONFIGURATION,
                         codec.IN_LIST_PASSIVE_TARGET]
    assert set(codes[3:]) == {codec.IN_LIST_PASSIVE_TARGET}
    assert rig.sim.wakeups == 1 and rig.sim.sam_configured and rig.sim.bad_host_frames == 0
    assert any(re.search(WHERE + r": reading cards \(PN532 firmware 1.6, 115200 bit/s\)", m)
               for m in messages(caplog, logging.INFO))


@pytest.mark.parametrize("uid", [UID4, UID7, UID10], ids=["4-byte", "7-byte", "10-byte"])
async def test_a_tap_is_one_pseudonymous_event(rig: Rig, uid: bytes) -> None:
    event = await rig.tapped(uid)
    assert event.device == "nfc-1" and event.type == "card_tap"
    assert event.data == {"card": PSEUDONYMIZE(uid), "role": "door", "direction": "in"}
    await rig.tapped(OTHER)  # the next event is the next card's: the first tap made exactly one
    assert len(rig.taps.events) == 2
    assert rig.driver.health.counters["signal_accepted"] == 2


async def test_an_iso14443_4_card_with_ats(rig: Rig) -> None:
    rig.sim.present_card(UID7, sens_res=b"\x03\x44", ats=bytes.fromhex("06 75 77 81 02 80"))
    assert (await rig.taps.next()).data["card"] == PSEUDONYMIZE(UID7)


async def test_holding_the_card_counts_once(rig: Rig) -> None:
    rig.sim.present_card(UID4)
    first = await rig.taps.next()
    await rig.polls(10)  # the card is found at every poll
    rig.sim.remove_card()
    await rig.tapped(OTHER)
    assert [first.data["card"], rig.taps.events[-1].data["card"]] == [PSEUDONYMIZE(UID4), PSEUDONYMIZE(OTHER)]
    assert len(rig.taps.events) == 2
    assert rig.driver.health.counters["debounced"] >= 8


async def test_feedback_records_the_decision(rig: Rig) -> None:
    rig.taps.decision = "allow"
    await rig.tapped(UID4)
    rig.taps.decision = "deny"
    await rig.tapped(UID7)
    counters = rig.driver.health.counters
    assert (counters["signal_allow"], counters["signal_deny"]) == (1, 1)


@pytest.mark.parametrize(("fault", "kind", "message"), [
    (Fault.BAD_DCS, "bad_dcs", "bad answer to InListPassiveTarget: bad data checksum at byte 7"),
    (Fault.BAD_LCS, "bad_lcs", "bad answer to InListPassiveTarget: bad length checksum at byte 3"),
    (Fault.NACK, "no_ack_nack", "a NACK instead of the ACK to InListPassiveTarget"),
    (Fault.ERROR_FRAME, "error_frame", "the PN532 answered InListPassiveTarget with an error frame"),
    (Fault.TRUNCATED, "truncated", r"truncated answer to InListPassiveTarget: 4 bytes of 9 arrived, then "
                                   r"nothing for 0.1 s"),
])
async def test_a_bad_answer_is_logged_counted_and_skipped(rig: Rig, caplog: pytest.LogCaptureFixture,
                                                           fault: Fault, kind: str, message: str) -> None:
    await rig.polls(1)
    rig.sim.inject(fault)
    await until(lambda: rig.driver.health.counters.get(f"bad_frames_{kind}") == 1, f"a {kind} answer counted")
    assert rig.driver.health.counters["bad_frames"] == 1
    assert any(re.search(WHERE + ": " + message, m) for m in messages(caplog)), messages(caplog)
    assert rig.driver.health.state == DeviceState.ONLINE  # one bad answer is not a dead reader
    await rig.tapped(UID4)  # the next poll works


async def test_a_bad_answer_with_a_card_in_the_field_costs_one_poll(rig: Rig) -> None:
    await rig.polls(1)
    rig.sim.inject(Fault.BAD_DCS, count=2)
    await rig.tapped(UID7)
    assert rig.driver.health.counters["bad_frames_bad_dcs"] == 2


async def test_no_answer_after_ack_is_aborted_not_an_error(rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    await rig.polls(1)
    rig.sim.inject(Fault.NO_ANSWER)  # a PN532 that keeps searching for a card: the host aborts with an ACK
    await until(lambda: rig.sim.aborts == 1, "the host to abort the command with an ACK")
    assert rig.driver.health.counters["polls_aborted"] == 1
    assert "bad_frames" not in rig.driver.health.counters
    assert messages(caplog) == []
    await rig.tapped(UID4)


async def test_silence_marks_offline_then_recovers(rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    await rig.polls(1)
    rig.sim.inject(Fault.SILENCE, count=None)
    await until(lambda: rig.driver.health.state == DeviceState.OFFLINE, "the silent reader to go offline")
    assert rig.driver.health.counters["timeouts_no_ack"] >= 3
    error = rig.driver.health.last_error or ""
    assert re.search(WHERE + ": PN532 not answering properly: 3 exchanges in a row failed, the last with: no ACK "
                     "to InListPassiveTarget within 0.1 s", error), error
    assert sum("not answering properly" in m for m in messages(caplog)) == 1
    rig.sim.clear()
    await rig.online()
    assert rig.sim.wakeups >= 1
    await rig.tapped(UID7)


async def test_unplug_marks_offline_and_replug_recovers(rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    await rig.tapped(UID4)
    rig.sim.unplug()
    await until(lambda: rig.driver.health.state == DeviceState.OFFLINE, "the reader to go offline")
    error = rig.driver.health.last_error or ""
    assert re.search(WHERE + r": reader disconnected: (end of file on the serial port|write failed: "
                     r"Input/output error)", error), error
    await until(lambda: "no such serial port" in (rig.driver.health.last_error or ""), "the reopen to fail")
    assert any(re.search(WHERE + ": reader disconnected", m) for m in messages(caplog)), messages(caplog)

    rig.sim.replug()  # a fresh PN532: asleep and unconfigured
    await rig.online()
    assert rig.sim.wakeups == 2 and rig.sim.sam_configured  # woken again after the replug
    assert any("back online after" in m for m in messages(caplog, logging.INFO))
    await rig.tapped(UID7)
    await rig.tapped(OTHER)


async def test_a_port_name_that_moves_to_another_board_is_reopened(rig: Rig) -> None:
    other = PN532Simulator(rig.sim.link)  # a second board under the same name; the first one's pty stays open
    await other.start()
    try:
        await until(lambda: "now names another device" in (rig.driver.health.last_error or ""),
                    "the driver to notice the moved name")
        await rig.online()
        assert other.wakeups == 1 and other.sam_configured
        other.present_card(UID7)
        assert (await rig.taps.next()).data["card"] == PSEUDONYMIZE(UID7)
    finally:
        await other.stop()


async def test_a_pn532_that_never_answers_is_offline_with_a_hint(tmp_path: Path,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with PN532Simulator(tmp_path / "ttyNFC") as sim:
        sim.inject(Fault.SILENCE, count=None)  # wrong mode switches, TX/RX swapped...
        driver, taps = make_driver(sim.link), FakeEmit()
        async with running(driver, taps):
            await until(lambda: driver.health.state == DeviceState.OFFLINE, "the reader to be offline")
            error = driver.health.last_error or ""
            assert "PN532 not answering: no ACK to SAMConfiguration within 0.1 s" in error
            assert "check that the board is in HSU (UART) mode" in error
            assert sum("not answering" in m for m in messages(caplog)) == 1  # logged once, retried quietly
            sim.clear()
            await until(lambda: driver.health.state == DeviceState.ONLINE, "the reader to come online")
            sim.present_card(UID4)
            assert (await taps.next()).data["card"] == PSEUDONYMIZE(UID4)
    assert_no_uid_logged(caplog.text, UIDS)
