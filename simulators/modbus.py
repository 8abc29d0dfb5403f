"""Simulated Modbus lab sensors on a real pymodbus server: TCP, or RTU over a pseudo-terminal pair.

Each unit serves a device profile (``drivers/modbus/profiles/<name>.yaml``) with values
that drift realistically (a slow random walk within the profile's ``sim``
range plus a daily sinusoid), and can be told at runtime to misbehave
(:class:`Fault`), to answer slowly, or to vanish with the whole server.

In a test (one event loop)::

    async with ModbusSimulator({1: "lab-th", 2: "co2-ndir"}, drift=False) as sim:
        sim.set_value(2, "co2", 1250)
        ...  # a client reads 127.0.0.1:sim.port
        sim.inject(2, Fault.GARBLED)  # or SILENCE, EXCEPTION, SHORT, WRONG_UNIT, DROP
        sim.clear(2)
        await sim.stop(); await sim.start()  # same port

RTU: ``ModbusSimulator(..., transport="rtu")`` serves on one end of a virtual
null-modem cable (two pty pairs joined by a relay); clients open
``sim.device_path`` like a USB-RS485 adapter.

From synchronous code or the demo: ``with SimulatorThread(ModbusSimulator(...)) as sim: ...``.
From a shell: ``python -m edugate.simulators.modbus --port 5020 --units 1-10 --profile lab-th``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import logging
import math
import os
import random
import signal
import sys
import threading
import time
import tty
from collections import Counter, deque
from collections.abc import Callable, Coroutine, Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal, TypeVar

from pymodbus.constants import ExcCodes
from pymodbus.pdu import ExceptionResponse, ModbusPDU
from pymodbus.pdu.device import ModbusDeviceIdentification
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from edugate.drivers.modbus.codec import Point
from edugate.drivers.modbus.config import Profile, SimHint, load_profile
from edugate.simulators.servers import free_port

log = logging.getLogger(__name__)

if logging.getLogger("pymodbus").level == logging.NOTSET:  # pymodbus logs every dropped/garbled frame
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)

DAY_S = 86400.0
_FC_FUNCTION = {3: "holding", 4: "input"}
T = TypeVar("T")


class Fault(StrEnum):
    """Ways a unit can misbehave (see :meth:`ModbusSimulator.inject`)."""

    SILENCE = "silence"  # no answer at all (device off, cable cut, wrong unit id)
    EXCEPTION = "exception"  # a Modbus exception response (default code 4, server device failure)
    GARBLED = "garbled"  # corrupt bytes: RTU with a bad CRC, TCP with a broken MBAP header
    SHORT = "short"  # a well-formed answer with fewer registers than asked
    WRONG_UNIT = "wrong_unit"  # the answer carries another unit id
    DROP = "drop"  # close the TCP connection instead of answering (RTU: like SILENCE)


# ---------------------------------------------------------------- realistic values


@dataclass
class SimValue:
    """One simulated quantity: a random walk within ``hint.min..max`` plus a daily sinusoid."""

    hint: SimHint | None
    rng: random.Random
    day_s: float = DAY_S
    base: float = 0.0
    phase: float = 0.0

    def __post_init__(self) -> None:
        h = self.hint
        if h is not None:
            self.base = h.start if h.start is not None else (h.min + h.max) / 2
        self.phase = self.rng.uniform(0, 2 * math.pi)

    def step(self, n: float = 1.0) -> None:
        """Advance the walk by ``n`` updates' worth of change."""
        h = self.hint
        if h is None or n <= 0:
            return
        size = h.step if h.step is not None else (h.max - h.min) * 0.005
        if h.kind == "counter":
            self.base = min(h.max, self.base + size * n * self.rng.uniform(0.5, 1.5))
            return
        center = (h.min + h.max) / 2
        self.base += self.rng.gauss(0.0, size * math.sqrt(n)) + (center - self.base) * min(1.0, 0.002 * n)
        span = h.max - h.min
        while not h.min <= self.base <= h.max:  # reflect at the edges
            self.base = 2 * h.min - self.base if self.base < h.min else 2 * h.max - self.base
            if span <= 0:
                break

    def value(self, now: float, drift: bool = True) -> float:
        h = self.hint
        if h is None or not drift or h.kind == "counter":
            return self.base
        v = self.base + h.daily * math.sin(2 * math.pi * now / self.day_s + self.phase)
        return min(h.max, max(h.min, v))


