"""The Modbus driver against a real pymodbus server: TCP on a free port, RTU over a pseudo-terminal pair.

No mocks: the simulator (``simulators.modbus``) serves real frames, the driver
reads them with a real pymodbus client. Waits are on events (readings, log
records), never sleeps in loops.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import re
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from edugate.contract.records import Item, Reading, Rejected
from edugate.drivers.base import DeviceState
from edugate.drivers.modbus.driver import ModbusDeviceConfig, ModbusDriver, endpoint_key
from edugate.simulators.modbus import Fault, ModbusSimulator
from edugate.simulators.servers import free_port

PERIOD = 0.05
TIMEOUT = 0.2
SLOW_OK = 3.0  # tests of what is read, not of timeouts: a loaded CI machine must not turn them into one


# ---------------------------------------------------------------- helpers


class Readings:
    """A fake ``emit``: keeps every item and lets a test await the next reading of a device."""

    def __init__(self) -> None:
        self.items: list[Item] = []
        self._queues: defaultdict[str, asyncio.Queue[Reading]] = defaultdict(asyncio.Queue)

    async def __call__(self, item: Item) -> None:
        self.items.append(item)
        if isinstance(item, Reading):
            self._queues[item.device].put_nowait(item)

    async def next(self, device: str, within_s: float = 5.0) -> Reading:
        async with asyncio.timeout(within_s):
            return await self._queues[device].get()

    def fresh(self, device: str) -> None:
        """Forget queued readings, so that :meth:`next` returns one made from now on."""
        queue = self._queues[device]
        while not queue.empty():
            queue.get_nowait()


class LogWatch(logging.Handler):
    """Lets a test await a log record of ``drivers.modbus`` matching a pattern."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self._waiters: list[tuple[re.Pattern[str], int, asyncio.Future[logging.LogRecord]]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        for waiter in list(self._waiters):
            pattern, level, future = waiter
            if record.levelno >= level and pattern.search(record.getMessage()) and not future.done():
                future.set_result(record)
                self._waiters.remove(waiter)

    async def wait(self, pattern: str, level: int = logging.DEBUG, within_s: float = 5.0) -> logging.LogRecord:
        """The first record (logged already, or from now on) whose message matches ``pattern`` (a regex)."""
        regex = re.compile(pattern)
        for record in self.records:
            if record.levelno >= level and regex.search(record.getMessage()):
                return record
        future: asyncio.Future[logging.LogRecord] = asyncio.get_running_loop().create_future()
        self._waiters.append((regex, level, future))
        async with asyncio.timeout(within_s):
            return await future

    def warnings(self, device: str) -> list[str]:
        return [r.getMessage() for r in self.records if r.levelno >= logging.WARNING
                and r.getMessage().startswith(f"{device} ")]


@pytest.fixture
def logs() -> Iterator[LogWatch]:
    watch = LogWatch()
    logger = logging.getLogger("edugate.drivers.modbus.driver")
    old_level = logger.level
    logger.setLevel(logging.DEBUG)
    logger.addHandler(watch)
    yield watch
    logger.removeHandler(watch)
    logger.setLevel(old_level)


@pytest.fixture
def readings() -> Readings:
    return Readings()


def device(sim: ModbusSimulator, unit: int, id: str | None = None, **options: Any) -> ModbusDriver:
    """A driver for one simulated unit, fast settings for tests."""
    fields: dict[str, Any] = {"id": id or f"dev{unit}", "driver": "modbus", "unit": unit,
                              "profile": sim.unit(unit).profile_name, "poll_interval_s": PERIOD,
                              "timeout_s": TIMEOUT, "backoff_max_s": 0.2}
    if sim.transport == "tcp":
        fields |= {"host": sim.host, "port": sim.port}
    else:
        fields |= {"transport": "rtu", "serial_port": sim.device_path}
    fields.update(options)
    return ModbusDriver(ModbusDeviceConfig.model_validate(fields))


@contextlib.asynccontextmanager
async def running(*drivers: ModbusDriver, emit: Readings) -> AsyncIterator[None]:
    """Run drivers as tasks; cancel and close them afterwards, and fail if one crashed."""
    tasks = [asyncio.create_task(d.run(emit), name=d.device_id) for d in drivers]
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        for d in drivers:
            await d.close()
        for result in results:
            if isinstance(result, Exception):
                raise result


