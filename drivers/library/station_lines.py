"""The EduGate station line protocol: library gates and self-check stations on a serial line. Pure, no I/O.

Both directions send lines of UTF-8 text with an NMEA-style checksum::

    frame = body "*" HH CR LF        HH = XOR of every byte of body, two upper-case hex digits
    e.g.    TAG 30112000000017 AFI=07*21\\r\\n

A body is at most :data:`MAX_BODY` bytes of printable text (no CR, LF or NUL);
words are separated by single spaces; the first word is the command. What
the commands are is up to each device (see ``drivers/library_gate.py`` and
``drivers/selfcheck.py``, and docs/library.md). A line with a bad checksum, a
missing ``*HH``, invalid UTF-8 or over-long is reported as a :class:`BadLine`
with its length and the position of the problem, never its content (a line
may carry a card UID).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

MAX_BODY = 200
_HEX = frozenset(b"0123456789ABCDEFabcdef")

BadLineKind = Literal["checksum", "format", "length", "encoding", "partial"]


@dataclass(frozen=True, slots=True)
class BadLine:
    """A line that is not a valid frame. ``detail`` has lengths and positions only."""

    kind: BadLineKind
    detail: str


def xor(data: bytes) -> int:
    value = 0
    for b in data:
        value ^= b
    return value


def encode_line(body: str) -> bytes:
    """One frame for ``body``. Raises ValueError for a body that cannot be framed."""
    data = body.encode("utf-8")
    if len(data) > MAX_BODY:
        raise ValueError(f"line of {len(data)} bytes (at most {MAX_BODY})")
    if any(b < 0x20 or b == 0x7F for b in data):
        raise ValueError("a line must not contain control characters")
    return data + f"*{xor(data):02X}\r\n".encode("ascii")


def check_line(line: bytes) -> str | BadLine:
    """One received line (without CR/LF) -> its body, or the problem."""
    if len(line) > MAX_BODY + 3:
        return BadLine("length", f"line of {len(line)} bytes (at most {MAX_BODY + 3} with its checksum)")
    star = line.rfind(b"*")
    if star < 0 or len(line) - star != 3:
        return BadLine("format", f"line of {len(line)} bytes without '*HH' checksum at its end")
    body, check = line[:star], line[star + 1:]
    if not all(c in _HEX for c in check):
        return BadLine("format", f"checksum at position {star + 2} is not two hex digits")
    if int(check, 16) != xor(body):
        return BadLine("checksum", f"bad checksum on a line of {len(line)} bytes (noise on the line?)")
    bad = next((i for i, b in enumerate(body) if b < 0x20 or b == 0x7F), None)
    if bad is not None:
        return BadLine("format", f"control character at position {bad + 1} of {len(body)}")
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as exc:
        return BadLine("encoding", f"not UTF-8 at position {exc.start + 1} of {len(body)}")


class LineDecoder:
    """Splits a byte stream into checked line bodies. ``feed`` chunks, ``flush`` after a quiet spell."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._overflow = False

    @property
    def pending(self) -> bool:
        return bool(self._buf) or self._overflow

    def feed(self, data: bytes) -> list[str | BadLine]:
        out: list[str | BadLine] = []
        for b in data:
            if b in (0x0D, 0x0A):
                if self._overflow:
                    out.append(BadLine("length", f"line longer than {MAX_BODY + 3} bytes; dropped"))
                elif self._buf:
                    out.append(check_line(bytes(self._buf)))
                self._buf.clear()
                self._overflow = False
            elif not self._overflow:
                self._buf.append(b)
                if len(self._buf) > MAX_BODY + 3:
                    self._buf.clear()
                    self._overflow = True
        return out

    def flush(self, quiet_s: float = 0.0) -> list[BadLine]:
        """The line went quiet (for ``quiet_s`` seconds) in the middle of a line: report it and start afresh."""
        if not self.pending:
            return []
        n = len(self._buf)
        self._buf.clear()
        self._overflow = False
        return [BadLine("partial", f"{n} bytes without an end of line")]
