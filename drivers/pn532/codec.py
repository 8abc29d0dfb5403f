"""Pure PN532 host-link helpers: frames, the frame splitter, and the answers the driver reads.

Nothing here does I/O. The driver (:mod:`drivers.pn532`) and the emulator
(:mod:`simulators.pn532`) share these functions; the tests check them byte by
byte against frames from the PN532 user manual (UM0701-02, chapter 6).

Frames on the wire (HSU/UART, SPI and I2C alike)::

    normal information frame   00 00 FF LEN LCS TFI PD0 .. PDn DCS 00
    extended information frame 00 00 FF FF FF LENM LENL LCS TFI PD0 .. PDn DCS 00
    ACK                        00 00 FF 00 FF 00
    NACK                       00 00 FF FF 00 00
    error frame                00 00 FF 01 FF 7F 81 00   (application-level error)

``LEN`` counts TFI and PD bytes; ``LEN + LCS = 0`` and ``TFI + PD0 + .. + PDn +
DCS = 0`` (mod 256). TFI is ``D4`` from host to PN532 and ``D5`` back; PD0 is
the command code (the response code is the command code + 1).

Card UIDs travel inside frames: error messages and ``repr`` here give lengths
and positions only, never data bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

PREAMBLE = 0x00
START_CODE = b"\x00\xff"
POSTAMBLE = 0x00
HOST_TO_PN532 = 0xD4
PN532_TO_HOST = 0xD5
ERROR_TFI = 0x7F

ACK = bytes.fromhex("0000ff00ff00")
NACK = bytes.fromhex("0000ffff0000")
ERROR_FRAME = bytes.fromhex("0000ff01ff7f8100")

WAKEUP = b"\x55\x55" + bytes(14)
"""HSU wake-up: 0x55 0x55 then a long run of zeros, sent before the first command after power-up or sleep."""

MAX_NORMAL_LEN = 255
MAX_EXTENDED_LEN = 264  # the PN532's own buffer limit for TFI + PD

# Command codes (manual chapter 7). The response code is the command code + 1.
GET_FIRMWARE_VERSION = 0x02
SAM_CONFIGURATION = 0x14
RF_CONFIGURATION = 0x32
IN_LIST_PASSIVE_TARGET = 0x4A
IN_RELEASE = 0x52

SAM_NORMAL_MODE = 0x01
RF_ITEM_MAX_RETRIES = 0x05
BRTY_ISO14443A = 0x00  # 106 kbps type A

FrameKind = Literal["ack", "nack", "error", "info"]


class FrameError(ValueError):
    """Bytes that are not a valid PN532 frame. ``kind`` names the fault, ``offset`` the byte where it shows."""

    def __init__(self, kind: str, message: str, offset: int | None = None) -> None:
        self.kind = kind
        self.offset = offset
        super().__init__(message)


class ResponseError(ValueError):
    """A well-formed frame whose content is not the answer expected (wrong code, short parameters...)."""


@dataclass(frozen=True, slots=True)
class Frame:
    """One parsed frame. For an information frame ``data`` is PD0..PDn (PD0 = command or response code)."""

    kind: FrameKind
    tfi: int | None = None
    data: bytes = b""

    @property
    def code(self) -> int | None:
        """The command (host frame) or response (PN532 frame) code, PD0."""
        return self.data[0] if self.kind == "info" and self.data else None

    @property
    def params(self) -> bytes:
        """The bytes after the code."""
        return self.data[1:] if self.kind == "info" else b""

    def __repr__(self) -> str:  # responses carry card UIDs: show sizes, not bytes
        if self.kind != "info":
            return f"Frame({self.kind})"
        code = f"0x{self.code:02X}" if self.code is not None else "none"
        return f"Frame(info, tfi=0x{self.tfi or 0:02X}, code={code}, <{len(self.data)} data bytes>)"


# ---------------------------------------------------------------- building


def _checksum(data: bytes | bytearray | list[int]) -> int:
    """The byte that makes ``sum(data) + checksum`` a multiple of 256."""
    return (-sum(data)) & 0xFF


def build_frame(tfi: int, data: bytes) -> bytes:
    """An information frame carrying ``data`` (PD0..PDn) with ``tfi``; extended format when it does not fit."""
    if not 0 <= tfi <= 0xFF:
        raise ValueError(f"TFI must be one byte, got {tfi}")
    length = 1 + len(data)  # TFI + PD
    body = bytes([tfi]) + data
    if length <= MAX_NORMAL_LEN:
        head = bytes([PREAMBLE]) + START_CODE + bytes([length, _checksum([length])])
    elif length <= MAX_EXTENDED_LEN:
        lenm, lenl = length >> 8, length & 0xFF
        head = bytes([PREAMBLE]) + START_CODE + bytes([0xFF, 0xFF, lenm, lenl, _checksum([lenm, lenl])])
    else:
        raise ValueError(f"frame too long: {length} bytes of TFI + data, the PN532 takes at most {MAX_EXTENDED_LEN}")
    return head + body + bytes([_checksum(body), POSTAMBLE])


def command(code: int, params: bytes = b"") -> bytes:
    """A host-to-PN532 frame: TFI D4, the command code, its parameters."""
    return build_frame(HOST_TO_PN532, bytes([code]) + params)


def response(code: int, params: bytes = b"") -> bytes:
    """A PN532-to-host frame answering command ``code`` (the response code is ``code + 1``)."""
    return build_frame(PN532_TO_HOST, bytes([(code + 1) & 0xFF]) + params)


# ---------------------------------------------------------------- parsing


def parse_frame(raw: bytes | bytearray) -> Frame:
    """Parse exactly one frame (optional leading preamble zeros, then the start code ``00 FF``).

    Raises :class:`FrameError` naming the first fault: ``no_start``, ``truncated``,
    ``bad_lcs``, ``bad_dcs``, ``bad_postamble``, ``trailing`` or ``bad_tfi``.
    """
    raw = bytes(raw)
    i = 0
    while i < len(raw) - 1 and raw[i] == PREAMBLE and raw[i + 1] == PREAMBLE:
        i += 1  # extra preamble zeros
    if raw[i:i + 2] != START_CODE:
        raise FrameError("no_start", f"no start code 00 FF at byte {i} (frame of {len(raw)} bytes)", i)
    i += 2
    if len(raw) < i + 2:
        raise FrameError("truncated", f"truncated: {len(raw)} bytes end inside the length field", len(raw))
    length, lcs = raw[i], raw[i + 1]
    if (length, lcs) == (0x00, 0xFF):
        return _special(raw, i + 2, "ack")
    if (length, lcs) == (0xFF, 0x00):
        return _special(raw, i + 2, "nack")
    if (length, lcs) == (0xFF, 0xFF):  # extended frame
        if len(raw) < i + 5:
            raise FrameError("truncated", f"truncated: {len(raw)} bytes end inside the extended length field",
                             len(raw))
        lenm, lenl, lcs = raw[i + 2], raw[i + 3], raw[i + 4]
        if (lenm + lenl + lcs) & 0xFF:
            raise FrameError("bad_lcs", f"bad length checksum at byte {i + 4}: LENM 0x{lenm:02X} + LENL "
                             f"0x{lenl:02X} + LCS 0x{lcs:02X} is not 0 (mod 256)", i + 4)
        length = (lenm << 8) | lenl
        i += 5
    else:
        if (length + lcs) & 0xFF:
            raise FrameError("bad_lcs", f"bad length checksum at byte {i + 1}: LEN 0x{length:02X} + LCS "
                             f"0x{lcs:02X} is not 0 (mod 256)", i + 1)
        i += 2
    if length == 0:
        raise FrameError("bad_lcs", f"information frame with LEN 0 at byte {i - 2} (no TFI)", i - 2)
    need = i + length + 2  # TFI+PD, DCS, postamble
    if len(raw) < need:
        raise FrameError("truncated", f"truncated: {len(raw)} of {need} bytes (LEN {length})", len(raw))
    body = raw[i:i + length]
    dcs_at = i + length
    if (sum(body) + raw[dcs_at]) & 0xFF:
        raise FrameError("bad_dcs", f"bad data checksum at byte {dcs_at}: TFI and {length - 1} data bytes "
                         "do not add up with DCS to 0 (mod 256)", dcs_at)
    _check_tail(raw, dcs_at + 1)
    tfi = body[0]
    if tfi == ERROR_TFI and length == 1:
        return Frame("error", tfi)
    if tfi not in (HOST_TO_PN532, PN532_TO_HOST):
        raise FrameError("bad_tfi", f"unknown frame identifier (TFI) 0x{tfi:02X} at byte {i}", i)
    if length < 2:
        raise FrameError("bad_tfi", f"information frame without a command code at byte {i + 1}", i + 1)
    return Frame("info", tfi, body[1:])


def _special(raw: bytes, i: int, kind: FrameKind) -> Frame:
    if len(raw) < i + 1:
        raise FrameError("truncated", f"truncated {kind.upper()}: no postamble after {len(raw)} bytes", len(raw))
    _check_tail(raw, i)
    return Frame(kind)


def _check_tail(raw: bytes, at: int) -> None:
    if raw[at] != POSTAMBLE:
        raise FrameError("bad_postamble", f"postamble at byte {at} is 0x{raw[at]:02X}, not 00", at)
    if len(raw) > at + 1:
        raise FrameError("trailing", f"{len(raw) - at - 1} bytes after the postamble at byte {at}", at + 1)


# ---------------------------------------------------------------- a byte stream -> frame candidates


class FrameSplitter:
    """Cuts a received byte stream into frame candidates for :func:`parse_frame`. No I/O.

    Bytes before a start code are dropped: zeros are preamble, anything else is
    counted in :attr:`junk`. A candidate whose length checksum is wrong ends
    right after the LCS (so :func:`parse_frame` reports ``bad_lcs``) and the
    search goes on after it.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self.junk = 0

    def feed(self, data: bytes) -> None:
        self._buf += data

    def clear(self) -> int:
        """Forget what is buffered; returns how many bytes that was."""
        n = len(self._buf)
        self._buf.clear()
        return n

    @property
    def pending(self) -> int:
        """Bytes of a frame begun but not complete (0 when nothing is buffered)."""
        return len(self._buf)

    @property
    def expected(self) -> int | None:
        """The size of the frame begun, once its length field is in; else None."""
        return self._extent()

    def next(self) -> bytes | None:
        """The next whole frame candidate, or None until more bytes arrive."""
        self._skip_junk()
        end = self._extent()
        if end is None or len(self._buf) < end:
            return None
        frame = bytes(self._buf[:end])
        del self._buf[:end]
        return frame

    def _skip_junk(self) -> None:
        at = self._buf.find(START_CODE)
        if at < 0:  # keep a trailing 00: it may be the first half of a start code
            keep = 1 if self._buf.endswith(b"\x00") else 0
            cut = len(self._buf) - keep
        else:
            cut = at
        dropped = self._buf[:cut]
        self.junk += len(dropped) - dropped.count(PREAMBLE)
        del self._buf[:cut]

    def _extent(self) -> int | None:
        """Length of the candidate at the start of the buffer (which starts at a start code), or None."""
        buf = self._buf
        if len(buf) < 4 or buf[:2] != START_CODE:
            return None
        length, lcs = buf[2], buf[3]
        if (length, lcs) in ((0x00, 0xFF), (0xFF, 0x00)):  # ACK, NACK
            return 5
        if (length, lcs) == (0xFF, 0xFF):
            if len(buf) < 7:
                return None
            if (buf[4] + buf[5] + buf[6]) & 0xFF:
                return 7
            return 7 + ((buf[4] << 8) | buf[5]) + 2
        if (length + lcs) & 0xFF:
            return 4
        return 4 + length + 2