@pytest.fixture(params=["tcp", "rtu"])
async def lab(request: pytest.FixtureRequest) -> AsyncIterator[ModbusSimulator]:
    """Four lab sensors with fixed values, over TCP or over an RS485 line (pty)."""
    sim = ModbusSimulator({1: "lab-th", 2: "co2-ndir", 3: "ph-meter", 4: "energy-meter"},
                          transport=request.param, drift=False)
    async with sim:
        yield sim


# ---------------------------------------------------------------- values


async def test_readings_hold_the_scaled_values_the_device_holds(lab: ModbusSimulator, readings: Readings) -> None:
    lab.set_value(1, "temperature", -5.3)
    lab.set_value(1, "humidity", 48.2)
    lab.set_value(2, "co2", 1250)
    lab.set_value(2, "temperature", 22.4)
    lab.set_value(3, "ph", 6.85)
    for name, value in {"voltage": 229.6, "current": 1.234, "power": 283.4, "power_factor": 0.987,
                        "frequency": 49.98, "energy": 1234.567}.items():
        lab.set_value(4, name, value)
    drivers = [device(lab, u, id=name) for u, name in [(1, "th"), (2, "co2"), (3, "ph"), (4, "power")]]
    before = time.time()
    async with running(*drivers, emit=readings):
        got = {name: await readings.next(name) for name in ("th", "co2", "ph", "power")}
    assert got["th"].values == {"temperature": -5.3, "humidity": 48.2}
    assert got["co2"].values == {"humidity": 60.0, "temperature": 22.4, "co2": 1250}
    assert isinstance(got["co2"].values["co2"], int)
    assert got["ph"].values == {"ph": 6.85, "temperature": 23.0}
    assert got["power"].values == {"voltage": 229.6, "current": 1.234, "power": 283.4, "power_factor": 0.987,
                                   "frequency": 49.98, "energy": 1234.567}
    for unit, name in [(1, "th"), (2, "co2"), (3, "ph"), (4, "power")]:
        assert got[name].values == lab.expected_values(unit)
        assert got[name].device == name
        assert got[name].ts is not None and before <= got[name].ts <= time.time()
    assert all(d.health.state == DeviceState.STOPPED for d in drivers)


async def test_drifting_values_are_read_as_served(readings: Readings) -> None:
    async with ModbusSimulator({5: "co2-ndir"}, drift=True, update_interval_s=3600, seed=1) as sim:
        driver = device(sim, 5)
        async with running(driver, emit=readings):
            reading = await readings.next("dev5")
        assert reading.values == sim.expected_values(5)  # no update within the hour: what it serves now
        assert 400 <= reading.values["co2"] <= 2500


# ---------------------------------------------------------------- range reads


async def test_range_reads_cut_the_number_of_requests() -> None:
    async with ModbusSimulator({2: "co2-ndir", 4: "energy-meter"}, drift=False) as sim:
        co2 = device(sim, 2, timeout_s=SLOW_OK)
        await co2.poll()
        assert list(sim.unit(2).request_log) == [(3, 0, 3)]  # three values, one request

        meter = device(sim, 4, timeout_s=SLOW_OK)  # the profile allows gaps of 10 registers
        first = await meter.poll()
        assert list(sim.unit(4).request_log) == [(4, 0, 14), (4, 30, 2), (4, 70, 2), (4, 342, 2)]
        assert meter.health.counters == {"polls": 1, "reads": 4}

        sim.unit(4).request_log.clear()
        one_by_one = device(sim, 4, id="one-by-one", max_gap=0, timeout_s=SLOW_OK)
        assert (await one_by_one.poll()).values == first.values
        assert len(sim.unit(4).request_log) == 6

        sim.unit(4).request_log.clear()
        wide = device(sim, 4, id="wide", max_gap=124, timeout_s=SLOW_OK)
        assert (await wide.poll()).values == first.values
        assert list(sim.unit(4).request_log) == [(4, 0, 72), (4, 342, 2)]
        for d in (co2, meter, one_by_one, wide):
            await d.close()


# ---------------------------------------------------------------- schedule


def _gaps(items: list[Reading]) -> list[float]:
    stamps = [r.ts or 0.0 for r in items]
    return [b - a for a, b in itertools.pairwise(stamps)]


