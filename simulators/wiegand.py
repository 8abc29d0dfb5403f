"""A simulated Wiegand reader at the GPIO edge layer, and a fake for the LED/beeper outputs.

:class:`FakeWiegandReader` plays the reader and the kernel's edge detection:
``present26(facility, number)`` sends a card as timestamped D0/D1 edges with
realistic timing (50 µs pulses every 2 ms, delivered as the clock reaches
them), and can corrupt the parity, drop a bit, add noise glitches or pulse
both lines at once. Its ``open`` is the driver's ``edge_source_factory``; the
edge source reports rising edges only if the config asks for them
(``check_pulse_width``), like a real line request. ``unplug()`` makes the chip
vanish (reads fail with ENODEV, opening with ENOENT), ``plug()`` brings it back.

:class:`FakeGpioOutput` is the ``output_factory``: it records every transition
as ``(time.monotonic(), line, active)``.

In a test::

    reader, outputs = FakeWiegandReader(), FakeGpioOutput()
    driver = WiegandDriver(cfg, edge_source_factory=reader.open, output_factory=outputs.open)
    await reader.wait_open()
    await reader.present26(12, 34567)
    await reader.present26(12, 34567, corrupt_parity=True)   # or drop_bit=5, noise=3, both_lines_at=7
"""

from __future__ import annotations

import asyncio
import errno
import random
import time
from collections.abc import Sequence
from typing import Any

from edugate.drivers.wiegand.codec import Edge, encode, encode26
from edugate.simulators.fake_device import PluggableDevice

PULSE_NS = 50_000
INTERVAL_NS = 2_000_000
PAUSE_NS = 40_000_000
"""A reader stays quiet at least this long between two frames (longer than the driver's 25 ms gap)."""
GLITCH_NS = 2_000


def frame_edges(bits: Sequence[int], t0_ns: int, *, pulse_ns: int = PULSE_NS,
                interval_ns: int = INTERVAL_NS) -> list[Edge]:
    """The edges of one frame: per bit a low pulse on D0 (0) or D1 (1), starting at ``t0_ns``."""
    edges: list[Edge] = []
    for i, bit in enumerate(bits):
        t = t0_ns + i * interval_ns
        edges += [Edge(bit, t, falling=True), Edge(bit, t + pulse_ns, falling=False)]
    return edges


class FakeEdgeSource:
    """One open line request on the fake chip."""

    def __init__(self, reader: FakeWiegandReader, both_edges: bool) -> None:
        self._reader = reader
        self.both_edges = both_edges
        self._queue: asyncio.Queue[Edge | OSError] = asyncio.Queue()
        self.closed = False

    def put(self, item: Edge | OSError) -> None:
        if isinstance(item, OSError) or item.falling or self.both_edges:
            self._queue.put_nowait(item)

    def read_ready(self) -> list[Edge]:
        edges: list[Edge] = []
        while not self._queue.empty():
            item = self._queue.get_nowait()
            if isinstance(item, OSError):
                raise item
            edges.append(item)
        return edges

    async def read(self) -> list[Edge]:
        first = await self._queue.get()
        if isinstance(first, OSError):
            raise first
        return [first, *self.read_ready()]

    def close(self) -> None:
        self.closed = True
        self._reader._closed(self)


