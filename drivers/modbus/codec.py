"""Pure Modbus helpers: register words <-> values, read planning, RTU CRC, frame diagnosis.

Nothing here does I/O. The driver (:mod:`drivers.modbus`) and the simulator
(:mod:`simulators.modbus`) share these functions, and the tests check them on
plain lists of 16-bit words and plain bytes.

Conventions: a register is a 16-bit word as the device sends it (big-endian
bytes inside each word, as Modbus requires). 32-bit values span two registers;
``word_order="big"`` means the register at the lower address holds the high
word (the Modbus convention, "ABCD"), ``"little"`` the low word ("CDAB").
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Literal, get_args

RegisterType = Literal["int16", "uint16", "int32", "uint32", "float32"]
WordOrder = Literal["big", "little"]
Function = Literal["holding", "input"]

REGISTER_TYPES: tuple[str, ...] = get_args(RegisterType)
WIDTH: Mapping[str, int] = {"int16": 1, "uint16": 1, "int32": 2, "uint32": 2, "float32": 2}
FUNCTION_CODE: Mapping[str, int] = {"holding": 3, "input": 4}
MAX_READ_COUNT = 125
"""Registers per read request at most (Modbus application protocol, function codes 3 and 4)."""

_STRUCT = {"int16": ">h", "uint16": ">H", "int32": ">i", "uint32": ">I", "float32": ">f"}
_INT_RANGE = {
    "int16": (-0x8000, 0x7FFF),
    "uint16": (0, 0xFFFF),
    "int32": (-0x8000_0000, 0x7FFF_FFFF),
    "uint32": (0, 0xFFFF_FFFF),
}

EXCEPTION_NAMES: Mapping[int, str] = {
    1: "illegal function (the device does not support this read)",
    2: "illegal data address (no such register on this device: check the register map)",
    3: "illegal data value",
    4: "server device failure",
    5: "acknowledge (busy with a long operation)",
    6: "server device busy",
    8: "memory parity error",
    10: "gateway path unavailable (the TCP gateway has no route to this unit)",
    11: "gateway target device failed to respond (check RS485 wiring, unit id and serial settings)",
}


# ---------------------------------------------------------------- words <-> raw numbers


def decode_words(words: Sequence[int], type_: str, word_order: str = "big") -> int | float:
    """The raw number held in ``words`` (1 or 2 registers) read as ``type_``."""
    width = WIDTH[type_]
    if len(words) != width:
        raise ValueError(f"{type_} needs {width} register(s), got {len(words)}")
    if width == 2 and word_order == "little":
        words = (words[1], words[0])
    data = b"".join(int(w).to_bytes(2, "big") for w in words)
    value: int | float = struct.unpack(_STRUCT[type_], data)[0]
    return value


def encode_words(raw: int | float, type_: str, word_order: str = "big") -> list[int]:
    """The registers a device holds for the raw number ``raw`` of ``type_`` (inverse of :func:`decode_words`)."""
    if type_ == "float32":
        data = struct.pack(">f", float(raw))
    else:
        low, high = _INT_RANGE[type_]
        if not isinstance(raw, int) or not low <= raw <= high:
            raise ValueError(f"{raw!r} does not fit in {type_} ({low}..{high})")
        data = struct.pack(_STRUCT[type_], raw)
    words = [int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2)]
    if len(words) == 2 and word_order == "little":
        words.reverse()
    return words


# ---------------------------------------------------------------- points: raw <-> engineering values


def decimals_of(x: float) -> int:
    """Decimal places needed to write ``x`` exactly as typed (0.1 -> 1, 0.25 -> 2, 10 -> 0), at most 10."""
    exponent = Decimal(repr(float(x))).normalize().as_tuple().exponent
    return min(10, max(0, -exponent)) if isinstance(exponent, int) else 0


@dataclass(frozen=True, slots=True)
class Point:
    """One named value of a device: where it is, how it is encoded, how it is scaled.

    ``value = raw * scale + offset``, rounded to ``decimals`` places. When
    ``decimals`` is None it follows from ``scale`` and ``offset`` (``0.1`` -> 1
    place), so 217 x 0.1 gives 21.7 rather than 21.700000000000003. Integer
    types with an integral scale and offset give ints.
    """

    name: str
    address: int
    type: str = "uint16"
    function: str = "holding"
    word_order: str = "big"
    scale: float = 1.0
    offset: float = 0.0
    decimals: int | None = None
    _places: int | None = field(init=False, repr=False, compare=False)
    _integral: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        integral = self.type != "float32" and float(self.scale).is_integer() and float(self.offset).is_integer()
        places = self.decimals
        if places is None and self.type != "float32":
            places = max(decimals_of(self.scale), decimals_of(self.offset))
        object.__setattr__(self, "_integral", integral and self.decimals in (None, 0))
        object.__setattr__(self, "_places", places)

    @property
    def width(self) -> int:
        return WIDTH[self.type]

    @property
    def end(self) -> int:
        """The address after this point's last register."""
        return self.address + self.width

    def value(self, raw: int | float) -> int | float:
        """The engineering value of a raw number."""
        if self._integral:
            return int(raw * self.scale + self.offset)
        if self.type == "float32":
            raw = _float32_digits(float(raw))
        value = raw * self.scale + self.offset
        return round(value, self._places) if self._places is not None else value

    def raw(self, value: float) -> int | float:
        """The raw number a device would hold for the engineering ``value`` (clamped to the type's range)."""
        raw = (value - self.offset) / self.scale
        if self.type == "float32":
            return raw
        low, high = _INT_RANGE[self.type]
        return min(high, max(low, round(raw)))

    def decode(self, words: Sequence[int]) -> int | float:
        return self.value(decode_words(words, self.type, self.word_order))

    def encode(self, value: float) -> list[int]:
        return encode_words(self.raw(value), self.type, self.word_order)


