"""Outside check of the kit driver: a kit's firmware is student code, so what it says (LOG frames, its HELLO)
must not forge journal lines: a line break or control character in it is logged as '?'."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from edugate.contract.records import Reading
from edugate.drivers.kit.driver import one_line
from edugate.firmware_bridge.protocol import Log, encode
from edugate.simulators.kit_node import KitNodeProcess
from tests.drivers.fakes import until
from tests.drivers.kit.test_driver import next_of, running

pytestmark = pytest.mark.timeout(30)
FORGED = "fine\n2026-12-03 10:00:00,000 ERROR   edugate.gateway: intruder\x1b[2J"


def test_one_line_keeps_text_and_breaks_nothing() -> None:
    assert one_line("plain text, 21.5 °C") == "plain text, 21.5 °C"
    assert one_line(FORGED) == "fine?2026-12-03 10:00:00,000 ERROR   edugate.gateway: intruder?[2J"
    assert len(one_line("x" * 10_000)) == 200


async def test_a_kit_log_line_cannot_forge_journal_lines(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="edugate.drivers.kit.driver")
    kit = KitNodeProcess(tmp_path / "ttyKIT", tmp_path / "state", interval_ms=100)
    kit.start()
    try:
        async with running(kit) as (driver, emit):
            await next_of(emit, Reading)
            kit.inject(encode(Log(30, FORGED), 200))
            await until(lambda: driver.health.counters.get("kit_log_lines", 0) >= 1, "the kit's log line")
    finally:
        kit.close()
    said = [r.getMessage() for r in caplog.records if "says:" in r.getMessage()]
    assert said and all("\n" not in line and "\x1b" not in line for line in said), said
