"""The messages of the kit link, protocol version 1, and their byte layouts (``docs/firmware-bridge.md``).

A frame body is a 6-byte header, then the payload::

    version u8 | type u8 | seq u16 LE | payload length u16 LE | payload

``version``, ``type`` and ``seq`` keep these places in every protocol version, so that a side can
always read whom to refuse and why. Numbers are little-endian; ``str8`` is a u8 length and that many
bytes of UTF-8; ``bytes16`` is a u16 length and that many bytes. Each side numbers the frames it
sends (``seq``, from 0 at start, wrapping after 65535); answers (ACK, NACK, FW_STATUS) name the
``seq`` they answer.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from enum import IntEnum
from typing import ClassVar

from edugate.firmware_bridge.protocol.errors import CodecError, UnsupportedVersion
from edugate.firmware_bridge.protocol.framing import HEADER_BYTES, MAX_PAYLOAD, decode_frame, encode_frame

PROTOCOL_VERSION = 1
SUPPORTED_VERSIONS: tuple[int, ...] = (1,)
"""The protocol versions this gateway speaks."""

_HEADER = struct.Struct("<BBHH")


class MsgType(IntEnum):
    HELLO = 0x01  # node -> gateway
    HELLO_REQUEST = 0x02  # gateway -> node
    READINGS = 0x10  # node -> gateway
    COMMAND = 0x20  # gateway -> node
    ACK = 0x30  # both ways
    NACK = 0x31  # both ways
    LOG = 0x40  # node -> gateway
    FW_BEGIN = 0x50  # gateway -> node
    FW_CHUNK = 0x51  # gateway -> node
    FW_STATUS = 0x52  # node -> gateway
    FW_COMMIT = 0x53  # gateway -> node


class Reason(IntEnum):
    """Why a NACK refuses a frame. Receivers must accept codes they do not know (newer peers)."""

    UNSUPPORTED_VERSION = 1
    UNKNOWN_TYPE = 2
    BAD_PAYLOAD = 3
    UNKNOWN_ACTUATOR = 4
    BAD_VALUE = 5
    NOT_READY = 6
    FW_BAD_MANIFEST = 16
    FW_BAD_SIGNATURE = 17
    FW_WRONG_BOARD = 18
    FW_DOWNGRADE = 19
    FW_TOO_LARGE = 20
    FW_NO_TRANSFER = 21
    FW_BAD_OFFSET = 22
    FW_INCOMPLETE = 23
    FW_BAD_HASH = 24
    FW_IO_ERROR = 25


class CapabilityKind(IntEnum):
    SENSOR = 1
    ACTUATOR = 2


# ---------------------------------------------------------------- payload reading and writing


class _Reader:
    def __init__(self, data: bytes, what: str) -> None:
        self.data = data
        self.pos = 0
        self.what = what

    def _take(self, n: int, field_name: str) -> bytes:
        end = self.pos + n
        if end > len(self.data):
            raise CodecError("payload", f"{self.what}: payload ends at byte {len(self.data)} inside {field_name} "
                                        f"(needs bytes {self.pos}..{end - 1})")
        out = self.data[self.pos:end]
        self.pos = end
        return out

    def u8(self, name: str) -> int:
        return self._take(1, name)[0]

    def u16(self, name: str) -> int:
        return int.from_bytes(self._take(2, name), "little")

    def u32(self, name: str) -> int:
        return int.from_bytes(self._take(4, name), "little")

    def f64(self, name: str) -> float:
        return float(struct.unpack("<d", self._take(8, name))[0])

    def str8(self, name: str) -> str:
        raw = self._take(self.u8(name + " length"), name)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise CodecError("payload", f"{self.what}: {name} is not UTF-8") from None

    def bytes16(self, name: str) -> bytes:
        return self._take(self.u16(name + " length"), name)

    def fixed(self, n: int, name: str) -> bytes:
        return self._take(n, name)

    def rest(self) -> bytes:
        out = self.data[self.pos:]
        self.pos = len(self.data)
        return out

    def end(self) -> None:
        if self.pos != len(self.data):
            raise CodecError("payload", f"{self.what}: {len(self.data) - self.pos} unexpected bytes after the "
                                        f"payload's last field (at byte {self.pos})")


def _str8(value: str, name: str) -> bytes:
    raw = value.encode("utf-8")
    if len(raw) > 255:
        raise CodecError("payload", f"{name} is {len(raw)} bytes of UTF-8, at most 255 fit")
    return bytes((len(raw),)) + raw


def _u(value: int, size: int, name: str) -> bytes:
    if not 0 <= value < 1 << (8 * size):
        raise CodecError("payload", f"{name} {value} does not fit in {8 * size} bits")
    return value.to_bytes(size, "little")


# ---------------------------------------------------------------- the messages


@dataclass(frozen=True, slots=True)
class Capability:
    """One sensor channel or actuator a node has. Readings name sensors by their index in the HELLO's list."""

    kind: CapabilityKind
    name: str
    unit: str = ""


