"""The library gate driver: a simulated gate on a pty, a simulated SIP2 library system over TCP.

Pass or alarm from the library system, the offline fallback on the tag's security bit when the library
system is down or slow, visitor counts per interval, bad lines. Only the emit function is fake.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from edugate.common.privacy import Pseudonymizer
from edugate.contract.records import Event, Item, Reading
from edugate.drivers.base import DeviceState, DriverContext
from edugate.drivers.library.gate import (
    ITEM_PREFIX,
    BadCommand,
    LibraryGateConfig,
    LibraryGateDriver,
    decide,
    parse_gate_line,
)
from edugate.drivers.library.sip2_codec import ItemInfo
from edugate.simulators.sip2 import SimItem, Sip2Simulator
from edugate.simulators.station import GateSimulator
from tests.drivers.fakes import until

PSEUDO = Pseudonymizer(bytes(range(32)))
ON_LOAN, ON_SHELF, MISSING = "30112000000017", "30112000000024", "30112000000031"


class Records:
    def __init__(self) -> None:
        self.items: list[Item] = []
        self._changed = asyncio.Event()

    async def __call__(self, item: Item) -> dict[str, Any]:
        self.items.append(item)
        self._changed.set()
        self._changed = asyncio.Event()
        return {"seq": len(self.items)}

    def events(self) -> list[Event]:
        return [i for i in self.items if isinstance(i, Event)]

    def readings(self) -> list[Reading]:
        return [i for i in self.items if isinstance(i, Reading)]

    async def wait(self, predicate, within_s: float = 5.0) -> None:
        async with asyncio.timeout(within_s):
            while not predicate():
                await self._changed.wait()


def config(port: Path, ils_port: int, **kw: Any) -> LibraryGateConfig:
    base = {"id": "gate-1", "driver": "library-gate", "room": "library", "port": str(port),
            "sip2": {"host": "127.0.0.1", "port": ils_port, "institution_id": "lib", "login_user": None,
                     "reconnect_max_s": 0.3},
            "count_interval_s": 3600, "tag_debounce_s": 0.5}
    return LibraryGateConfig.model_validate(base | kw)


@contextlib.asynccontextmanager
async def running(cfg: LibraryGateConfig) -> AsyncIterator[tuple[LibraryGateDriver, Records]]:
    driver = LibraryGateDriver(cfg)
    driver.ctx = DriverContext(pseudonymize=PSEUDO)
    records = Records()
    task = asyncio.create_task(driver.run(records))
    try:
        await until(lambda: driver.port_open, "the gate driver to open its port")
        yield driver, records
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await driver.close()


@pytest.fixture
async def ils() -> AsyncIterator[Sip2Simulator]:
    items = [SimItem(ON_LOAN, "On loan", status="04", charged_to="P1"), SimItem(ON_SHELF, "On the shelf"),
             SimItem(MISSING, "Missing", status="13")]
    async with Sip2Simulator(items, [], login=None) as sim:
        yield sim


async def wait_connected(driver: LibraryGateDriver, within_s: float = 5.0) -> None:
    await until(lambda: driver.client.connected, "the gate to connect to the library system", within_s)


# ---------------------------------------------------------------- pure parts


def test_parse_gate_lines() -> None:
    assert parse_gate_line("TAG 3011 AFI=c2") == ("TAG", "3011", "C2")
    assert parse_gate_line("IN") == ("IN", 1) and parse_gate_line("OUT 3") == ("OUT", 3)
    assert parse_gate_line("HB") == ("HB",)
    for bad, message in [("TAG 3011", "TAG needs"), ("TAG 3011 AFI=7", "AFI is not 2 hex"),
                         ("TAG a|b AFI=07", "no '|'"), ("IN 0", "optional count 1..100"),
                         ("HELLO 0A1B2C3D4E", "unknown or malformed command \\(a line of 16 characters")]:
        with pytest.raises(BadCommand, match=message) as info:
            parse_gate_line(bad)
        assert "0A1B2C3D4E" not in str(info.value)


@pytest.mark.parametrize(("info", "afi", "alarm", "reason", "offline"), [
    (ItemInfo("1", "04", "02", "T", "", ""), "07", False, "charged", False),
    (ItemInfo("1", "05", "02", "T", "", ""), "07", False, "charged", False),
    (ItemInfo("1", "03", "02", "T", "", ""), "C2", True, "not_charged", False),  # the ILS wins over the tag
    (ItemInfo("1", "13", "02", "T", "", ""), "C2", True, "not_charged", False),
    (ItemInfo("1", "01", "01", "", "", "not found"), "07", True, "unknown_item", False),
    (ItemInfo("1", "01", "01", "", "", "not found"), "C2", False, "unknown_item", False),
    (None, "07", True, "secured_tag", True),
    (None, "C2", False, "deactivated_tag", True),
    (None, "00", True, "unknown_afi", True),
])
def test_decision_table(info: ItemInfo | None, afi: str, alarm: bool, reason: str, offline: bool) -> None:
    cfg = config(Path("/dev/null"), 1)
    d = decide(info, afi, cfg)
    assert (d.alarm, d.reason, d.offline) == (alarm, reason, offline)
    assert d.source == ("tag" if info is None or not info.found else "ils")


def test_config_errors_name_the_field() -> None:
    with pytest.raises(ValidationError, match=r"afi_secured\n.*\[0\]: '7' is not an AFI byte"):
        config(Path("/dev/x"), 1, afi_secured=["7"])
    with pytest.raises(ValidationError, match=r"charged_statuses\n.*'4' is not a 2-digit SIP2 circulation status"):
        config(Path("/dev/x"), 1, charged_statuses=["4"])
    with pytest.raises(ValidationError, match=r"sip2.colour\n.*Extra inputs are not permitted"):
        config(Path("/dev/x"), 1, sip2={"host": "h", "institution_id": "i", "colour": "red"})
    assert config(Path("/dev/x"), 1).sip2.timeout_s == 0.4, "a gate defaults to a short lookup"


# ---------------------------------------------------------------- against the simulators


async def test_pass_and_alarm_from_the_library_system(ils: Sip2Simulator, tmp_path: Path,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with GateSimulator(tmp_path / "ttyGATE") as gate, running(config(gate.link, ils.port)) as (drv, rec):
        await wait_connected(drv)
        gate.tag(ON_LOAN, afi="07")  # on loan, even if the tag was left secured: pass
        assert await gate.next_line() == "PASS"
        gate.tag(ON_SHELF, afi="C2")  # not checked out, even if the tag says so: alarm
        assert await gate.next_line() == "ALARM"
        gate.tag(MISSING, afi="07")
        assert await gate.next_line() == "ALARM"
        gate.tag(ON_SHELF, afi="C2")  # still in the field: decided once
        gate.tag(ON_LOAN, afi="07")
        await until(lambda: drv.health.counters.get("tags_repeated", 0) >= 2, "two repeated tags")
        assert ils.count("17", ON_SHELF) == 1 and len(rec.events()) == 2
        assert drv.last_decision_ms is not None and drv.last_decision_ms < 400
    alarms = rec.events()
    assert [e.type for e in alarms] == ["gate_alarm", "gate_alarm"]
    first = dict(alarms[0].data)
    assert first == {"item": PSEUDO(ITEM_PREFIX + ON_SHELF.encode()), "decision": "alarm", "reason": "not_charged",
                     "source": "ils", "offline": False, "circulation": "03"}
    assert alarms[1].data["circulation"] == "13"
    assert first["item"] != PSEUDO(ON_SHELF.encode()), "item pseudonyms never equal a card's"
    for item in (ON_LOAN, ON_SHELF, MISSING):
        assert item not in caplog.text
        assert all(item not in str(e.data) for e in alarms)


async def test_ils_down_falls_back_to_the_tag_security_bit(ils: Sip2Simulator, tmp_path: Path) -> None:
    async with GateSimulator(tmp_path / "ttyGATE") as gate, running(config(gate.link, ils.port)) as (drv, rec):
        await wait_connected(drv)
        await ils.down()
        started = time.monotonic()
        gate.tag(ON_SHELF, afi="07")
        assert await gate.next_line() == "ALARM"
        gate.tag(ON_LOAN, afi="C2")
        assert await gate.next_line() == "PASS"
        assert time.monotonic() - started < 1.0, "a walking person gives about a second"
        await rec.wait(lambda: len(rec.events()) == 1)
        assert dict(rec.events()[0].data) | {"item": "-"} == {
            "item": "-", "decision": "alarm", "reason": "secured_tag", "source": "tag", "offline": True}
        assert drv.counts["offline_decisions"] == 2
        await ils.up()  # back: the keepalive reconnects, decisions come from the library system again
        await wait_connected(drv)
        gate.tag(MISSING, afi="C2")
        assert await gate.next_line() == "ALARM"
        await rec.wait(lambda: len(rec.events()) == 2)
        assert rec.events()[1].data["offline"] is False and rec.events()[1].data["reason"] == "not_charged"


async def test_slow_ils_decides_offline_within_the_timeout(ils: Sip2Simulator, tmp_path: Path) -> None:
    cfg = config(tmp_path / "ttyGATE", ils.port, sip2={"host": "127.0.0.1", "port": ils.port, "institution_id": "l",
                                                        "timeout_s": 0.3, "reconnect_max_s": 0.3})
    async with GateSimulator(cfg.port) as gate, running(cfg) as (drv, rec):
        await wait_connected(drv)
        ils.delay_s = 2.0
        started = time.monotonic()
        gate.tag(ON_SHELF, afi="C2")
        assert await gate.next_line() == "PASS"  # no answer in 0.3 s: the deactivated tag decides
        assert time.monotonic() - started < 0.6
        gate.tag(MISSING, afi="07")  # the connection is being re-established: decided at once, offline
        assert await gate.next_line() == "ALARM"
        assert time.monotonic() - started < 0.8
        await rec.wait(lambda: len(rec.events()) == 1)
        assert rec.events()[0].data["offline"] is True
        assert "library system unavailable" in (drv.health.last_error or "")


async def test_visitor_counts_per_interval(ils: Sip2Simulator, tmp_path: Path) -> None:
    cfg = config(tmp_path / "ttyGATE", ils.port, count_interval_s=1)
    async with GateSimulator(cfg.port) as gate, running(cfg) as (drv, rec):
        await wait_connected(drv)
        await rec.wait(lambda: len(rec.readings()) >= 1, 3)  # an interval boundary: counting from here
        gate.walk_in()
        gate.walk_in(3)
        gate.walk_out(2)
        gate.tag(ON_SHELF)
        await rec.wait(lambda: sum(r.values["visitors_in"] for r in rec.readings()) == 4, 4)
    readings = rec.readings()
    assert sum(r.values["visitors_out"] for r in readings) == 2
    assert sum(r.values["alarms"] for r in readings) == 1 and sum(r.values["tags"] for r in readings) == 1
    last = readings[-1]
    assert last.values["ils_online"] == 1 and last.values["reader_online"] == 1
    assert last.ts is not None and last.ts == int(last.ts), "stamped at the interval's end, on the wall clock"


async def test_bad_lines_are_counted_and_skipped(ils: Sip2Simulator, tmp_path: Path,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    async with GateSimulator(tmp_path / "ttyGATE") as gate, running(config(gate.link, ils.port)) as (drv, _rec):
        await wait_connected(drv)
        gate.send_raw(b"TAG 3011 AFI=07*00\r\n")  # bad checksum
        gate.send_raw(b"IN\r\n")  # no checksum
        gate.send("TAG 3011")  # framed, but incomplete
        gate.send("WHAT 0A1B2C3D4E")
        gate.tag(ON_SHELF)
        assert await gate.next_line() == "ALARM"
        counters = drv.health.counters
        assert counters["bad_lines_checksum"] == 1 and counters["bad_lines_format"] == 1
        assert counters["bad_lines_command"] == 2
        assert drv.health.state == DeviceState.ONLINE
    assert "gate-1 (library-gate on" in caplog.text and "bad checksum" in caplog.text
    assert "0A1B2C3D4E" not in caplog.text


async def test_unplugged_gate_reader_comes_back(ils: Sip2Simulator, tmp_path: Path) -> None:
    cfg = config(tmp_path / "ttyGATE", ils.port, reopen_max_s=0.2)
    async with GateSimulator(cfg.port) as gate, running(cfg) as (drv, _rec):
        gate.port.unplug()
        await until(lambda: drv.health.state == DeviceState.OFFLINE, "the unplugged reader to go offline")
        assert not drv.reader_online
        gate.port.plug()
        await until(lambda: drv.health.state == DeviceState.ONLINE, "the replugged reader to come back")
        await wait_connected(drv)
        gate.tag(ON_LOAN, afi="C2")
        assert await gate.next_line() == "PASS"


def test_station_line_framing() -> None:
    from edugate.drivers.library.station_lines import BadLine, LineDecoder, encode_line

    assert encode_line("TAG 30112000000017 AFI=07") == b"TAG 30112000000017 AFI=07*21\r\n"
    decoder = LineDecoder()
    out = decoder.feed(encode_line("IN") + b"OUT*" + b"\r\n" + b"\xff\xfe*01\r\n" + b"x" * 300 + b"\r\n" + b"HB")
    assert out[0] == "IN"
    assert [(b.kind, b.detail) for b in out[1:] if isinstance(b, BadLine)] == [
        ("format", "line of 4 bytes without '*HH' checksum at its end"),
        ("encoding", "not UTF-8 at position 1 of 2"),
        ("length", "line longer than 203 bytes; dropped")]
    assert decoder.pending and decoder.flush() == [BadLine("partial", "2 bytes without an end of line")]
    with pytest.raises(ValueError, match="control characters"):
        encode_line("SHOW a\rb")