async def test_a_slow_device_skips_ticks_instead_of_piling_them_up(readings: Readings) -> None:
    async with ModbusSimulator({1: "lab-th"}, drift=False) as sim:
        sim.set_delay(1, 0.13)  # answers take longer than the 0.05 s poll period
        driver = device(sim, 1, timeout_s=1.0)
        async with running(driver, emit=readings):
            slow = [await readings.next("dev1") for _ in range(4)]
            skipped = driver.health.counters["skipped_polls"]
            sim.clear(1)
            readings.fresh("dev1")
            prompt = [await readings.next("dev1") for _ in range(6)]
        assert skipped >= 3 * 2  # at least two ticks missed per slow poll, none queued
        assert min(_gaps(slow)) >= 0.13
        # no burst of queued polls once the device is fast again: readings keep the period
        assert min(_gaps(prompt)) >= PERIOD * 0.8
        assert "errors" not in driver.health.counters
        assert driver.health.counters["polls"] - len(readings.items) in (0, 1)  # 1: cancelled mid-poll


async def test_a_blocked_event_loop_skips_the_missed_ticks(readings: Readings) -> None:
    async with ModbusSimulator({1: "lab-th"}, drift=False) as sim:
        driver = device(sim, 1)
        async with running(driver, emit=readings):
            await readings.next("dev1")
            time.sleep(0.3)  # noqa: ASYNC251  (deliberately block the loop, as a long sync call would)
            readings.fresh("dev1")
            after = [await readings.next("dev1") for _ in range(4)]
        assert driver.health.counters["skipped_polls"] >= 4
        assert min(_gaps(after)) >= PERIOD * 0.8


# ---------------------------------------------------------------- faults


def _fault_cases() -> list[Any]:
    reading = r"reading holding registers 0\.\.2"
    cases = {
        ("tcp", Fault.SILENCE): rf"timeout after 0\.2 s {reading}",
        ("tcp", Fault.EXCEPTION): rf"device refused {reading}: exception 2, illegal data address \(no such "
                                  r"register on this device: check the register map\)",
        ("tcp", Fault.GARBLED): rf"garbled response {reading}: protocol id 42405 in the MBAP header, not 0: not a "
                                r"Modbus/TCP answer .*\) \[received .. .. a5 a5 00 09 03 03 06 .*\]",
        ("tcp", Fault.SHORT): rf"short response {reading}: 1 of 3 registers",
        ("tcp", Fault.WRONG_UNIT): rf"garbled response {reading}: answer from unit 4, expected unit 3 "
                                   r"\[received .. .. 00 00 00 09 04 03 06 .*\]",
        ("tcp", Fault.DROP): rf"connection closed by the other end {reading}",
        ("rtu", Fault.SILENCE): rf"timeout after 0\.2 s {reading}",
        ("rtu", Fault.EXCEPTION): rf"device refused {reading}: exception 2, illegal data address .*",
        ("rtu", Fault.GARBLED): rf"garbled response {reading}: bad CRC [0-9a-f]{{4}}, computed [0-9a-f]{{4}} "
                                r"\(noise on the line\? check wiring, termination, baudrate\) \[received 03 03 06 .*\]",
        ("rtu", Fault.SHORT): rf"short response {reading}: 1 of 3 registers",
        ("rtu", Fault.WRONG_UNIT): rf"garbled response {reading}: answer from unit 4, expected unit 3 "
                                   r"\[received 04 03 06 .*\]",
        ("rtu", Fault.DROP): rf"timeout after 0\.2 s {reading}",  # a serial line cannot be dropped: silence
    }
    return [pytest.param(t, f, m, id=f"{t}-{f}") for (t, f), m in cases.items()]