# ---------------------------------------------------------------- answers


@dataclass(frozen=True, slots=True)
class Firmware:
    """GetFirmwareVersion answer: IC (0x32 = PN532), version, revision, supported protocols bitmap."""

    ic: int
    version: int
    revision: int
    support: int

    def __str__(self) -> str:
        return f"PN5{self.ic:02X} firmware {self.version}.{self.revision}"


def parse_firmware(params: bytes) -> Firmware:
    """The parameters of a GetFirmwareVersion response (after ``D5 03``)."""
    if len(params) != 4:
        raise ResponseError(f"GetFirmwareVersion answer has {len(params)} parameter bytes, expected 4")
    return Firmware(*params)


@dataclass(frozen=True, slots=True)
class Target:
    """One ISO/IEC 14443 type A card found by InListPassiveTarget. ``uid`` is personal data."""

    tg: int
    sens_res: bytes
    sel_res: int
    uid: bytes
    ats: bytes = b""

    def __repr__(self) -> str:  # never show the UID
        return (f"Target(tg={self.tg}, sens_res={self.sens_res.hex()}, sel_res=0x{self.sel_res:02X}, "
                f"uid=<{len(self.uid)} bytes>, ats=<{len(self.ats)} bytes>)")


UID_LENGTHS = (4, 7, 10)
"""Single, double and triple size NFCID1 (ISO/IEC 14443-3)."""


