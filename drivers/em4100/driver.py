"""125 kHz EM4100 card readers with a serial (UART) output, RDM6300-style.

The reader sends one ASCII frame per card read, 9600 bit/s 8N1::

    STX(02)  10 hex characters (version/customer byte + 4-byte card number)  2 hex characters (checksum)  ETX(03)

The checksum is the XOR of the 5 data bytes; those 5 bytes are the card's UID.
Some readers put CR/LF around a frame, some (ID-12 style) inside it before
ETX; both are accepted. Most repeat the frame every ~100 ms while the card
stays in the field: the card reader base class counts a held card once within
``debounce_s``.

The serial port handling it shares with the PN532 driver lives in
:mod:`drivers.serial_reader`. A card UID is never logged, not even from a bad
frame: log lines give lengths and positions only.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Literal

from pydantic import Field

from edugate.drivers.card_reader import CardRead
from edugate.drivers.serial_link import decoded
from edugate.drivers.serial_reader import SerialCardReader, SerialReaderConfig

__all__ = ["BadFrame", "EM4100Config", "EM4100Decoder", "EM4100Driver"]

log = logging.getLogger(__name__)


# ---------------------------------------------------------------- EM4100 frames (pure)


STX, ETX, CR, LF = 0x02, 0x03, 0x0D, 0x0A
FRAME_CHARS = 12
"""Characters between STX and ETX: 10 data + 2 checksum (CR/LF inside a frame are skipped)."""
MAX_FRAME_CHARS = 32
"""A frame longer than this without ETX is abandoned as garbage."""
_HEX = frozenset(b"0123456789ABCDEFabcdef")

BadFrameKind = Literal["garbled", "checksum", "length", "partial", "noise"]


@dataclass(frozen=True, slots=True)
class BadFrame:
    """A frame (or stray bytes) that is not a card read. ``detail`` gives lengths and positions, never content."""

    kind: BadFrameKind
    detail: str


def _positions(chars: bytes) -> str:
    bad = [str(i + 1) for i, c in enumerate(chars) if c not in _HEX]
    more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
    return ", ".join(bad[:5]) + more


class EM4100Decoder:
    """Turns the reader's byte stream into 5-byte UIDs and :class:`BadFrame` problems. No I/O.

    Call :meth:`feed` with each chunk read, and :meth:`flush` when the line has
    been quiet for a while (a frame begun then is a partial frame).
    """

    def __init__(self) -> None:
        self._frame: bytearray | None = None
        self._stray = 0

    @property
    def pending(self) -> bool:
        """A frame has begun, or stray bytes wait to be reported."""
        return self._frame is not None or self._stray > 0

    def feed(self, data: bytes) -> list[bytes | BadFrame]:
        out: list[bytes | BadFrame] = []
        for b in data:
            frame = self._frame
            if frame is None:
                if b == STX:
                    out.extend(self._flush_stray())
                    self._frame = bytearray()
                elif b not in (CR, LF):
                    self._stray += 1
            elif b == ETX:
                out.append(self._finish(bytes(frame)))
                self._frame = None
            elif b == STX:
                out.append(BadFrame("partial", f"frame cut short: a new STX after {len(frame)} of "
                                               f"{FRAME_CHARS} characters"))
                self._frame = bytearray()
            elif b not in (CR, LF):
                frame.append(b)
                if len(frame) > MAX_FRAME_CHARS:
                    out.append(BadFrame("length", f"no ETX after {MAX_FRAME_CHARS} characters (expected "
                                                  f"{FRAME_CHARS}); frame dropped"))
                    self._frame = None
        return out

    def flush(self, quiet_s: float) -> list[BadFrame]:
        """The line was quiet for ``quiet_s``: report stray bytes, and a frame left unfinished."""
        out = self._flush_stray()
        if self._frame is not None:
            out.append(BadFrame("partial", f"partial frame: {len(self._frame)} of {FRAME_CHARS} characters "
                                           f"after STX, then no ETX within {quiet_s:g} s"))
            self._frame = None
        return out

    def _flush_stray(self) -> list[BadFrame]:
        if not self._stray:
            return []
        n, self._stray = self._stray, 0
        return [BadFrame("noise", f"{n} stray byte{'s' if n != 1 else ''} outside a frame (noise on the line, "
                                  "or a wrong baudrate?)")]

    @staticmethod
    def _finish(chars: bytes) -> bytes | BadFrame:
        if len(chars) != FRAME_CHARS:
            return BadFrame("length", f"{len(chars)} characters between STX and ETX, expected {FRAME_CHARS}")
        if any(c not in _HEX for c in chars):
            return BadFrame("garbled", f"garbled frame: not a hex digit at position {_positions(chars)} "
                                       f"of {FRAME_CHARS}")
        values = bytes.fromhex(chars.decode("ascii"))
        uid, check = values[:5], values[5]
        xor = 0
        for b in uid:
            xor ^= b
        if xor != check:
            return BadFrame("checksum", "bad checksum: the XOR of the 5 data bytes does not match the "
                                        "checksum characters")
        return uid


# ---------------------------------------------------------------- the driver


class EM4100Config(SerialReaderConfig):
    """An EM4100 (125 kHz) reader with ASCII serial output: RDM6300, RDM630, ID-12/ID-20 and clones."""

    driver: Literal["em4100"]
    baudrate: Literal[2400, 4800, 9600, 19200, 38400, 57600, 115200] = Field(
        9600, description="Line speed in bit/s; RDM6300 readers send at 9600.")
    frame_timeout_s: float = Field(0.2, ge=0.02, le=5, description="A frame begun but not finished within this "
                                   "time is reported as a partial frame (a whole frame takes ~15 ms at 9600).")


class EM4100Driver(SerialCardReader[EM4100Config]):
    """Reads card taps from an EM4100 reader's serial output."""

    config_model = EM4100Config
    technology = "em4100"

    async def reads(self) -> AsyncIterator[CardRead]:
        cfg = self.config
        while True:
            async with self.port.session() as link:
                self._online(f"{cfg.baudrate} bit/s")
                async for item in decoded(link, EM4100Decoder(), cfg.frame_timeout_s):
                    if isinstance(item, BadFrame):
                        self._problem(item.kind, item.detail)
                    else:
                        self.health.count("frames")
                        yield CardRead(item, self.technology)