@pytest.mark.parametrize(("transport", "fault", "message"), _fault_cases())
async def test_a_faulty_device_goes_offline_with_one_clear_message_and_comes_back(
        transport: str, fault: Fault, message: str, readings: Readings, logs: LogWatch) -> None:
    async with ModbusSimulator({1: "lab-th", 3: "co2-ndir"}, transport=transport, drift=False) as sim:  # type: ignore[arg-type]
        faulty, neighbour = device(sim, 3, id="lab1-co2"), device(sim, 1, id="lab1-th")
        prefix = rf"lab1-co2 \({re.escape(sim.endpoint)} unit 3\): "
        async with running(faulty, neighbour, emit=readings):
            await readings.next("lab1-co2")
            await readings.next("lab1-th")

            sim.inject(3, fault, exception_code=2)
            record = await logs.wait("^lab1-co2 ", level=logging.WARNING)
            assert re.fullmatch(prefix + message, record.getMessage()), record.getMessage()
            assert faulty.health.state == DeviceState.OFFLINE
            assert faulty.health.last_error == record.getMessage()
            await logs.wait(r"^lab1-co2 .*still failing, 2 times")  # retried, logged once at warning level
            assert logs.warnings("lab1-co2") == [record.getMessage()]

            readings.fresh("lab1-th")
            await readings.next("lab1-th")  # the other device on the same line keeps going
            assert neighbour.health.state == DeviceState.ONLINE

            readings.fresh("lab1-co2")
            sim.clear(3)
            back = await readings.next("lab1-co2")
            assert back.values == sim.expected_values(3)
            assert faulty.health.state == DeviceState.ONLINE
        assert faulty.health.counters["errors"] >= 2
        assert faulty.health.error_count == faulty.health.counters["errors"]
        assert any(re.match(r"lab1-co2 .*: back online after \d+ failed polls", r.getMessage()) for r in logs.records)
        assert logs.warnings("lab1-th") == []


async def test_pymodbus_does_not_log_on_every_retry(readings: Readings, caplog: pytest.LogCaptureFixture,
                                                    logs: LogWatch) -> None:
    caplog.set_level(logging.DEBUG, logger="edugate.drivers.modbus.driver")
    async with ModbusSimulator({3: "co2-ndir"}, drift=False) as sim:
        driver = device(sim, 3)
        async with running(driver, emit=readings):
            await readings.next("dev3")
            sim.inject(3, Fault.WRONG_UNIT)
            await logs.wait(r"still failing, 3 times")
    noisy = [r for r in caplog.records if r.name.startswith("pymodbus") and r.levelno >= logging.WARNING]
    assert noisy == []
    assert len([r for r in caplog.records if r.levelno >= logging.WARNING]) == 1


async def test_a_vanished_server_goes_offline_while_other_endpoints_keep_emitting(
        readings: Readings, logs: LogWatch) -> None:
    async with ModbusSimulator({1: "lab-th"}, drift=False) as first, \
            ModbusSimulator({1: "ph-meter"}, drift=False) as second:
        a, b = device(first, 1, id="room-a"), device(second, 1, id="room-b")
        async with running(a, b, emit=readings):
            await readings.next("room-a")
            await readings.next("room-b")

            await first.stop()
            await logs.wait(rf"^room-a \(127\.0\.0\.1:{first.port} unit 1\): cannot connect: connection refused "
                            r"\(nothing listens on that port: device off, or wrong port\?\)$", logging.WARNING)
            assert a.health.state == DeviceState.OFFLINE
            readings.fresh("room-b")
            for _ in range(3):
                await readings.next("room-b")
            assert b.health.state == DeviceState.ONLINE

            readings.fresh("room-a")
            await first.start()  # same port
            await readings.next("room-a")
            assert a.health.state == DeviceState.ONLINE
        assert logs.warnings("room-b") == []


async def test_nothing_listening_and_a_missing_serial_port_are_explained(readings: Readings, logs: LogWatch) -> None:
    port = free_port()
    tcp = ModbusDriver(ModbusDeviceConfig(id="nobody", driver="modbus", host="127.0.0.1", port=port,
                                          profile="lab-th", poll_interval_s=PERIOD, timeout_s=TIMEOUT))
    rtu = ModbusDriver(ModbusDeviceConfig(id="unplugged", driver="modbus", transport="rtu",
                                          serial_port="/dev/ttyEDUGATE-missing", profile="ph-meter",
                                          poll_interval_s=PERIOD, timeout_s=TIMEOUT))
    async with running(tcp, rtu, emit=readings):
        first = await logs.wait("^nobody ", logging.WARNING)
        second = await logs.wait("^unplugged ", logging.WARNING)
    assert first.getMessage() == (f"nobody (127.0.0.1:{port} unit 1): cannot connect: connection refused "
                                  "(nothing listens on that port: device off, or wrong port?)")
    assert second.getMessage() == ("unplugged (/dev/ttyEDUGATE-missing unit 1): cannot connect: serial port does "
                                   "not exist (is the USB-RS485 adapter plugged in?)")
    assert tcp.health.state == rtu.health.state == DeviceState.STOPPED
    assert readings.items == []


# ---------------------------------------------------------------- shared connections


