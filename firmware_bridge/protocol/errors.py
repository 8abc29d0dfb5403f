"""The one error type of the kit link's codec, with a machine-readable ``kind`` for counting."""

from __future__ import annotations

from typing import Literal

ErrorKind = Literal[
    "empty",  # a delimiter with nothing before it (harmless: nodes send one to resynchronise)
    "oversized",  # more bytes than the largest frame before a delimiter
    "cobs",  # the COBS encoding is broken (a code byte points past the end, a zero inside)
    "short",  # fewer bytes than a header and a CRC
    "crc",  # the CRC-32 does not match: bytes were corrupted on the line
    "length",  # the header's payload length is not the number of payload bytes
    "version",  # a protocol version this side does not speak
    "type",  # a message type this protocol version does not have
    "payload",  # the payload does not fit the message type's layout
]


class CodecError(ValueError):
    """A frame or message that cannot be decoded (or a message that cannot be encoded).

    ``kind`` says which check failed (for counters), the message says what and where in words.
    Decoding never raises anything else, whatever the input bytes.
    """

    def __init__(self, kind: ErrorKind, message: str) -> None:
        super().__init__(message)
        self.kind: ErrorKind = kind


class UnsupportedVersion(CodecError):
    """A frame whose header names a protocol version this side does not speak; its header is still readable."""

    def __init__(self, version: int, msg_type: int, seq: int, supported: tuple[int, ...]) -> None:
        speaks = ", ".join(str(v) for v in supported)
        super().__init__("version", f"protocol version {version} is not supported: this gateway speaks "
                                    f"protocol version{'s' if len(supported) != 1 else ''} {speaks}")
        self.version = version
        self.msg_type = msg_type
        self.seq = seq
        self.supported = supported