@dataclass
class SimUnit:
    """One simulated device: its profile, current values, fault and request counters."""

    unit: int
    profile_name: str
    profile: Profile
    values: dict[str, SimValue]
    fault: Fault | None = None
    exception_code: int = int(ExcCodes.DEVICE_FAILURE)
    delay_s: float = 0.0
    requests: Counter[int] = field(default_factory=Counter)  # by function code
    request_log: deque[tuple[int, int, int]] = field(default_factory=lambda: deque(maxlen=1000))
    last_update: float = 0.0

    @functools.cached_property
    def points(self) -> dict[str, Point]:
        return {r.name: r.point() for r in self.profile.registers}

    @property
    def request_count(self) -> int:
        return sum(self.requests.values())

    def block_ranges(self) -> dict[str, tuple[int, int]]:
        """``function -> (first address, end address)`` covering every register of that function."""
        out: dict[str, tuple[int, int]] = {}
        for p in self.points.values():
            lo, hi = out.get(p.function, (p.address, p.end))
            out[p.function] = (min(lo, p.address), max(hi, p.end))
        return out


# ---------------------------------------------------------------- a virtual RS485 cable


class NullModem:
    """Two pseudo-terminals joined back to back: what one side writes, the other reads.

    ``server_path`` and ``client_path`` are real tty device files (``/dev/pts/N``);
    serial libraries open them like a USB adapter. The relay runs on the event
    loop that called :meth:`open`.
    """

    def __init__(self) -> None:
        self._fds: list[int] = []
        self._masters: tuple[int, int] = (-1, -1)
        self.server_path = self.client_path = ""
        self._loop: asyncio.AbstractEventLoop | None = None

    def open(self) -> None:
        m1, s1 = os.openpty()
        m2, s2 = os.openpty()
        self._fds = [m1, s1, m2, s2]
        for fd in (s1, s2):
            tty.setraw(fd)  # no echo or line editing before the serial library configures the port
        for fd in (m1, m2):
            os.set_blocking(fd, False)
        self._masters = (m1, m2)
        self.server_path, self.client_path = os.ttyname(s1), os.ttyname(s2)
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(m1, self._relay, m1, m2)
        self._loop.add_reader(m2, self._relay, m2, m1)

    @staticmethod
    def _relay(src: int, dst: int) -> None:
        try:
            data = os.read(src, 4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:  # the other side closed; our own slave fds keep the pair alive
            return
        with contextlib.suppress(BlockingIOError):
            os.write(dst, data)

    def close(self) -> None:
        if self._loop is not None:
            for fd in self._masters:
                self._loop.remove_reader(fd)
            self._loop = None
        for fd in self._fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._fds = []


# ---------------------------------------------------------------- the simulator


class ModbusSimulator:
    """Serve simulated lab sensors, one unit id each, on a real pymodbus server.

    ``units`` maps unit id (1..247) to a profile name (or path). ``drift=False``
    keeps every value fixed (tests set them with :meth:`set_value`).
    ``update_interval_s`` is how often a value may change (like a sensor's own
    sampling); ``day_s`` the period of the daily sinusoid (shorten it for a
    demo). ``port=0`` picks a free port once; it stays the same across
    :meth:`stop` / :meth:`start`.
    """

    def __init__(
        self,
        units: Mapping[int, str],
        *,
        transport: Literal["tcp", "rtu"] = "tcp",
        host: str = "127.0.0.1",
        port: int = 0,
        baudrate: int = 9600,
        parity: str = "N",
        stopbits: int = 1,
        drift: bool = True,
        update_interval_s: float = 1.0,
        day_s: float = DAY_S,
        seed: int | None = None,
        identity: Mapping[str, str] | None = None,
    ) -> None:
        if not units:
            raise ValueError("at least one unit is needed")
        bad = [u for u in units if not 1 <= u <= 247]
        if bad:
            raise ValueError(f"unit ids must be within 1..247, not {bad}")
        self.transport = transport
        self.host = host
        self.port = port or (free_port(host) if transport == "tcp" else 0)
        self.baudrate, self.parity, self.stopbits = baudrate, parity, stopbits
        self.drift = drift
        self.update_interval_s = update_interval_s
        self.units: dict[int, SimUnit] = {}
        master = random.Random(seed)
        for unit, ref in sorted(units.items()):
            profile = load_profile(ref)
            rng = random.Random(master.getrandbits(64))
            values = {r.name: SimValue(r.sim, rng, day_s) for r in profile.registers}
            self.units[unit] = SimUnit(unit, ref, profile, values)
        first = self.units[min(self.units)].profile
        self.identity: dict[str, str] = dict(identity) if identity is not None else {
            "VendorName": "EduSim", "ProductCode": (first.models or ["SIM"])[0], "MajorMinorRevision": "1.0",
            "ProductName": first.description[:60], "ModelName": (first.models or ["SIM"])[0]}
        """What Read Device Identification (function 43/14) answers, the same for every unit of the server
        (pymodbus keeps one identity per server); ``identity={}`` answers with no objects."""
        self.null_modem: NullModem | None = None
        self._server: ModbusTcpServer | ModbusSerialServer | None = None
        self._answering: int | None = None  # unit of the response being sent (between trace_pdu and trace_packet)

    # ------------------------------------------------ lifecycle

    @property
    def running(self) -> bool:
        return self._server is not None

    @property
    def device_path(self) -> str:
        """RTU: the serial device a client opens (the other end of the virtual cable)."""
        if self.null_modem is None:
            raise RuntimeError("device_path exists once an RTU simulator has been started")
        return self.null_modem.client_path

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.port}" if self.transport == "tcp" else self.device_path

    async def start(self) -> None:
        """Start serving (again, on the same port or cable)."""
        if self._server is not None:
            return
        devices = [SimDevice(u.unit, simdata=self._simdata(u), action=functools.partial(self._action, u))
                   for u in self.units.values()]
        devices.append(SimDevice(0, simdata=self._simdata(None)))  # any other unit id
        identity = ModbusDeviceIdentification(info_name=self.identity)  # function 43/14
        server: ModbusTcpServer | ModbusSerialServer
        if self.transport == "tcp":
            server = ModbusTcpServer(devices, address=(self.host, self.port), trace_packet=self._trace_packet,
                                     trace_pdu=self._trace_pdu, identity=identity)
        else:
            if self.null_modem is None:
                self.null_modem = NullModem()
                self.null_modem.open()
            server = ModbusSerialServer(devices, port=self.null_modem.server_path, baudrate=self.baudrate,
                                        parity=self.parity, stopbits=self.stopbits, reconnect_delay=0,
                                        trace_packet=self._trace_packet, trace_pdu=self._trace_pdu,
                                        identity=identity)
        await server.serve_forever(background=True)
        self._server = server

    async def stop(self) -> None:
        """Stop answering: TCP closes the listener and every connection; RTU leaves the cable but goes silent."""
        server, self._server = self._server, None
        if server is not None:
            await server.shutdown()

    async def restart(self) -> None:
        await self.stop()
        await self.start()

    async def aclose(self) -> None:
        """Stop, and remove the virtual cable (RTU)."""
        await self.stop()
        if self.null_modem is not None:
            self.null_modem.close()
            self.null_modem = None

    async def __aenter__(self) -> ModbusSimulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # ------------------------------------------------ values and faults

    def unit(self, unit: int) -> SimUnit:
        try:
            return self.units[unit]
        except KeyError:
            raise KeyError(f"no simulated unit {unit} (units: {sorted(self.units)})") from None

    def set_value(self, unit: int, name: str, value: float) -> None:
        """Put a value in engineering units (with drift on, the walk continues from there)."""
        u = self.unit(unit)
        if name not in u.values:
            raise KeyError(f"unit {unit} ({u.profile_name}) has no value {name!r} (has: {', '.join(u.values)})")
        u.values[name].base = float(value)

    def expected_values(self, unit: int) -> dict[str, int | float]:
        """What a correct client decodes from this unit right now (values after register rounding)."""
        u = self.unit(unit)
        now = time.time()
        return {name: p.decode(p.encode(u.values[name].value(now, self.drift))) for name, p in u.points.items()}

    def inject(self, unit: int, fault: Fault | str, *, exception_code: int | None = None) -> None:
        """Make ``unit`` misbehave until :meth:`clear`."""
        u = self.unit(unit)
        u.fault = Fault(fault)
        if exception_code is not None:
            u.exception_code = int(ExcCodes(exception_code))

    def set_delay(self, unit: int, seconds: float) -> None:
        """Answer ``unit``'s requests only after ``seconds`` (a slow device; 0 = prompt)."""
        self.unit(unit).delay_s = max(0.0, seconds)

    def clear(self, unit: int | None = None) -> None:
        """Remove faults and delays of one unit, or of all."""
        for u in [self.unit(unit)] if unit is not None else self.units.values():
            u.fault = None
            u.delay_s = 0.0
            u.exception_code = int(ExcCodes.DEVICE_FAILURE)

    def drop_connections(self) -> int:
        """Close every client connection now (TCP; a serial line has none); returns how many were open."""
        if self._server is None or self.transport != "tcp":
            return 0
        connections = list(self._server.active_connections.values())
        for conn in connections:
            conn.close()
        return len(connections)

    @property
    def connection_count(self) -> int:
        """Client connections open now (TCP)."""
        return len(self._server.active_connections) if self._server is not None else 0

    @property
    def request_count(self) -> int:
        """Read requests received for every unit since start."""
        return sum(u.request_count for u in self.units.values())

    # ------------------------------------------------ pymodbus hooks

    def _simdata(self, unit: SimUnit | None) -> tuple[list[SimData], list[SimData], list[SimData], list[SimData]]:
        ranges = unit.block_ranges() if unit is not None else {}
        blocks: list[list[SimData]] = []
        for function in ("holding", "input"):
            if function in ranges:
                lo, hi = ranges[function]  # gaps read as 0, like most devices
                blocks.append([SimData(lo, count=hi - lo, values=0, datatype=DataType.REGISTERS)])
            else:
                blocks.append([SimData(0, count=1, datatype=DataType.INVALID)])
        bits = [SimData(0, values=[False] * 16, datatype=DataType.BITS)]
        return (bits, list(bits), blocks[0], blocks[1])

    async def _action(self, unit: SimUnit, func_code: int, start: int, address: int, count: int,
                      registers: list[int], values: list[int] | list[bool] | None) -> ExcCodes | None:
        """Called by pymodbus for every valid access: apply delay and faults, then refresh the registers."""
        if unit.delay_s:
            await asyncio.sleep(unit.delay_s)
        if unit.fault == Fault.EXCEPTION:
            return ExcCodes(unit.exception_code)
        function = _FC_FUNCTION.get(func_code)
        if function is None or values is not None:
            return None
        now = time.time()
        if self.drift and now - unit.last_update >= self.update_interval_s:
            steps = (now - unit.last_update) / self.update_interval_s if unit.last_update else 1.0
            for v in unit.values.values():
                v.step(min(steps, 1000.0))
            unit.last_update = now
        for name, p in unit.points.items():
            if p.function == function:
                offset = p.address - start
                registers[offset : offset + p.width] = p.encode(unit.values[name].value(now, self.drift))
        return None

    def _trace_pdu(self, sending: bool, pdu: ModbusPDU) -> ModbusPDU:
        unit = self.units.get(pdu.dev_id)
        if not sending:
            if unit is not None:
                unit.requests[pdu.function_code] += 1
                unit.request_log.append((pdu.function_code, pdu.address, pdu.count))
            return pdu
        self._answering = pdu.dev_id
        if unit is None:  # like a TCP gateway with nobody at that address
            return ExceptionResponse(pdu.function_code & 0x7F, ExcCodes.GATEWAY_NO_RESPONSE, pdu.dev_id,
                                     pdu.transaction_id)
        if unit.fault == Fault.SHORT and pdu.registers:
            pdu.registers = list(pdu.registers[: len(pdu.registers) // 2])
        elif unit.fault == Fault.WRONG_UNIT:
            pdu.dev_id = unit.unit % 247 + 1
        return pdu

    def _trace_packet(self, sending: bool, data: bytes) -> bytes:
        if not sending:
            return data
        unit_id, self._answering = self._answering, None
        unit = self.units.get(unit_id) if unit_id is not None else None
        if unit is None:
            return b"" if self.transport == "rtu" else data  # an RS485 bus stays silent for unknown units
        if unit.fault in (Fault.SILENCE, Fault.DROP):
            if unit.fault == Fault.DROP:
                self.drop_connections()
            return b""
        if unit.fault == Fault.GARBLED:
            garbled = bytearray(data)
            if self.transport == "rtu":
                garbled[-3] ^= 0x5A  # a flipped data byte: the CRC no longer matches
            else:
                garbled[2:4] = b"\xa5\xa5"  # MBAP protocol id must be 0
            return bytes(garbled)
        return data


# ---------------------------------------------------------------- running in a thread


class SimulatorThread:
    """Run a :class:`ModbusSimulator` on its own event loop in a daemon thread.

    For synchronous code (the demo, benchmarks, a REPL). Fault methods
    (``inject``, ``clear``, ``set_value``...) may be called directly on
    :attr:`sim`; use :meth:`call` for coroutines such as ``sim.stop``.
    """

    def __init__(self, sim: ModbusSimulator) -> None:
        self.sim = sim
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> ModbusSimulator:
        ready = threading.Event()
        failure: list[BaseException] = []

        def main() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(self.sim.start())
            except (OSError, RuntimeError) as exc:
                failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self.sim.aclose())
            loop.close()

        self._thread = threading.Thread(target=main, name=f"modbus-sim-{self.sim.port}", daemon=True)
        self._thread.start()
        ready.wait()
        if failure:
            raise failure[0]
        return self.sim

    def call(self, fn: Callable[[], Coroutine[Any, Any, T]], timeout: float = 10.0) -> T:
        """Run ``fn()`` (e.g. ``sim.stop``) on the simulator's loop and return its result."""
        if self._loop is None:
            raise RuntimeError("the simulator thread is not running")
        return asyncio.run_coroutine_threadsafe(fn(), self._loop).result(timeout)

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        self._loop = self._thread = None

    def __enter__(self) -> ModbusSimulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# ---------------------------------------------------------------- command line


def parse_units(text: str) -> list[int]:
    """``1-3,7`` -> ``[1, 2, 3, 7]``."""
    out: list[int] = []
    for part in text.split(","):
        lo, _, hi = part.strip().partition("-")
        try:
            first, last = int(lo), int(hi or lo)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a unit list: {text!r} (e.g. 1-10 or 1,3,5)") from None
        if not 1 <= first <= last <= 247:
            raise argparse.ArgumentTypeError(f"unit ids must be within 1..247: {part!r}")
        out.extend(range(first, last + 1))
    return out


def format_units(units: Mapping[int, str]) -> str:
    """``{1: "a", 2: "a", 3: "b"}`` -> ``1-2=a, 3=b``."""
    runs: list[list[Any]] = []
    for unit, profile in sorted(units.items()):
        if runs and runs[-1][2] == profile and runs[-1][1] == unit - 1:
            runs[-1][1] = unit
        else:
            runs.append([unit, unit, profile])
    return ", ".join(f"{a}-{b}={p}" if a != b else f"{a}={p}" for a, b, p in runs)


def _unit_map(groups: list[list[int]], profiles: list[str]) -> dict[int, str]:
    if len(groups) != len(profiles):
        raise SystemExit("give one --profile after each --units (e.g. --units 1-5 --profile lab-th)")
    units: dict[int, str] = {}
    for group, profile in zip(groups, profiles, strict=True):
        for u in group:
            if u in units:
                raise SystemExit(f"unit {u} is given twice")
            units[u] = profile
    return units


@contextlib.contextmanager
def _symlink(link: Path | None, target: str) -> Iterator[None]:
    if link is None:
        yield
        return
    with contextlib.suppress(FileNotFoundError):
        link.unlink()
    link.symlink_to(target)
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            link.unlink()


async def _serve(args: argparse.Namespace) -> None:
    units = _unit_map(args.units or [[1]], args.profile or ["lab-th"])
    sim = ModbusSimulator(units, transport="rtu" if args.rtu else "tcp", host=args.host, port=args.port,
                          baudrate=args.baudrate, parity=args.parity, stopbits=args.stopbits,
                          drift=not args.no_drift, update_interval_s=args.update_interval, day_s=args.day,
                          seed=args.seed)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with sim:
        with _symlink(args.rtu, sim.device_path if args.rtu else ""):
            where = f"{args.rtu} -> {sim.device_path}" if args.rtu else f"{sim.host}:{sim.port}"
            print(f"modbus simulator: {len(units)} unit(s) on {where} ({format_units(units)})", flush=True)
            await stop.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edugate.simulators.modbus", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1", help="TCP address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=5020, help="TCP port (default 5020; 0 = any free port)")
    parser.add_argument("--units", type=parse_units, action="append", help="unit ids, e.g. 1-10 or 1,3 "
                        "(repeatable, each followed by --profile)")
    parser.add_argument("--profile", action="append", help="profile of the preceding --units (default lab-th)")
    parser.add_argument("--rtu", type=Path, metavar="LINK", help="serve RTU over a pseudo-terminal instead of TCP; "
                        "LINK becomes a symlink to the serial device clients open")
    parser.add_argument("--baudrate", type=int, default=9600)
    parser.add_argument("--parity", choices=["N", "E", "O"], default="N")
    parser.add_argument("--stopbits", type=int, choices=[1, 2], default=1)
    parser.add_argument("--no-drift", action="store_true", help="keep every value fixed")
    parser.add_argument("--update-interval", type=float, default=1.0, help="seconds between value changes")
    parser.add_argument("--day", type=float, default=DAY_S, help="period of the daily sinusoid in seconds")
    parser.add_argument("--seed", type=int, help="random seed (repeatable drift)")
    args = parser.parse_args(argv)
    try:
        asyncio.run(_serve(args))
    except (ValueError, OSError, RuntimeError) as exc:
        print(f"modbus simulator: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