async def test_devices_on_one_endpoint_share_one_connection(readings: Readings) -> None:
    async with ModbusSimulator({u: "lab-th" for u in range(1, 6)}, drift=False) as sim:
        drivers = [device(sim, u) for u in range(1, 6)]
        async with running(*drivers, emit=readings):
            for u in range(1, 6):
                await readings.next(f"dev{u}")
            assert sim.connection_count == 1
            assert {u.unit: u.request_count > 0 for u in sim.units.values()} == {u: True for u in range(1, 6)}


async def test_tcp_may_use_a_few_connections_per_endpoint(readings: Readings) -> None:
    async with ModbusSimulator({u: "lab-th" for u in range(1, 7)}, drift=False) as sim:
        sim.set_delay(1, 0.03)
        drivers = [device(sim, u, tcp_connections=3) for u in range(1, 7)]
        async with running(*drivers, emit=readings):
            for _ in range(3):
                for u in range(1, 7):
                    await readings.next(f"dev{u}")
            assert 2 <= sim.connection_count <= 3


async def test_a_bus_needs_one_set_of_serial_settings(readings: Readings, logs: LogWatch) -> None:
    async with ModbusSimulator({1: "lab-th", 2: "ph-meter"}, transport="rtu", drift=False) as sim:
        good = device(sim, 1, id="good")
        odd = device(sim, 2, id="odd", baudrate=19200, parity="E")
        async with running(good, odd, emit=readings):
            await readings.next("good")
            record = await logs.wait("^odd ", logging.WARNING)
            await readings.next("good")
        assert record.getMessage() == (
            f"odd ({sim.device_path} unit 2): serial settings conflict: 19200 8E1 here, 9600 8N1 for device 'good' "
            "on the same port: every device on one RS485 bus must use the same baudrate, parity, stop bits and "
            "data bits")


async def test_closing_the_last_device_releases_the_endpoint() -> None:
    from edugate.drivers.modbus.driver import _endpoints

    async with ModbusSimulator({1: "lab-th", 2: "lab-th"}, drift=False) as sim:
        a, b = device(sim, 1), device(sim, 2)
        await a.poll()
        await b.poll()
        table = _endpoints[asyncio.get_running_loop()]
        key = endpoint_key(a.config)
        assert table[key].users == {"dev1", "dev2"}
        await a.close()
        assert table[key].users == {"dev2"}
        await b.close()
        assert key not in table


# ---------------------------------------------------------------- the pipeline's answer


async def test_a_rejected_reading_is_counted_and_polling_goes_on(logs: LogWatch) -> None:
    got: list[Item] = []
    done = asyncio.Event()

    async def emit(item: Item) -> None:
        got.append(item)
        if len(got) == 1:
            raise Rejected("value out of range")
        if len(got) == 3:
            done.set()

    async with ModbusSimulator({1: "lab-th"}, drift=False) as sim:
        driver = device(sim, 1)
        task = asyncio.create_task(driver.run(emit))
        async with asyncio.timeout(5):
            await done.wait()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await driver.close()
    assert driver.health.counters["rejected"] == 1
    assert any(r.getMessage().endswith("reading rejected: value out of range") for r in logs.records)


async def test_a_nan_value_is_left_out_and_the_rest_of_the_reading_kept(readings: Readings, logs: LogWatch) -> None:
    """A float32 register holding NaN (sensor fault, warming up) costs that value, not the whole reading."""
    async with ModbusSimulator({4: "energy-meter"}, drift=False) as sim:
        sim.set_value(4, "voltage", 230.1)
        sim.set_value(4, "power", float("nan"))
        sim.set_value(4, "current", float("inf"))
        driver = device(sim, 4, id="meter")
        async with running(driver, emit=readings):
            first = await readings.next("meter")
            await readings.next("meter")
            sim.set_value(4, "power", 120.5)
            sim.set_value(4, "current", 0.52)
            while "power" not in (recovered := await readings.next("meter")).values:
                pass
    assert "power" not in first.values and "current" not in first.values
    assert first.values["voltage"] == 230.1
    assert recovered.values["power"] == 120.5 and recovered.values["current"] == 0.52
    assert driver.health.counters["values_not_finite"] >= 4  # two values, at least two polls
    warnings = [r.getMessage() for r in logs.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings  # once, not on every poll
    assert "meter (" in warnings[0] and "current, power reported as NaN or infinity" in warnings[0]
    assert any(r.getMessage().endswith("current, power reported as numbers again") for r in logs.records)
