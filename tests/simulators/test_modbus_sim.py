"""The Modbus lab-sensor simulator, checked with plain pymodbus clients (not the EduGate driver)."""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient, ModbusSerialClient, ModbusTcpClient

from edugate.drivers.modbus.codec import rtu_frame
from edugate.drivers.modbus.config import SimHint
from edugate.simulators.modbus import (
    Fault,
    ModbusSimulator,
    NullModem,
    SimulatorThread,
    SimValue,
    format_units,
    parse_units,
)
from edugate.simulators.servers import free_port, wait_for_port

REPO = Path(__file__).resolve().parents[2]


# ---------------------------------------------------------------- the value model


def test_a_walk_stays_within_its_realistic_range_and_moves() -> None:
    hint = SimHint(min=400, max=2500, start=650, step=15, daily=350)
    value = SimValue(hint, random.Random(3))
    seen = []
    for i in range(5000):
        value.step()
        seen.append(value.value(now=i * 60.0))
    assert all(400 <= v <= 2500 for v in seen)
    assert max(seen) - min(seen) > 300  # it does wander (and swing with the day)


def test_the_daily_swing_follows_the_clock() -> None:
    value = SimValue(SimHint(min=16, max=34, start=24, daily=2.5), random.Random(1), day_s=100.0)
    swing = [value.value(now=t) for t in range(100)]
    assert max(swing) - min(swing) == pytest.approx(5.0, abs=0.05)
    assert value.value(now=0.0, drift=False) == 24.0


def test_a_counter_only_grows() -> None:
    value = SimValue(SimHint(min=0, max=1e6, start=1234.5, step=0.01, kind="counter"), random.Random(2))
    seen = []
    for _ in range(1000):
        value.step()
        seen.append(value.value(now=0.0))
    assert seen == sorted(seen) and seen[0] > 1234.5


# ---------------------------------------------------------------- serving


async def test_a_plain_client_reads_what_the_simulator_holds() -> None:
    async with ModbusSimulator({1: "lab-th", 7: "co2-ndir"}, drift=False) as sim:
        sim.set_value(1, "temperature", -2.5)
        client = AsyncModbusTcpClient(sim.host, port=sim.port)
        await client.connect()
        th = await client.read_input_registers(1, count=2, device_id=1)
        co2 = await client.read_holding_registers(0, count=3, device_id=7)
        beyond = await client.read_holding_registers(0, count=4, device_id=7)
        nobody = await client.read_holding_registers(0, count=1, device_id=99)
        client.close()
    assert th.registers == [0x10000 - 25, 650]
    assert co2.registers == [600, 260, 650]
    assert beyond.isError() and beyond.exception_code == 2  # illegal data address, like the real device
    assert nobody.isError() and nobody.exception_code == 11  # a TCP gateway with nobody at that unit
    assert sim.unit(7).requests == {3: 2}
    assert list(sim.unit(7).request_log) == [(3, 0, 3), (3, 0, 4)]


async def test_faults_can_be_injected_and_cleared_per_unit() -> None:
    async with ModbusSimulator({1: "lab-th", 2: "lab-th"}, drift=False) as sim:
        client = AsyncModbusTcpClient(sim.host, port=sim.port)
        await client.connect()
        sim.inject(1, Fault.EXCEPTION, exception_code=6)
        refused = await client.read_input_registers(1, count=2, device_id=1)
        fine = await client.read_input_registers(1, count=2, device_id=2)
        sim.inject(2, Fault.SHORT)
        short = await client.read_input_registers(1, count=2, device_id=2)
        sim.clear()
        again = await client.read_input_registers(1, count=2, device_id=1)
        sim.inject(2, "drop")
        with pytest.raises(asyncio.TimeoutError):
            async with asyncio.timeout(0.3):
                await client.read_input_registers(1, count=2, device_id=2)
        client.close()
    assert refused.isError() and refused.exception_code == 6
    assert not fine.isError() and len(fine.registers) == 2
    assert short.registers == [240]
    assert not again.isError()


async def test_stop_and_start_keep_the_port() -> None:
    sim = ModbusSimulator({1: "ph-meter"}, drift=False)
    await sim.start()
    port = sim.port
    await sim.stop()
    assert not sim.running
    client = AsyncModbusTcpClient(sim.host, port=port, reconnect_delay=0)
    assert not await client.connect()
    await sim.start()
    assert sim.port == port and await client.connect()
    assert (await client.read_holding_registers(0, count=2, device_id=1)).registers == [700, 230]
    client.close()
    await sim.aclose()


