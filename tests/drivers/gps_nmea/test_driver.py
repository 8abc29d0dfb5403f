"""The NMEA GPS driver: parsing on plain strings, then the whole driver over a real pty.

The simulator (``simulators.gps_nmea``) writes real NMEA bytes to a pseudo-terminal;
the driver reads them with pyserial, as it would read ``/dev/serial0``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pynmea2
import pytest

from edugate.drivers.base import DeviceState
from edugate.drivers.gps_nmea.driver import (
    BadSentence,
    GpsNmeaConfig,
    GpsNmeaDriver,
    GpsState,
    NmeaParser,
    parse_sentence,
)
from edugate.drivers.registry import driver_class
from edugate.drivers.serial_link import ReopeningPort
from edugate.simulators.gps_nmea import GpsSimulator, Route, nmea_lat, nmea_lon, sentence
from tests.drivers.fakes import FakeEmit, until

PERIOD = 0.02  # real seconds per simulated GPS second
INTERVAL = 0.2

RMC = sentence("GPRMC,083015.00,A,1046.61400,N,10642.05400,E,16.199,315.0,020326,,,A")
GGA = sentence("GPGGA,083015.00,1046.61400,N,10642.05400,E,1,09,0.9,12.0,M,2.1,M,,")
RMC_NOFIX = sentence("GPRMC,083016.00,V,,,,,,,020326,,,N")
GGA_NOFIX = sentence("GPGGA,083016.00,,,,,0,02,,,M,,M,,")


# ---------------------------------------------------------------- parsing (pure)


def parsed(text: str) -> list[pynmea2.NMEASentence | BadSentence]:
    return NmeaParser().feed(text.encode("latin-1"))


def test_rmc_and_gga_make_one_state() -> None:
    state = GpsState()
    for item in parsed(RMC + GGA):
        assert not isinstance(item, BadSentence)
        state.update(item, 0.0)
    assert state.values() == {"fix": 1, "lat": pytest.approx(10.776900), "lon": pytest.approx(106.700900),
                              "speed_kmh": pytest.approx(30.0, abs=0.01), "satellites": 9, "hdop": 0.9}


def test_no_fix_has_no_position() -> None:
    state = GpsState()
    for item in parsed(RMC + GGA + RMC_NOFIX + GGA_NOFIX):
        state.update(item, 0.0)
    assert state.values() == {"fix": 0, "satellites": 2}


def test_sentences_split_across_reads_and_unknown_types() -> None:
    parser = NmeaParser()
    data = (RMC + sentence("GPXYZ,1,2") + sentence("GPGSV,1,1,01,04,45,120,40")).encode()
    out = parser.feed(data[:17]) + parser.feed(data[17:])
    assert [type(x).__name__ for x in out] == ["RMC", "GSV"]  # XYZ: a valid sentence of no known type


@pytest.mark.parametrize(("text", "kind", "sentence_type", "message"), [
    (RMC[:-4] + "00\r\n", "bad_checksum", "GPRMC", "checksum does not match"),
    (RMC[:30] + "\r\n", "truncated", "GPRMC", "cut off"),
    (RMC[:30] + GGA, "truncated", "GPRMC", "cut off"),  # the next sentence began inside this one
    ("\x00\xff\x13 noise\r\n", "garbage", "?", "not NMEA text"),
    ("hello\r\n", "garbage", "?", "without '$'"),
])
def test_bad_lines_say_what_is_wrong(text: str, kind: str, sentence_type: str, message: str) -> None:
    out = parsed(text)
    bad = out[0]
    assert isinstance(bad, BadSentence), out
    assert (bad.kind, bad.sentence) == (kind, sentence_type)
    assert message in str(bad)
    if text.endswith(GGA):
        assert type(out[1]).__name__ == "GGA"


def test_endless_line_is_garbage() -> None:
    out = NmeaParser().feed(b"A" * 600)
    assert len(out) == 1 and isinstance(out[0], BadSentence) and out[0].kind == "garbage"


def test_fields_that_make_no_sense_are_refused() -> None:
    for body in ("GPGGA,083015.00,1046.614,N,10642.054,E,1,xx,0.9,12.0,M,2.1,M,,",
                 "GPRMC,083015.00,A,1046.614,Q,10642.054,E,16.2,315.0,020326,,,A",
                 "GPRMC,083015.00,A,10x6.614,N,10642.054,E,16.2,315.0,020326,,,A"):
        msg = parse_sentence(sentence(body).strip())
        assert msg is not None and not isinstance(msg, BadSentence)
        with pytest.raises(ValueError):
            GpsState().update(msg, 0.0)


def test_simulator_encodes_positions_exactly() -> None:
    text, hemi, value = nmea_lat(-33.8688)
    assert (text, hemi) == ("3352.12800", "S") and value == pytest.approx(-33.8688)
    assert nmea_lon(106.7009)[:2] == ("10642.05400", "E")
    route = Route([(10.0, 106.0), (10.01, 106.0)])
    assert route.at(route.lengths[0] / 2)[:2] == pytest.approx((10.005, 106.0))
    assert route.at(route.length_m)[:2] == pytest.approx((10.0, 106.0))  # closed: back at the start


def test_registered_as_gps_nmea() -> None:
    assert driver_class("gps-nmea") is GpsNmeaDriver


# ---------------------------------------------------------------- the driver over a pty


@contextlib.asynccontextmanager
async def running(tmp_path: Path, **options: Any) -> AsyncIterator[tuple[GpsNmeaDriver, GpsSimulator, FakeEmit]]:
    sim = GpsSimulator(tmp_path / "ttyGPS", period_s=PERIOD)
    fields = {"id": "bus-7-gps", "driver": "gps-nmea", "port": str(sim.link), "interval_s": INTERVAL,
              "silence_s": 0.5, "reopen_max_s": 0.05} | options
    driver = GpsNmeaDriver(GpsNmeaConfig.model_validate(fields))
    emit = FakeEmit()
    async with sim:
        task = asyncio.create_task(driver.run(emit), name="gps")
        try:
            yield driver, sim, emit
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await driver.close()


async def test_readings_follow_the_route(tmp_path: Path) -> None:
    async with running(tmp_path) as (driver, sim, emit):
        readings = [await emit.next() for _ in range(5)]
        assert driver.health.state is DeviceState.ONLINE
    sent = {(e.lat, e.lon): e for e in sim.sent if e.fix}
    distances = []
    for reading in readings:
        v = reading.values
        assert reading.device == "bus-7-gps"
        assert set(v) == {"fix", "lat", "lon", "speed_kmh", "satellites", "hdop"}
        assert (v["fix"], v["satellites"], v["hdop"]) == (1, 9, 0.9)
        assert v["speed_kmh"] == pytest.approx(30.0, abs=0.01)
        match = [e for (lat, lon), e in sent.items()
                 if abs(lat - v["lat"]) < 2e-7 and abs(lon - v["lon"]) < 2e-7]
        assert match, f"reading {v} is not a position the receiver sent"
        distances.append(match[0].distance_m)
    assert distances == sorted(distances) and distances[-1] > distances[0]  # the bus moves forward
    times = [t for t, _ in emit.readings]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert min(gaps) >= INTERVAL - 0.001  # at most one reading per interval_s
    fix = driver.last_fix
    assert fix is not None
    latest = [e for (lat, lon), e in sent.items() if abs(lat - fix.lat) < 2e-7 and abs(lon - fix.lon) < 2e-7]
    assert latest and latest[0].distance_m >= distances[-1]  # last_fix: the newest position seen
    assert driver.health.counters.get("bad_sentences") is None


async def test_bad_sentences_are_counted_logged_and_skipped(tmp_path: Path,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="edugate.drivers.gps_nmea.driver")
    async with running(tmp_path) as (driver, sim, emit):
        await emit.next()
        sim.inject_bad_checksum(3)
        sim.inject_garbage()
        await sim.wait_epochs(4)
        sim.inject_truncated()
        await sim.wait_epochs(3)
        emit.fresh()
        reading = await emit.next()
        assert reading.values["fix"] == 1
        counters = driver.health.counters
        assert counters["bad_sentences.bad_checksum"] == 3
        assert counters["bad_sentences.truncated"] == 1
        assert counters["bad_sentences.garbage"] == 1
        assert counters["bad_sentences"] == 5
        assert driver.health.state is DeviceState.ONLINE
    messages = [r.getMessage() for r in caplog.records]
    checksum_logs = [m for m in messages if "bad_checksum" in m]
    assert len(checksum_logs) == 1, messages  # the first at once; the rest held back (one a minute)
    pattern = r"bus-7-gps: bad NMEA sentence \(GPRMC, bad_checksum\): checksum does not match: \w\w != \w\w$"
    assert re.search(pattern, checksum_logs[0])
    assert any("(GPRMC, truncated)" in m for m in messages)


async def test_no_fix_reports_fix_0_without_a_position(tmp_path: Path) -> None:
    async with running(tmp_path) as (driver, sim, emit):
        await emit.next()
        known = driver.last_fix
        assert known is not None
        sim.set_fix(False)
        await sim.wait_epochs(2)
        emit.fresh()
        reading = await emit.next()
        assert reading.values == {"fix": 0, "satellites": 2}
        assert driver.last_fix is not None and driver.last_fix.ts >= known.ts  # the last known position stays
        no_fix_at = driver.last_fix
        sim.set_fix(True)
        await sim.wait_epochs(2)
        emit.fresh()
        reading = await emit.next()
        assert reading.values["fix"] == 1 and "lat" in reading.values
        assert driver.last_fix.ts > no_fix_at.ts
        assert (driver.last_fix.lat, driver.last_fix.lon) != (no_fix_at.lat, no_fix_at.lon)


async def test_unplug_and_replug_recovers(tmp_path: Path) -> None:
    async with running(tmp_path) as (driver, sim, emit):
        await emit.next()
        sim.unplug()
        await until(lambda: driver.health.state is DeviceState.OFFLINE)
        assert (driver.health.last_error or "").startswith(f"lost {sim.link}")
        await until(lambda: "cannot open" in (driver.health.last_error or ""))
        sim.plug()
        await until(lambda: driver.health.state is DeviceState.ONLINE)
        emit.fresh()
        reading = await emit.next()
        assert reading.values["fix"] == 1
        assert driver.health.counters["disconnects"] == 1


async def test_silence_and_garbage_only_mark_the_receiver_offline(tmp_path: Path,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="edugate.drivers.gps_nmea.driver")
    async with running(tmp_path, silence_s=0.3) as (driver, sim, emit):
        await emit.next()
        sim.pause()
        await until(lambda: driver.health.state is DeviceState.OFFLINE)
        assert "no valid NMEA sentence" in (driver.health.last_error or "")
        assert "check the receiver's power" in (driver.health.last_error or "")
        sim.resume()
        await until(lambda: driver.health.state is DeviceState.ONLINE)
        sim.pause()
        for _ in range(40):  # a receiver at another baud rate: only noise arrives
            sim.port.write(b"\xf0\x0f\xaa\x55\xc3\r\n")
            await asyncio.sleep(0.01)
            if driver.health.state is DeviceState.OFFLINE:
                break
        assert driver.health.state is DeviceState.OFFLINE
        assert "check the baud rate (9600)" in (driver.health.last_error or "")
        sim.resume()
        await until(lambda: driver.health.state is DeviceState.ONLINE)
    assert any("GPS on" in r.getMessage() and "is back" in r.getMessage() for r in caplog.records)


async def test_a_missing_port_is_retried_without_crashing(tmp_path: Path) -> None:
    cfg = GpsNmeaConfig.model_validate({"id": "bus-1-gps", "driver": "gps-nmea", "reopen_max_s": 0.05,
                                        "port": str(tmp_path / "nothing-here")})
    driver = GpsNmeaDriver(cfg)
    task = asyncio.create_task(driver.run(FakeEmit()))
    try:
        await until(lambda: driver.health.error_count >= 2)
        assert driver.health.state is DeviceState.OFFLINE
        assert "cannot open" in (driver.health.last_error or "") and not task.done()
        assert (driver.health.last_error or "").startswith(f"{tmp_path / 'nothing-here'}: ")  # names the port
        assert "no such serial port" in (driver.health.last_error or "")  # and says why, in plain words
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def test_the_port_is_kept_by_the_shared_serial_link() -> None:
    cfg = GpsNmeaConfig.model_validate({"id": "bus-1-gps", "driver": "gps-nmea", "reopen_max_s": 2.5})
    driver = GpsNmeaDriver(cfg)
    assert isinstance(driver.port, ReopeningPort)  # open, back-off and reopen are written once, for every driver
    assert (driver.port.path, driver.port.baudrate, driver.port.backoff.cap) == ("/dev/serial0", 9600, 2.5)