@dataclass(frozen=True, slots=True)
class Hello:
    """Node -> gateway, at boot and when asked: who I am. The protocol version is the frame header's."""

    TYPE: ClassVar[MsgType] = MsgType.HELLO
    node_id: str
    board: str
    firmware: str
    max_payload: int = 256
    slot: int = 0
    capabilities: tuple[Capability, ...] = ()

    def pack(self) -> bytes:
        if len(self.capabilities) > 255:
            raise CodecError("payload", f"{len(self.capabilities)} capabilities, at most 255 fit")
        out = [_str8(self.node_id, "node_id"), _str8(self.board, "board"), _str8(self.firmware, "firmware"),
               _u(self.max_payload, 2, "max_payload"), _u(self.slot, 1, "slot"), bytes((len(self.capabilities),))]
        for cap in self.capabilities:
            out += [_u(int(cap.kind), 1, "capability kind"), _str8(cap.name, "capability name"),
                    _str8(cap.unit, "capability unit")]
        return b"".join(out)

    @classmethod
    def unpack(cls, r: _Reader) -> Hello:
        node_id, board, firmware = r.str8("node_id"), r.str8("board"), r.str8("firmware")
        max_payload, slot = r.u16("max_payload"), r.u8("slot")
        caps = []
        for i in range(r.u8("capability count")):
            kind = r.u8(f"capability {i} kind")
            if kind not in CapabilityKind._value2member_map_:
                raise CodecError("payload", f"HELLO: capability {i} has kind {kind}, expected 1 (sensor) or 2 "
                                            "(actuator)")
            caps.append(Capability(CapabilityKind(kind), r.str8(f"capability {i} name"),
                                   r.str8(f"capability {i} unit")))
        return cls(node_id, board, firmware, max_payload, slot, tuple(caps))

    @property
    def sensors(self) -> tuple[Capability, ...]:
        return tuple(c for c in self.capabilities if c.kind == CapabilityKind.SENSOR)

    @property
    def actuators(self) -> tuple[Capability, ...]:
        return tuple(c for c in self.capabilities if c.kind == CapabilityKind.ACTUATOR)


@dataclass(frozen=True, slots=True)
class HelloRequest:
    """Gateway -> node: introduce yourself (sent on connect). Lists the protocol versions the gateway speaks."""

    TYPE: ClassVar[MsgType] = MsgType.HELLO_REQUEST
    versions: tuple[int, ...] = SUPPORTED_VERSIONS

    def pack(self) -> bytes:
        return bytes((len(self.versions),)) + b"".join(_u(v, 1, "version") for v in self.versions)

    @classmethod
    def unpack(cls, r: _Reader) -> HelloRequest:
        return cls(tuple(r.u8("version") for _ in range(r.u8("version count"))))


@dataclass(frozen=True, slots=True)
class Readings:
    """Node -> gateway: sensor values, each as (index into the HELLO's capabilities, value)."""

    TYPE: ClassVar[MsgType] = MsgType.READINGS
    uptime_ms: int
    values: tuple[tuple[int, float], ...]

    def pack(self) -> bytes:
        if len(self.values) > 255:
            raise CodecError("payload", f"{len(self.values)} values, at most 255 fit in one READINGS")
        out = [_u(self.uptime_ms, 4, "uptime_ms"), bytes((len(self.values),))]
        out += [_u(ch, 1, "channel") + struct.pack("<d", v) for ch, v in self.values]
        return b"".join(out)

    @classmethod
    def unpack(cls, r: _Reader) -> Readings:
        uptime = r.u32("uptime_ms")
        return cls(uptime, tuple((r.u8(f"channel {i}"), r.f64(f"value {i}")) for i in range(r.u8("value count"))))


