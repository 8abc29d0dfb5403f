"""Outside check of the wedge driver's serial source: a reader that sends garbage (a wrong baudrate, line
noise) over a real pseudo-terminal. Every bad line is counted, the journal gets only a few lines naming the
device (rate-limited, with a count of what was held back), and a good card read afterwards still gets through."""

from __future__ import annotations

import logging
import random
from pathlib import Path

import pytest

from edugate.contract.records import Event
from edugate.simulators.wedge_serial import WedgeSerialSimulator
from tests.drivers.fakes import until
from tests.drivers.wedge.test_serial_source import PSEUDO, UID, config, running


async def test_a_garbage_flood_is_counted_logged_a_few_times_and_a_card_still_reads(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="edugate.drivers.wedge.driver")
    cfg = config(tmp_path / "ttyDESK", key_timeout_s=0.2)
    async with WedgeSerialSimulator(cfg.port or "") as sim, running(cfg, sim) as (driver, emit):
        noise = random.Random(7)
        for _ in range(200):  # 200 bad lines: control bytes, non-ASCII, NULs, a huge line without a break
            sim.send_raw(noise.randbytes(30).replace(b"\r", b"").replace(b"\n", b"") + b"\r\n")
        sim.send_raw(b"\x00" * 300 + b"\n" + b"7" * 5000 + b"\n")
        await until(lambda: driver.health.counters.get("bad_reads", 0) >= 202, "every bad line counted", 10)
        before = driver.health.counters["bad_reads"]
        for i in range(1, 26):  # 100 kB that never end a line: counted as it arrives, not swallowed in silence
            sim.send_raw(b"\x00" * 4096)
            await until(lambda i=i: driver.health.counters["bad_reads"] >= before + i * 4096 // 128 - 1, "a chunk", 5)
        sim.send_raw(b"\r\n")
        sim.tap(UID)
        tap = await emit.next(within_s=5)
        assert isinstance(tap, Event) and tap.data["card"] == PSEUDO(UID), "a good read after the garbage"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "rejected" in r.getMessage()]
    assert 1 <= len(warnings) <= 20, f"{len(warnings)} log lines for 1000 bad reads: the journal is flooded"
    assert all("desk-1" in w for w in warnings), "every line names the device"