def parse_target_list(params: bytes) -> list[Target]:
    """The parameters of an InListPassiveTarget response at 106 kbps type A (after ``D5 4B``).

    ``NbTg`` then per target: ``Tg SENS_RES(2) SEL_RES NFCIDLength NFCID1[..]``
    and, when SEL_RES says the card is ISO/IEC 14443-4 compliant (bit 0x20),
    ``ATS[..]`` whose first byte is its own length.
    """
    if not params:
        raise ResponseError("InListPassiveTarget answer is empty (no NbTg)")
    count = params[0]
    if count > 2:
        raise ResponseError(f"InListPassiveTarget answer says {count} targets; the PN532 handles at most 2")
    targets: list[Target] = []
    i = 1
    for n in range(count):
        if len(params) < i + 5:
            raise ResponseError(f"target {n + 1} of {count}: answer ends at byte {len(params)} inside the "
                                f"target header (needs bytes {i}..{i + 4})")
        tg, sens_res, sel_res, uid_len = params[i], params[i + 1:i + 3], params[i + 3], params[i + 4]
        if uid_len not in UID_LENGTHS:
            raise ResponseError(f"target {n + 1}: NFCID length {uid_len} at byte {i + 4} (expected 4, 7 or 10)")
        start = i + 5
        if len(params) < start + uid_len:
            raise ResponseError(f"target {n + 1}: answer ends at byte {len(params)}, {uid_len}-byte NFCID needs "
                                f"bytes {start}..{start + uid_len - 1}")
        uid = params[start:start + uid_len]
        i = start + uid_len
        ats = b""
        if sel_res & 0x20:
            if len(params) <= i or params[i] < 1 or len(params) < i + params[i]:
                raise ResponseError(f"target {n + 1}: ISO 14443-4 card without a complete ATS at byte {i}")
            ats = params[i:i + params[i]]
            i += len(ats)
        targets.append(Target(tg, sens_res, sel_res, uid, ats))
    if i != len(params):
        raise ResponseError(f"InListPassiveTarget answer has {len(params) - i} unexpected bytes after byte {i}")
    return targets