def _float32_digits(x: float) -> float:
    """A float32 widened to float64 without its noise digits (21.7f -> 21.7, not 21.700000762939453)."""
    return x if not math.isfinite(x) else float(f"{x:.7g}")


# ---------------------------------------------------------------- read planning


@dataclass(frozen=True, slots=True)
class ReadBlock:
    """One read request: ``count`` registers from ``address`` with one function, and the points inside."""

    function: str
    address: int
    count: int
    points: tuple[Point, ...]
    _layout: tuple[tuple[Point, struct.Struct, int, bool], ...] = field(init=False, repr=False, compare=False)
    _words: struct.Struct = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Decoding runs on every poll: unpack every point straight from the block's bytes with a
        # precompiled Struct (byte offset, and whether a 32-bit value's words come low word first).
        layout = tuple((p, struct.Struct(_STRUCT[p.type]), 2 * (p.address - self.address),
                        p.width == 2 and p.word_order == "little") for p in self.points)
        object.__setattr__(self, "_layout", layout)
        object.__setattr__(self, "_words", struct.Struct(f">{self.count}H"))

    @property
    def last(self) -> int:
        return self.address + self.count - 1

    def describe(self) -> str:
        """E.g. ``holding registers 0..2`` (for log messages)."""
        return f"{self.function} registers {self.address}..{self.last}"

    def decode(self, registers: Sequence[int]) -> dict[str, int | float]:
        """Values of every point from the registers this block read (``len(registers) == count``)."""
        if len(registers) != self.count:
            raise ValueError(f"{self.describe()}: {len(registers)} registers, expected {self.count}")
        data = self._words.pack(*registers)
        out: dict[str, int | float] = {}
        for point, unpack, offset, swapped in self._layout:
            if swapped:
                raw = unpack.unpack(data[offset + 2 : offset + 4] + data[offset : offset + 2])[0]
            else:
                raw = unpack.unpack_from(data, offset)[0]
            out[point.name] = point.value(raw)
        return out


