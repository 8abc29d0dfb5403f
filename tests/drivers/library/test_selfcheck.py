"""The self-check station driver: a simulated station on a pty, a simulated SIP2 library system over TCP,
a simulated keyboard-wedge barcode scanner at the evdev layer. Only the emit function is fake.

Every test also checks that the card UID and the patron barcode appear in no event and no log line.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from edugate.common.privacy import Pseudonymizer
from edugate.contract.records import Event, Item
from edugate.drivers.base import DriverContext
from edugate.drivers.library.patrons import PatronFileError, PatronMap, load_patrons
from edugate.drivers.library.selfcheck import SelfCheckConfig, SelfCheckDriver
from edugate.simulators.sip2 import SimItem, SimPatron, Sip2Simulator
from edugate.simulators.station import StationSimulator
from edugate.simulators.wedge import FakeKeyboard
from tests.drivers.fakes import until

PSEUDO = Pseudonymizer(bytes(range(32)))
CARD = bytes.fromhex("0A1B2C3D4E")
BLOCKED_CARD = bytes.fromhex("0F00BA4411")
STRANGER = bytes.fromhex("1234567890")
PATRON, BLOCKED = "P7654321", "P0000666"
BOOK, BOOK2 = "30112000000017", "30112000000024"
SCANNER = "/dev/input/by-id/usb-Honeywell_1400g-event-kbd"


class Events:
    def __init__(self) -> None:
        self.items: list[Event] = []

    async def __call__(self, item: Item) -> dict[str, Any]:
        assert isinstance(item, Event)
        self.items.append(item)
        return {"seq": len(self.items), "data": dict(item.data)}

    def types(self) -> list[str]:
        return [e.type for e in self.items]


def patrons_file(tmp_path: Path) -> Path:
    path = tmp_path / "library-patrons.csv"
    path.write_text(f"student_id,pseudonym\n{PATRON},{PSEUDO(CARD)}\n{BLOCKED},{PSEUDO(BLOCKED_CARD)}\n")
    path.chmod(0o600)
    return path


def config(tmp_path: Path, ils_port: int, **kw: Any) -> SelfCheckConfig:
    base = {"id": "selfcheck-1", "driver": "library-selfcheck", "room": "library", "port": str(tmp_path / "ttySC"),
            "sip2": {"host": "127.0.0.1", "port": ils_port, "institution_id": "lib", "charset": "utf-8",
                     "timeout_s": 0.3, "reconnect_max_s": 0.3},
            "patrons_file": str(patrons_file(tmp_path)), "patron_pattern": r"P\d{7}"}
    return SelfCheckConfig.model_validate(base | kw)


@pytest.fixture
async def ils() -> AsyncIterator[Sip2Simulator]:
    items = [SimItem(BOOK, "Dế Mèn phiêu lưu ký"), SimItem(BOOK2, "Tuổi thơ dữ dội")]
    patrons = [SimPatron(PATRON, "Nguyễn Văn A"), SimPatron(BLOCKED, "B", blocked=True)]
    async with Sip2Simulator(items, patrons, login=None, charset="utf-8") as sim:
        yield sim


@contextlib.asynccontextmanager
async def running(cfg: SelfCheckConfig, keyboard: FakeKeyboard | None = None
                  ) -> AsyncIterator[tuple[StationSimulator, SelfCheckDriver, Events]]:
    async with StationSimulator(cfg.port) as station:
        driver = SelfCheckDriver(cfg, scanner_factory=keyboard.open if keyboard else None)
        driver.ctx = DriverContext(pseudonymize=PSEUDO)
        events = Events()
        task = asyncio.create_task(driver.run(events))
        try:
            await until(lambda: driver.port_open, "the station driver to open its port")
            yield station, driver, events
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await driver.close()


def shown(station: StationSimulator, text: str):
    return station.wait_line(lambda line: line.startswith("SHOW") and text in line)


def assert_private(events: Events, caplog: pytest.LogCaptureFixture) -> None:
    for secret in (CARD.hex(), CARD.hex().upper(), PATRON, BLOCKED, PSEUDO(CARD)):
        assert secret not in caplog.text, f"{secret} in the log"
        assert all(secret not in str(e.data) for e in events.items), f"{secret} in an event"
    for e in events.items:
        assert set(e.data) <= {"source", "renewal", "recovered", "alert", "reason"}


async def test_borrow_with_a_card_and_get_a_receipt(ils: Sip2Simulator, tmp_path: Path,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with running(config(tmp_path, ils.port)) as (station, _driver, events):
        station.card(CARD)
        await shown(station, "Hello")
        station.item(BOOK)
        station.item(BOOK)  # still on the pad: read again, borrowed once
        await shown(station, "Borrowed: Dế Mèn")
        station.item(BOOK2)
        await station.wait_line(lambda line: line == f"AFI {BOOK2} C2")
        station.done()
        await station.wait_line(lambda line: line == "CUT")
    assert ils.executed == [("checkout", BOOK, PATRON), ("checkout", BOOK2, PATRON)]
    assert ils.received[0].code == "23" and ils.received[0].fields["AA"] == PATRON  # the library's barcode
    assert f"AFI {BOOK} C2" in station.lines
    receipt = station.receipt()
    assert receipt[0] == "Library" and receipt[2] == "Borrowed:"
    assert any("Dế Mèn phiêu lưu ký (due 20" in line for line in receipt)
    assert events.types() == ["library_loan", "library_loan"]
    assert events.items[0].data == {"source": "rfid", "renewal": False, "recovered": False}
    assert_private(events, caplog)


async def test_return_session(ils: Sip2Simulator, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    ils.catalogue[BOOK].status, ils.catalogue[BOOK].charged_to = "04", PATRON
    async with running(config(tmp_path, ils.port)) as (station, _driver, events):
        station.item(BOOK)  # nobody tapped, no Return pressed
        await shown(station, "Tap your card to borrow, or press Return")
        station.press_return()
        station.item(BOOK)
        await station.wait_line(lambda line: line == f"AFI {BOOK} 07")
        station.done()
        await station.wait_line(lambda line: line == "CUT")
    assert ils.executed == [("checkin", BOOK)]
    assert station.receipt()[2:] == ["Returned:", " - Dế Mèn phiêu lưu ký"]
    assert events.types() == ["library_return"]
    assert_private(events, caplog)


async def test_refusals(ils: Sip2Simulator, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    ils.catalogue[BOOK2].status, ils.catalogue[BOOK2].charged_to = "04", "P0000001"
    async with running(config(tmp_path, ils.port)) as (station, _driver, events):
        station.card(STRANGER)
        await shown(station, "not registered with the library")
        station.card(BLOCKED_CARD)
        await shown(station, "You cannot borrow now")
        station.card(CARD)
        await shown(station, "Hello")
        station.item(BOOK2)
        await shown(station, "Item checked out to another patron")
        await ils.down()
        station.item(BOOK)
        await shown(station, "library system is not available")
    reasons = [e.data["reason"] for e in events.items]
    assert reasons == ["unknown_card", "patron_blocked", "checkout_refused", "ils_unavailable"]
    assert ils.executed == []
    assert_private(events, caplog)


async def test_no_double_checkout_when_the_answer_is_lost(ils: Sip2Simulator, tmp_path: Path) -> None:
    async with running(config(tmp_path, ils.port)) as (station, _driver, events):
        station.card(CARD)
        await shown(station, "Hello")
        ils.stall_next("11")
        station.item(BOOK)
        await shown(station, "Borrowed: Dế Mèn")
    assert ils.count("11") == 1 and ils.executed == [("checkout", BOOK, PATRON)]
    assert events.items[-1].data["recovered"] is True


async def test_barcode_scanner_for_library_cards_and_untagged_items(ils: Sip2Simulator, tmp_path: Path,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    keyboard = FakeKeyboard(SCANNER)
    cfg = config(tmp_path, ils.port, scanner={"device_path": SCANNER})
    async with running(cfg, keyboard) as (station, _driver, events):
        await keyboard.wait_open()
        keyboard.type(PATRON)  # a library card with a barcode (matches patron_pattern)
        await shown(station, "Hello")
        keyboard.type(BOOK)  # a book whose tag is missing
        await shown(station, "Borrowed: Dế Mèn")
        station.scan(BOOK2)  # the station's own scanner
        await shown(station, "Borrowed: Tuổi thơ")
    assert ils.executed == [("checkout", BOOK, PATRON), ("checkout", BOOK2, PATRON)]
    assert [e.data["source"] for e in events.items] == ["barcode", "barcode"]
    assert_private(events, caplog)


async def test_session_times_out_and_prints_the_receipt(ils: Sip2Simulator, tmp_path: Path) -> None:
    async with running(config(tmp_path, ils.port, session_timeout_s=5)) as (station, driver, _events):
        station.card(CARD)
        await shown(station, "Hello")
        station.item(BOOK)
        await shown(station, "Borrowed")
        assert driver.session is not None
        driver.session.last_activity -= 10  # as if the student walked away 10 s ago
        await station.wait_line(lambda line: line == "CUT", within_s=3)
        assert driver.session is None


async def test_bad_station_lines(ils: Sip2Simulator, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with running(config(tmp_path, ils.port)) as (station, driver, _events):
        station.send(f"CARD {CARD.hex()}ZZ")
        station.send(f"WAVE {CARD.hex()}")
        station.send_raw(f"CARD {CARD.hex()}*00\r\n".encode())
        station.card(CARD)
        await shown(station, "Hello")
    assert driver.health.counters["bad_lines_command"] == 2 and driver.health.counters["bad_lines_checksum"] == 1
    assert CARD.hex() not in caplog.text and CARD.hex().upper() not in caplog.text


# ---------------------------------------------------------------- the patrons file


def test_patrons_file_formats_and_errors(tmp_path: Path) -> None:
    path = tmp_path / "p.csv"
    path.write_text(f"pseudonym,patron_barcode\n{PSEUDO(CARD)},{PATRON}\n\n")
    assert load_patrons(path) == {PSEUDO(CARD): PATRON}
    for text, message in [("a,b\n", r"p.csv:1: the header needs 'pseudonym'"),
                          (f"pseudonym,patron\nnot-a-pseudonym,{PATRON}\n", r"p.csv:2: 'pseudonym' is not"),
                          (f"pseudonym,patron\n{PSEUDO(CARD)},\n", r"p.csv:2: 'patron' must be 1-64"),
                          (f"pseudonym,patron\n{PSEUDO(CARD)},{PATRON}\n{PSEUDO(CARD)},{BLOCKED}\n",
                           r"p.csv:3: the same pseudonym appears twice")]:
        path.write_text(text)
        with pytest.raises(PatronFileError, match=message) as info:
            load_patrons(path)
        assert PATRON not in str(info.value)


def test_patron_map_rereads_a_changed_file_and_keeps_the_old_one_when_broken(tmp_path: Path) -> None:
    path = tmp_path / "p.csv"
    path.write_text(f"pseudonym,patron\n{PSEUDO(CARD)},{PATRON}\n")
    mapping = PatronMap(path)
    assert mapping.lookup(PSEUDO(CARD)) == PATRON and mapping.lookup(PSEUDO(STRANGER)) is None
    path.write_text(f"pseudonym,patron\n{PSEUDO(CARD)},{PATRON}\n{PSEUDO(STRANGER)},P1111111\n")
    assert mapping.lookup(PSEUDO(STRANGER)) == "P1111111"
    path.write_text("garbage\n")
    assert mapping.lookup(PSEUDO(CARD)) == PATRON and "header needs" in (mapping.error or "")
