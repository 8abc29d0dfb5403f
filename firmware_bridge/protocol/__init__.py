"""The kit link's wire protocol, gateway side: COBS framing with CRC-32, versioned messages, a stream splitter.

Specification: ``docs/firmware-bridge.md``. The reference node has its own MicroPython-compatible codec
(:mod:`edugate.firmware_bridge.node.edulink`); both are tested against ``firmware_bridge/vectors.json``.
"""

from edugate.firmware_bridge.protocol.errors import CodecError, UnsupportedVersion
from edugate.firmware_bridge.protocol.framing import MAX_ENCODED, MAX_PAYLOAD, crc32, decode_frame, encode_frame
from edugate.firmware_bridge.protocol.messages import (
    PROTOCOL_VERSION,
    SUPPORTED_VERSIONS,
    Ack,
    Capability,
    CapabilityKind,
    Command,
    Frame,
    FwBegin,
    FwChunk,
    FwCommit,
    FwStatus,
    Hello,
    HelloRequest,
    Log,
    Message,
    MsgType,
    Nack,
    Readings,
    Reason,
    decode,
    decode_body,
    encode,
    encode_body,
)
from edugate.firmware_bridge.protocol.stream import FrameSplitter

__all__ = [
    "MAX_ENCODED", "MAX_PAYLOAD", "PROTOCOL_VERSION", "SUPPORTED_VERSIONS", "Ack", "Capability", "CapabilityKind",
    "CodecError", "Command", "Frame", "FrameSplitter", "FwBegin", "FwChunk", "FwCommit", "FwStatus", "Hello",
    "HelloRequest", "Log", "Message", "MsgType", "Nack", "Readings", "Reason", "UnsupportedVersion", "crc32",
    "decode", "decode_body", "decode_frame", "encode", "encode_body", "encode_frame",
]