def plan_reads(points: Iterable[Point], max_gap: int = 0, max_count: int = MAX_READ_COUNT) -> list[ReadBlock]:
    """Group points into as few read requests as possible.

    Points of the same function whose registers are contiguous, or separated by
    at most ``max_gap`` unused registers, share one request of at most
    ``max_count`` registers. Blocks come out ordered by function, then address.
    """
    if max_gap < 0 or not 1 <= max_count <= MAX_READ_COUNT:
        raise ValueError("max_gap must be >= 0 and max_count within 1..125")
    blocks: list[ReadBlock] = []
    by_function: dict[str, list[Point]] = {}
    for p in points:
        by_function.setdefault(p.function, []).append(p)
    for function in sorted(by_function, key=lambda f: FUNCTION_CODE.get(f, 99)):
        group: list[Point] = []
        start = end = 0
        for p in sorted(by_function[function], key=lambda q: (q.address, q.width)):
            if group and p.address - end <= max_gap and max(end, p.end) - start <= max_count:
                group.append(p)
                end = max(end, p.end)
                continue
            if group:
                blocks.append(ReadBlock(function, start, end - start, tuple(group)))
            group, start, end = [p], p.address, p.end
        if group:
            blocks.append(ReadBlock(function, start, end - start, tuple(group)))
    return blocks


# ---------------------------------------------------------------- RTU CRC and frame diagnosis


def crc16(data: bytes) -> int:
    """The Modbus RTU CRC-16 of ``data`` (poly 0xA001 reflected, init 0xFFFF).

    A frame carries it low byte first: ``frame = data + crc16(data).to_bytes(2, "little")``.
    """
    crc = 0xFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


def rtu_frame(unit: int, pdu: bytes) -> bytes:
    """A complete RTU frame: unit, PDU, CRC."""
    body = bytes([unit]) + pdu
    return body + crc16(body).to_bytes(2, "little")


def hexdump(data: bytes, limit: int = 24) -> str:
    """``01 03 06 ...`` (at most ``limit`` bytes, then an ellipsis)."""
    text = data[:limit].hex(" ")
    return text + (" ..." if len(data) > limit else "")


def diagnose_rtu(raw: bytes, unit: int, function_code: int) -> str:
    """Say what is wrong with bytes received in answer to an RTU read request (bytes not included)."""
    if not raw:
        return "no bytes received"
    if len(raw) < 5:
        return f"incomplete frame of {len(raw)} bytes"
    if raw[0] != unit:
        return f"answer from unit {raw[0]}, expected unit {unit}"
    if raw[1] == function_code | 0x80:
        expected = 5
    elif raw[1] == function_code:
        expected = 3 + raw[2] + 2
    else:
        return f"unexpected function code {raw[1]} in answer"
    if len(raw) < expected:
        return f"incomplete frame: {len(raw)} of {expected} bytes"
    got = int.from_bytes(raw[expected - 2 : expected], "little")
    computed = crc16(raw[: expected - 2])
    if got != computed:
        return f"bad CRC {got:04x}, computed {computed:04x} (noise on the line? check wiring, termination, baudrate)"
    return "unexpected frame"


def diagnose_tcp(raw: bytes, unit: int, function_code: int) -> str:
    """Say what is wrong with bytes received in answer to a Modbus/TCP read request (bytes not included)."""
    if not raw:
        return "no bytes received"
    if len(raw) < 8:
        return f"incomplete MBAP header of {len(raw)} bytes"
    protocol = int.from_bytes(raw[2:4], "big")
    if protocol != 0:
        return (f"protocol id {protocol} in the MBAP header, not 0: not a Modbus/TCP answer (a serial converter "
                "in transparent mode passes raw RTU frames: set it to Modbus TCP gateway mode)")
    if raw[6] != unit:
        return f"answer from unit {raw[6]}, expected unit {unit}"
    length = int.from_bytes(raw[4:6], "big")
    if len(raw) - 6 < length:
        return f"incomplete frame: header announces {length + 6} bytes, received {len(raw)}"
    if raw[7] not in (function_code, function_code | 0x80):
        return f"unexpected function code {raw[7]} in answer"
    return "unexpected frame"