@dataclass(frozen=True, slots=True)
class Command:
    """Gateway -> node: set an actuator. The node answers ACK (done) or NACK (refused, with the reason)."""

    TYPE: ClassVar[MsgType] = MsgType.COMMAND
    actuator: str
    value: str = ""

    def pack(self) -> bytes:
        return _str8(self.actuator, "actuator") + _str8(self.value, "value")

    @classmethod
    def unpack(cls, r: _Reader) -> Command:
        return cls(r.str8("actuator"), r.str8("value"))


@dataclass(frozen=True, slots=True)
class Ack:
    """The frame numbered ``seq`` was accepted (for READINGS: they are durable)."""

    TYPE: ClassVar[MsgType] = MsgType.ACK
    seq: int
    detail: str = ""

    def pack(self) -> bytes:
        return _u(self.seq, 2, "acked seq") + _str8(self.detail, "detail")

    @classmethod
    def unpack(cls, r: _Reader) -> Ack:
        return cls(r.u16("acked seq"), r.str8("detail"))


@dataclass(frozen=True, slots=True)
class Nack:
    """The frame numbered ``seq`` was refused. ``reason`` is a :class:`Reason` or, from a newer peer, an int."""

    TYPE: ClassVar[MsgType] = MsgType.NACK
    seq: int
    reason: Reason | int
    detail: str = ""

    def pack(self) -> bytes:
        return _u(self.seq, 2, "nacked seq") + _u(int(self.reason), 1, "reason") + _str8(self.detail, "detail")

    @classmethod
    def unpack(cls, r: _Reader) -> Nack:
        seq, code = r.u16("nacked seq"), r.u8("reason")
        reason: Reason | int = Reason(code) if code in Reason._value2member_map_ else code
        return cls(seq, reason, r.str8("detail"))

    @property
    def reason_name(self) -> str:
        if isinstance(self.reason, Reason):
            return self.reason.name.lower().replace("_", "-")
        return f"reason-{self.reason}"


@dataclass(frozen=True, slots=True)
class Log:
    """Node -> gateway: a log line. ``level`` as in Python's logging (10 debug, 20 info, 30 warning, 40 error)."""

    TYPE: ClassVar[MsgType] = MsgType.LOG
    level: int
    text: str

    def pack(self) -> bytes:
        return _u(self.level, 1, "level") + _str8(self.text, "text")

    @classmethod
    def unpack(cls, r: _Reader) -> Log:
        return cls(r.u8("level"), r.str8("text"))


SIGNATURE_BYTES = 64
SHA256_BYTES = 32


@dataclass(frozen=True, slots=True)
class FwBegin:
    """Gateway -> node: start (or resume) a firmware transfer. The node answers FW_STATUS or NACK."""

    TYPE: ClassVar[MsgType] = MsgType.FW_BEGIN
    manifest: bytes
    signature: bytes

    def pack(self) -> bytes:
        if len(self.signature) != SIGNATURE_BYTES:
            raise CodecError("payload", f"signature is {len(self.signature)} bytes, Ed25519 has {SIGNATURE_BYTES}")
        return _u(len(self.manifest), 2, "manifest length") + self.manifest + self.signature

    @classmethod
    def unpack(cls, r: _Reader) -> FwBegin:
        return cls(r.bytes16("manifest"), r.fixed(SIGNATURE_BYTES, "signature"))


@dataclass(frozen=True, slots=True)
class FwChunk:
    """Gateway -> node: image bytes at ``offset``. The node answers FW_STATUS (or NACK)."""

    TYPE: ClassVar[MsgType] = MsgType.FW_CHUNK
    offset: int
    data: bytes

    def pack(self) -> bytes:
        return _u(self.offset, 4, "offset") + self.data

    @classmethod
    def unpack(cls, r: _Reader) -> FwChunk:
        return cls(r.u32("offset"), r.rest())