async def test_rtu_over_a_virtual_cable() -> None:
    async with ModbusSimulator({3: "ph-meter"}, transport="rtu", drift=False) as sim:
        assert sim.device_path.startswith("/dev/")
        client = AsyncModbusSerialClient(sim.device_path, baudrate=9600, timeout=0.3, retries=0)
        assert await client.connect()
        ok = await client.read_holding_registers(0, count=2, device_id=3)
        sim.inject(3, Fault.GARBLED)
        with pytest.raises(asyncio.TimeoutError):  # bad CRC: pymodbus drops the frame
            async with asyncio.timeout(0.3):
                await client.read_holding_registers(0, count=2, device_id=3)
        client.close()
    assert ok.registers == [700, 230]


async def test_the_null_modem_carries_raw_bytes_both_ways() -> None:
    cable = NullModem()
    cable.open()
    loop = asyncio.get_running_loop()
    a = os.open(cable.server_path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
    b = os.open(cable.client_path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)

    async def receive(fd: int, size: int) -> bytes:
        data = b""
        while len(data) < size:
            ready = loop.create_future()
            loop.add_reader(fd, ready.set_result, None)
            try:
                async with asyncio.timeout(2):
                    await ready
            finally:
                loop.remove_reader(fd)
            data += os.read(fd, 256)
        return data

    try:
        frame = rtu_frame(1, bytes.fromhex("030000000a"))
        os.write(b, frame)
        assert await receive(a, len(frame)) == frame
        os.write(a, b"\x01\x83\x02\xc0\xf1")
        assert await receive(b, 5) == b"\x01\x83\x02\xc0\xf1"
    finally:
        os.close(a)
        os.close(b)
        cable.close()


def test_the_simulator_runs_in_a_thread_for_synchronous_code() -> None:
    with SimulatorThread(ModbusSimulator({5: "co2-ndir"}, drift=False)) as sim:
        client = ModbusTcpClient(sim.host, port=sim.port, timeout=2)
        assert client.connect()
        assert client.read_holding_registers(0, count=3, device_id=5).registers == [600, 260, 650]
        sim.set_value(5, "co2", 1800)
        assert client.read_holding_registers(2, count=1, device_id=5).registers == [1800]
        client.close()


def test_the_thread_runs_coroutines_on_the_simulator_loop() -> None:
    runner = SimulatorThread(ModbusSimulator({5: "co2-ndir"}, drift=False))
    sim = runner.start()
    try:
        runner.call(sim.stop)
        assert not sim.running
        runner.call(sim.start)
        client = ModbusTcpClient(sim.host, port=sim.port, timeout=2)
        assert client.read_holding_registers(2, count=1, device_id=5).registers == [650]
        client.close()
    finally:
        runner.stop()


# ---------------------------------------------------------------- command line


def test_unit_lists() -> None:
    assert parse_units("1-3,7") == [1, 2, 3, 7]
    assert format_units({1: "a", 2: "a", 3: "b", 5: "b"}) == "1-2=a, 3=b, 5=b"
    with pytest.raises(argparse.ArgumentTypeError, match=r"1\.\.247"):
        parse_units("0-3")


def test_the_command_line_serves_tcp_until_terminated() -> None:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "edugate.simulators.modbus", "--port", str(port), "--units", "1-3",
                             "--profile", "co2-ndir", "--units", "9", "--profile", "lab-th", "--no-drift"],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_port("127.0.0.1", port, proc=proc)
        client = ModbusTcpClient("127.0.0.1", port=port, timeout=2)
        assert client.read_holding_registers(0, count=3, device_id=2).registers == [600, 260, 650]
        assert client.read_input_registers(1, count=2, device_id=9).registers == [240, 650]
        client.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert f"4 unit(s) on 127.0.0.1:{port} (1-3=co2-ndir, 9=lab-th)" in out


def test_the_command_line_serves_rtu_on_a_linked_pty(tmp_path: Path) -> None:
    link = tmp_path / "ttyRS485"
    proc = subprocess.Popen([sys.executable, "-m", "edugate.simulators.modbus", "--rtu", str(link), "--units", "4",
                             "--profile", "ph-meter", "--no-drift"],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        banner = proc.stdout.readline()
        assert link.is_symlink(), banner
        client = ModbusSerialClient(str(link), baudrate=9600, timeout=2)
        assert client.connect()
        assert client.read_holding_registers(0, count=2, device_id=4).registers == [700, 230]
        client.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=10)
    assert proc.returncode == 0
    assert not link.exists()