class FakeWiegandReader(PluggableDevice["FakeEdgeSource"]):
    """A Wiegand reader on a fake GPIO chip. ``open`` is the driver's ``edge_source_factory``."""

    def __init__(self, *, pulse_ns: int = PULSE_NS, interval_ns: int = INTERVAL_NS, pause_ns: int = PAUSE_NS,
                 seed: int = 1) -> None:
        super().__init__()
        self.pulse_ns = pulse_ns
        self.interval_ns = interval_ns
        self.pause_ns = pause_ns
        self._quiet_from = 0  # end of the last frame sent (monotonic ns)
        self._rng = random.Random(seed)

    # ------------------------------------------------------------ the kernel side

    def open(self, cfg: Any) -> FakeEdgeSource:
        """Request the D0/D1 lines like ``gpiod.request_lines``; ENOENT when the chip is unplugged."""
        if not self.plugged:
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", cfg.chip)
        return self._attach(FakeEdgeSource(self, both_edges=bool(cfg.check_pulse_width)))

    # ------------------------------------------------------------ the reader side

    async def send(self, edges: Sequence[Edge]) -> None:
        """Deliver edges (with timestamps from ``time.monotonic_ns``) as the clock reaches each one."""
        for edge in sorted(edges, key=lambda e: e.t_ns):
            delay = (edge.t_ns - time.monotonic_ns()) / 1e9
            if delay > 0:
                await asyncio.sleep(delay)
            for source in self._open:
                source.put(edge)

    async def present_bits(self, bits: Sequence[int], *, noise: int = 0, both_lines_at: int | None = None) -> None:
        """Send one frame of raw bits (after the reader's pause since its previous frame). ``noise`` adds that
        many 2 µs glitches inside the frame; ``both_lines_at`` pulses the other line too at that bit."""
        t0 = max(time.monotonic_ns() + 1_000_000, self._quiet_from + self.pause_ns)
        edges = frame_edges(bits, t0, pulse_ns=self.pulse_ns, interval_ns=self.interval_ns)
        span = max(1, len(bits) - 1) * self.interval_ns
        for _ in range(noise):
            t = t0 + self.interval_ns // 2 + self._rng.randrange(span)
            line = self._rng.randrange(2)
            edges += [Edge(line, t, falling=True), Edge(line, t + GLITCH_NS, falling=False)]
        if both_lines_at is not None:
            t = t0 + both_lines_at * self.interval_ns + 5_000
            other = 1 - bits[both_lines_at]
            edges += [Edge(other, t, falling=True), Edge(other, t + self.pulse_ns, falling=False)]
        self._quiet_from = max(e.t_ns for e in edges) if edges else t0
        await self.send(edges)

    async def present26(self, facility: int, number: int, *, corrupt_parity: bool = False,
                        drop_bit: int | None = None, noise: int = 0, both_lines_at: int | None = None) -> None:
        """A 26-bit (H10301) card, optionally damaged."""
        await self.present_bits(_damage(encode26(facility, number), corrupt_parity, drop_bit),
                                noise=noise, both_lines_at=both_lines_at)

    async def present34(self, number: int, *, corrupt_parity: bool = False, drop_bit: int | None = None) -> None:
        """A 34-bit card (32 data bits)."""
        await self.present_bits(_damage(encode(number, 34), corrupt_parity, drop_bit))


def _damage(bits: list[int], corrupt_parity: bool, drop_bit: int | None) -> list[int]:
    bits = list(bits)
    if corrupt_parity:
        bits[-1] ^= 1
    if drop_bit is not None:
        del bits[drop_bit]
    return bits


class FakeGpioOutput:
    """Output lines that record their transitions. ``open`` is the driver's ``output_factory``."""

    def __init__(self) -> None:
        self.transitions: list[tuple[float, int, bool]] = []
        self.state: dict[int, bool] = {}
        self.opens = 0
        self.closed = False
        self.fail: OSError | None = None  # set to make every ``set`` raise (a vanished chip)

    def open(self, cfg: Any) -> FakeGpioOutput:
        if self.fail is not None:
            raise self.fail
        self.opens += 1
        self.closed = False
        self.state = dict.fromkeys(cfg.output_lines, False)
        return self

    def set(self, line: int, active: bool) -> None:
        if self.fail is not None:
            raise self.fail
        if self.state.get(line) != active:
            self.state[line] = active
            self.transitions.append((time.monotonic(), line, active))

    def close(self) -> None:
        self.closed = True

    def on_times(self, line: int) -> list[float]:
        """When ``line`` went active."""
        return [t for t, ln, active in self.transitions if ln == line and active]
