"""Wiegand 26/34 decoding from D0/D1 edge timestamps. Pure: no GPIO, no clock, no I/O.

A Wiegand reader idles both data lines high and sends each bit as a short low
pulse (typically 50 µs, every 1-2 ms): a pulse on D0 is a 0, on D1 a 1. A frame
is over when the lines stay quiet for a while (``gap_ns``, default 25 ms).

- 26 bits (H10301): even parity over data bits 1-12, 8-bit facility code, 16-bit
  card number, odd parity over data bits 13-24.
- 34 bits: even parity over the first 16 of 32 data bits, odd over the last 16.

The card's UID for pseudonymisation is its data bits packed big-endian
(26 -> 3 bytes, 34 -> 4 bytes). :class:`WiegandError` messages say what was
wrong (bit count, which parity, where the edges collided) and never carry the
bits themselves.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

D0: Literal[0] = 0
D1: Literal[1] = 1
LINE_NAMES = ("D0", "D1")

FRAME_GAP_NS = 25_000_000
"""Quiet time that ends a frame (readers leave 20 ms+ between frames; bits come every 0.2-20 ms)."""
MIN_INTERVAL_NS = 100_000
"""Two pulses closer than this cannot be two bits (the standard's minimum interval is 200 µs)."""
PULSE_MIN_NS = 10_000
PULSE_MAX_NS = 500_000
"""Plausible pulse widths (the standard: 20-100 µs; some readers stretch to 200+ µs)."""
MAX_BITS = 64
FORMATS: tuple[int, ...] = (26, 34)


@dataclass(frozen=True, slots=True)
class Edge:
    """One edge on a data line: ``line`` 0 = D0, 1 = D1; ``t_ns`` from a monotonic clock."""

    line: int
    t_ns: int
    falling: bool = True


class WiegandError(ValueError):
    """A frame that is not a card. ``reason`` is a short counter name; the message never holds card bits."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True, repr=False)
class WiegandCard:
    """A decoded card. Personal data: pseudonymise ``uid``; never log any field."""

    bits: int  # 26 or 34
    uid: bytes  # the data bits, big-endian
    facility: int | None  # 26-bit: the 8-bit facility code
    number: int  # 26-bit: the 16-bit card number; 34-bit: all 32 data bits

    def __repr__(self) -> str:
        return f"WiegandCard(bits={self.bits}, uid=<{len(self.uid)} bytes>)"


# ---------------------------------------------------------------- bits <-> card


def _halves(length: int) -> tuple[slice, slice]:
    """The data bits each parity bit covers (frame positions, parity bits at 0 and length-1)."""
    half = (length - 2) // 2
    return slice(1, 1 + half), slice(1 + half, length - 1)


def decode(bits: Sequence[int], formats: Iterable[int] = FORMATS) -> WiegandCard:
    """Check a frame's length and parity and return the card. Raises :class:`WiegandError`."""
    allowed = tuple(formats)
    n = len(bits)
    if n not in allowed:
        raise WiegandError("bit_count", f"{n} bits; expected {' or '.join(map(str, allowed))}")
    first, last = _halves(n)
    if (bits[0] + sum(bits[first])) % 2 != 0:
        raise WiegandError("parity", f"{n}-bit frame: the leading even parity bit does not match")
    if (sum(bits[last]) + bits[-1]) % 2 != 1:
        raise WiegandError("parity", f"{n}-bit frame: the trailing odd parity bit does not match")
    data = 0
    for bit in bits[1:-1]:
        data = data << 1 | bit
    n_data = n - 2
    if n == 26:
        return WiegandCard(26, data.to_bytes(3, "big"), facility=data >> 16, number=data & 0xFFFF)
    return WiegandCard(n, data.to_bytes((n_data + 7) // 8, "big"), facility=None, number=data)


def encode(data: int, length: int = 26) -> list[int]:
    """The frame bits for ``data`` (``length - 2`` data bits) with correct parity. For simulators and tests."""
    n_data = length - 2
    if length < 4 or length % 2 or not 0 <= data < 1 << n_data:
        raise ValueError(f"cannot encode {n_data} data bits in a {length}-bit frame")
    bits = [0, *((data >> (n_data - 1 - i)) & 1 for i in range(n_data)), 0]
    first, last = _halves(length)
    bits[0] = sum(bits[first]) % 2
    bits[-1] = 1 - sum(bits[last]) % 2
    return bits


def encode26(facility: int, number: int) -> list[int]:
    """An H10301 frame: 8-bit facility code, 16-bit card number."""
    if not (0 <= facility < 256 and 0 <= number < 65536):
        raise ValueError("facility code 0-255, card number 0-65535")
    return encode(facility << 16 | number, 26)


# ---------------------------------------------------------------- edges -> frames


FrameResult = list[int] | WiegandError


class FrameAssembler:
    """Collects edges into frames of bits. Feed edges in time order; results come out when a frame has ended.

    Falling edges are the bits. Rising edges are optional: when the edge source
    reports them, pulse widths are checked too.
    """

    def __init__(self, *, gap_ns: int = FRAME_GAP_NS, min_interval_ns: int = MIN_INTERVAL_NS,
                 pulse_min_ns: int = PULSE_MIN_NS, pulse_max_ns: int = PULSE_MAX_NS,
                 max_bits: int = MAX_BITS) -> None:
        self.gap_ns = gap_ns
        self.min_interval_ns = min_interval_ns
        self.pulse_min_ns = pulse_min_ns
        self.pulse_max_ns = pulse_max_ns
        self.max_bits = max_bits
        self._bits: list[int] = []
        self._error: WiegandError | None = None
        self._last_ns: int | None = None  # the latest edge of the frame in progress
        self._last_fall: tuple[int, int] | None = None  # (line, t_ns) of the latest falling edge
        self._low_since: list[int | None] = [None, None]  # per line: falling edge not yet followed by rising

    @property
    def pending(self) -> bool:
        return self._last_ns is not None

    @property
    def deadline_ns(self) -> int | None:
        """When the frame in progress ends if no further edge comes (None when idle)."""
        return None if self._last_ns is None else self._last_ns + self.gap_ns

    def feed(self, edge: Edge) -> list[FrameResult]:
        """Add one edge; returns the frame it closed (when it came after a gap), else nothing."""
        done: list[FrameResult] = []
        if self._last_ns is not None and edge.t_ns - self._last_ns > self.gap_ns:
            done.append(self._finish())
        if edge.line not in (D0, D1):
            raise ValueError(f"edge on line {edge.line}: expected 0 (D0) or 1 (D1)")
        self._last_ns = edge.t_ns
        if edge.falling:
            self._fall(edge)
        else:
            self._rise(edge)
        return done

    def flush(self, now_ns: int) -> list[FrameResult]:
        """End the frame in progress if the lines have been quiet for ``gap_ns`` by ``now_ns``."""
        if self._last_ns is not None and now_ns - self._last_ns > self.gap_ns:
            return [self._finish()]
        return []

    def _fall(self, edge: Edge) -> None:
        self._low_since[edge.line] = edge.t_ns
        prev, self._last_fall = self._last_fall, (edge.line, edge.t_ns)
        where = f"after {len(self._bits)} bits"
        if prev is not None and edge.t_ns - prev[1] < self.min_interval_ns:
            if prev[0] != edge.line:
                self._spoil("both_lines", f"D0 and D1 pulsed at once ({where}): "
                            "noise, or the two data wires touching?")
            else:
                self._spoil("too_close", f"two pulses {(edge.t_ns - prev[1]) / 1000:.0f} µs apart on "
                            f"{LINE_NAMES[edge.line]} ({where}): noise on the line?")
        if len(self._bits) >= self.max_bits:
            self._spoil("too_many_bits", f"more than {self.max_bits} pulses without a pause: noise on the lines?")
            return
        self._bits.append(edge.line)

    def _rise(self, edge: Edge) -> None:
        since, self._low_since[edge.line] = self._low_since[edge.line], None
        if since is None:
            return  # the capture started inside a pulse
        width = edge.t_ns - since
        name = LINE_NAMES[edge.line]
        if width < self.pulse_min_ns:
            self._spoil("pulse_short", f"a {width / 1000:.0f} µs pulse on {name} (at least "
                        f"{self.pulse_min_ns / 1000:.0f} µs expected): noise on the line?")
        elif width > self.pulse_max_ns:
            self._spoil("pulse_long", f"a {width / 1000:.0f} µs pulse on {name} (at most "
                        f"{self.pulse_max_ns / 1000:.0f} µs expected): line stuck low or a slow optocoupler?")

    def _spoil(self, reason: str, message: str) -> None:
        if self._error is None:  # the first problem explains the frame best
            self._error = WiegandError(reason, message)

    def _finish(self) -> FrameResult:
        result: FrameResult = self._error if self._error is not None else self._bits
        self._bits, self._error, self._last_ns, self._last_fall = [], None, None, None
        self._low_since = [None, None]
        return result