@dataclass(frozen=True, slots=True)
class FwStatus:
    """Node -> gateway, answering FW_BEGIN or FW_CHUNK ``seq``: send the image from ``next_offset`` on."""

    TYPE: ClassVar[MsgType] = MsgType.FW_STATUS
    seq: int
    next_offset: int

    def pack(self) -> bytes:
        return _u(self.seq, 2, "answered seq") + _u(self.next_offset, 4, "next_offset")

    @classmethod
    def unpack(cls, r: _Reader) -> FwStatus:
        return cls(r.u16("answered seq"), r.u32("next_offset"))


@dataclass(frozen=True, slots=True)
class FwCommit:
    """Gateway -> node: the whole image is sent; verify it and switch slots. ACK, then a HELLO with the new version."""

    TYPE: ClassVar[MsgType] = MsgType.FW_COMMIT
    sha256: bytes

    def pack(self) -> bytes:
        if len(self.sha256) != SHA256_BYTES:
            raise CodecError("payload", f"sha256 is {len(self.sha256)} bytes, expected {SHA256_BYTES}")
        return self.sha256

    @classmethod
    def unpack(cls, r: _Reader) -> FwCommit:
        return cls(r.fixed(SHA256_BYTES, "sha256"))


Message = (Hello | HelloRequest | Readings | Command | Ack | Nack | Log | FwBegin | FwChunk | FwStatus | FwCommit)

_BY_TYPE: dict[int, type[Message]] = {
    cls.TYPE: cls for cls in (Hello, HelloRequest, Readings, Command, Ack, Nack, Log, FwBegin, FwChunk,
                              FwStatus, FwCommit)
}


@dataclass(frozen=True, slots=True)
class Frame:
    """One decoded frame: its sender's sequence number and its message."""

    seq: int
    message: Message
    version: int = field(default=PROTOCOL_VERSION)


# ---------------------------------------------------------------- bodies and wire bytes


def encode_body(message: Message, seq: int, version: int = PROTOCOL_VERSION) -> bytes:
    payload = message.pack()
    if len(payload) > MAX_PAYLOAD:
        raise CodecError("oversized", f"{message.TYPE.name} payload of {len(payload)} bytes is over the limit "
                                      f"of {MAX_PAYLOAD}")
    _u(seq, 2, "seq")
    _u(version, 1, "version")
    return _HEADER.pack(version, int(message.TYPE), seq, len(payload)) + payload


def decode_body(body: bytes, supported: tuple[int, ...] = SUPPORTED_VERSIONS) -> Frame:
    """A checked frame body -> :class:`Frame`. Raises :class:`CodecError` (:class:`UnsupportedVersion` for a
    version not in ``supported``)."""
    if len(body) < HEADER_BYTES:
        raise CodecError("short", f"frame body of {len(body)} bytes is shorter than the {HEADER_BYTES}-byte header")
    version, msg_type, seq, length = _HEADER.unpack_from(body)
    if version not in supported:
        raise UnsupportedVersion(version, msg_type, seq, supported)
    payload = body[HEADER_BYTES:]
    if length != len(payload):
        raise CodecError("length", f"header says {length} payload bytes, the frame has {len(payload)}")
    cls = _BY_TYPE.get(msg_type)
    if cls is None:
        raise CodecError("type", f"unknown message type {msg_type:#04x} in protocol version {version}")
    reader = _Reader(payload, cls.TYPE.name)
    message = cls.unpack(reader)
    reader.end()
    return Frame(seq, message, version)


def encode(message: Message, seq: int, version: int = PROTOCOL_VERSION) -> bytes:
    """The wire bytes of one message: COBS-framed, CRC-checked, delimited."""
    return encode_frame(encode_body(message, seq, version))


def decode(encoded: bytes, supported: tuple[int, ...] = SUPPORTED_VERSIONS) -> Frame:
    """The bytes of one frame between delimiters -> :class:`Frame`. Raises only :class:`CodecError`."""
    return decode_body(decode_frame(encoded), supported)
