"""Frames on the wire: ``COBS(body + CRC-32(body) little-endian) 0x00``.

COBS comes from the ``cobs`` package (C extension). The CRC is CRC-32/ISO-HDLC (the zlib/Ethernet CRC:
polynomial 0x04C11DB7 reflected, init and final XOR 0xFFFFFFFF; check value 0xCBF43926), computed with
:func:`binascii.crc32` (zlib's): the ``crc`` package computes the same function (the tests check that) but is
3 400-7 400 times slower in CPython (0.75-1.6 ms per 256-byte frame; ``bench/kit_link.py``, docs/benchmarks.md),
too slow for a Pi's hot path.
"""

from __future__ import annotations

import binascii
import struct

from cobs import cobs

from edugate.firmware_bridge.protocol.errors import CodecError

CRC_BYTES = 4
HEADER_BYTES = 6
MAX_PAYLOAD = 1024
"""The largest payload of any message, in bytes, in protocol version 1."""
MAX_BODY = HEADER_BYTES + MAX_PAYLOAD + CRC_BYTES
MAX_ENCODED = MAX_BODY + MAX_BODY // 254 + 1
"""The largest COBS-encoded frame, without its delimiter: a receiver drops longer runs as ``oversized``."""
DELIMITER = b"\x00"

_CRC = struct.Struct("<I")


def crc32(data: bytes) -> int:
    """CRC-32/ISO-HDLC of ``data``."""
    return binascii.crc32(data) & 0xFFFFFFFF


def encode_frame(body: bytes) -> bytes:
    """The bytes to send for one frame body (header + payload): COBS of body + CRC, then the 0x00 delimiter."""
    if len(body) > MAX_BODY - CRC_BYTES:
        raise CodecError("oversized", f"frame body of {len(body)} bytes is over the limit of "
                                      f"{MAX_BODY - CRC_BYTES} (header + {MAX_PAYLOAD} payload bytes)")
    return cobs.encode(body + _CRC.pack(crc32(body))) + DELIMITER


def decode_frame(encoded: bytes) -> bytes:
    """The checked body (header + payload) of one frame, given its bytes between delimiters.

    Raises :class:`CodecError` (kind ``empty``, ``oversized``, ``cobs``, ``short`` or ``crc``).
    """
    if not encoded:
        raise CodecError("empty", "empty frame (two delimiters in a row)")
    if len(encoded) > MAX_ENCODED:
        raise CodecError("oversized", f"frame of {len(encoded)} bytes is over the limit of {MAX_ENCODED}")
    try:
        raw = cobs.decode(encoded)
    except cobs.DecodeError as exc:
        raise CodecError("cobs", f"broken COBS encoding in a frame of {len(encoded)} bytes: {exc}") from None
    if len(raw) < HEADER_BYTES + CRC_BYTES:
        raise CodecError("short", f"frame of {len(raw)} bytes is shorter than a header and a CRC "
                                  f"({HEADER_BYTES + CRC_BYTES} bytes)")
    body, (sent,) = raw[:-CRC_BYTES], _CRC.unpack(raw[-CRC_BYTES:])
    computed = crc32(body)
    if computed != sent:
        raise CodecError("crc", f"CRC mismatch in a frame of {len(raw)} bytes: sent {sent:#010x}, "
                                f"computed {computed:#010x} (bytes corrupted on the line)")
    return body
