"""The serial thermometer's line protocol, pure (no I/O): ``T=23.45\\r\\n``, or several values ``T=23.45,H=41.2``.

What many small probes print (a DS18B20 or SHT31 behind a microcontroller, USB temperature loggers): one
line per measurement, ``<key>=<number>`` pairs separated by commas, ended by CR and/or LF. The decoder
turns a byte stream into ``{name: value}`` dicts and :class:`BadLine` problems (kind and position, never
more than that in a message).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

MAX_LINE = 120
"""Longer lines are noise (a wrong baud rate): dropped and reported."""


@dataclass(frozen=True)
class BadLine:
    kind: str  # noise, length, syntax, unknown_key, not_a_number, partial
    detail: str


def parse_line(line: bytes, names: Mapping[str, str]) -> dict[str, float] | BadLine:
    """One line without its end: ``names`` maps the device's keys (``T``) to reading names (``temperature``)."""
    try:
        text = line.decode("ascii")
    except UnicodeDecodeError as exc:
        return BadLine("noise", f"not ASCII at position {exc.start + 1} of {len(line)} (a wrong baud rate?)")
    values: dict[str, float] = {}
    for i, pair in enumerate(text.split(","), 1):
        key, sep, number = pair.strip().partition("=")
        if not sep or not key:
            return BadLine("syntax", f"field {i} is not key=value")
        if key not in names:
            return BadLine("unknown_key", f"field {i}: unknown key {key!r} (known: {', '.join(sorted(names))})")
        try:
            value = float(number)
        except ValueError:
            return BadLine("not_a_number", f"field {i} ({key}): not a number")
        if not math.isfinite(value):
            return BadLine("not_a_number", f"field {i} ({key}): not a finite number")
        values[names[key]] = value
    return values


class ThermometerDecoder:
    """Splits the byte stream into lines and parses each. ``feed`` every chunk, ``flush`` after a quiet spell."""

    def __init__(self, names: Mapping[str, str]) -> None:
        self.names = dict(names)
        self._buf = bytearray()
        self._overflow = False

    @property
    def pending(self) -> bool:
        return bool(self._buf) or self._overflow

    def feed(self, data: bytes) -> list[dict[str, float] | BadLine]:
        out: list[dict[str, float] | BadLine] = []
        for b in data:
            if b in (0x0D, 0x0A):
                if self._overflow:
                    out.append(BadLine("length", f"line longer than {MAX_LINE} characters; dropped"))
                elif self._buf:
                    out.append(parse_line(bytes(self._buf), self.names))
                self._buf.clear()
                self._overflow = False
            elif not self._overflow:
                self._buf.append(b)
                if len(self._buf) > MAX_LINE:
                    self._buf.clear()
                    self._overflow = True
        return out

    def flush(self, quiet_s: float) -> list[BadLine]:
        """The line went quiet for ``quiet_s`` in the middle of a line: report it and start afresh."""
        if not self.pending:
            return []
        n = len(self._buf)
        self._buf.clear()
        self._overflow = False
        return [BadLine("partial", f"{n} characters, then no end of line within {quiet_s:g} s")]
