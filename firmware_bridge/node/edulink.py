# EduGate kit link, node side: COBS framing, CRC-32 and the version 1 messages.
#
# Runs unchanged under MicroPython (ESP32, micro:bit v2) and CPython: no typing, no dataclasses,
# no f-strings, only struct and (where present) binascii. The specification is
# docs/firmware-bridge.md; firmware_bridge/vectors.json holds frames both ends must agree on.

try:
    import ustruct as struct
except ImportError:
    import struct

try:
    from binascii import crc32 as _crc32_native
except ImportError:  # micro:bit MicroPython has no binascii
    _crc32_native = None

PROTOCOL_VERSION = 1
HEADER_BYTES = 6
CRC_BYTES = 4
MAX_PAYLOAD = 1024
MAX_BODY = HEADER_BYTES + MAX_PAYLOAD + CRC_BYTES
MAX_ENCODED = MAX_BODY + MAX_BODY // 254 + 1

# message types
HELLO = 0x01
HELLO_REQUEST = 0x02
READINGS = 0x10
COMMAND = 0x20
ACK = 0x30
NACK = 0x31
LOG = 0x40
FW_BEGIN = 0x50
FW_CHUNK = 0x51
FW_STATUS = 0x52
FW_COMMIT = 0x53

# NACK reasons
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

SENSOR = 1
ACTUATOR = 2
SIGNATURE_BYTES = 64
SHA256_BYTES = 32


class LinkError(Exception):
    """A frame that is not valid. args[0] is the kind ('cobs', 'crc', ...), args[1] the explanation."""


# ---------------------------------------------------------------- CRC-32/ISO-HDLC

_TABLE = None


def _crc32_table():
    global _TABLE
    if _TABLE is None:
        table = []
        for n in range(256):
            c = n
            for _ in range(8):
                c = (c >> 1) ^ 0xEDB88320 if c & 1 else c >> 1
            table.append(c)
        _TABLE = table
    return _TABLE


def crc32_py(data):
    table = _crc32_table()
    c = 0xFFFFFFFF
    for b in data:
        c = table[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


def crc32(data):
    if _crc32_native is not None:
        return _crc32_native(data) & 0xFFFFFFFF
    return crc32_py(data)


# ---------------------------------------------------------------- COBS


def cobs_encode(data):
    out = bytearray()
    code_at = 0
    out.append(0)
    code = 1
    n = len(data)
    for i in range(n):
        b = data[i]
        if b == 0:
            out[code_at] = code
            code_at = len(out)
            out.append(0)
            code = 1
        else:
            out.append(b)
            code += 1
            if code == 0xFF and i + 1 < n:
                out[code_at] = code
                code_at = len(out)
                out.append(0)
                code = 1
    out[code_at] = code
    return bytes(out)


def cobs_decode(data):
    out = bytearray()
    i = 0
    n = len(data)
    while i < n:
        code = data[i]
        if code == 0:
            raise LinkError("cobs", "zero byte inside a frame at byte " + str(i))
        end = i + code
        if end > n:
            raise LinkError("cobs", "code byte at " + str(i) + " points past the end of the frame")
        for j in range(i + 1, end):
            if data[j] == 0:
                raise LinkError("cobs", "zero byte inside a frame at byte " + str(j))
        out.extend(data[i + 1:end])
        i = end
        if code < 0xFF and i < n:
            out.append(0)
    return bytes(out)


# ---------------------------------------------------------------- frames


def encode_frame(msg_type, seq, payload, version=PROTOCOL_VERSION):
    """Wire bytes of one frame: COBS(header + payload + CRC-32 LE) and the 0x00 delimiter."""
    if len(payload) > MAX_PAYLOAD:
        raise LinkError("oversized", "payload of " + str(len(payload)) + " bytes is over " + str(MAX_PAYLOAD))
    body = struct.pack("<BBHH", version, msg_type, seq & 0xFFFF, len(payload)) + bytes(payload)
    return cobs_encode(body + struct.pack("<I", crc32(body))) + b"\x00"


def decode_frame(encoded):
    """Bytes between delimiters -> (version, type, seq, payload). Raises LinkError."""
    if not encoded:
        raise LinkError("empty", "empty frame")
    if len(encoded) > MAX_ENCODED:
        raise LinkError("oversized", "frame of " + str(len(encoded)) + " bytes is over " + str(MAX_ENCODED))
    raw = cobs_decode(encoded)
    if len(raw) < HEADER_BYTES + CRC_BYTES:
        raise LinkError("short", "frame of " + str(len(raw)) + " bytes is too short")
    body = raw[:-CRC_BYTES]
    if struct.unpack("<I", raw[-CRC_BYTES:])[0] != crc32(body):
        raise LinkError("crc", "CRC mismatch")
    version, msg_type, seq, length = struct.unpack("<BBHH", body[:HEADER_BYTES])
    payload = body[HEADER_BYTES:]
    if version == PROTOCOL_VERSION and length != len(payload):
        raise LinkError("length", "header says " + str(length) + " payload bytes, frame has " + str(len(payload)))
    return version, msg_type, seq, payload


class Splitter:
    """Bytes as they arrive -> list of decoded frames or LinkError instances."""

    def __init__(self):
        self.buf = bytearray()
        self.skipping = False

    def feed(self, data):
        out = []
        for b in data:
            if b == 0:
                if self.buf and not self.skipping:
                    try:
                        out.append(decode_frame(bytes(self.buf)))
                    except LinkError as exc:
                        out.append(exc)
                self.buf = bytearray()
                self.skipping = False
            elif not self.skipping:
                self.buf.append(b)
                if len(self.buf) > MAX_ENCODED:
                    out.append(LinkError("oversized", "no delimiter after " + str(MAX_ENCODED) + " bytes"))
                    self.buf = bytearray()
                    self.skipping = True
        return out


# ---------------------------------------------------------------- payloads


def str8(text):
    raw = text.encode("utf-8")
    if len(raw) > 255:
        raw = raw[:255]
    return bytes((len(raw),)) + raw


class Reader:
    """Reads fields from a payload; raises LinkError('payload', ...) when it runs short."""

    def __init__(self, data):
        self.data = data
        self.pos = 0

    def take(self, n):
        end = self.pos + n
        if end > len(self.data):
            raise LinkError("payload", "payload too short")
        out = self.data[self.pos:end]
        self.pos = end
        return out

    def u8(self):
        return self.take(1)[0]

    def u16(self):
        return struct.unpack("<H", self.take(2))[0]

    def u32(self):
        return struct.unpack("<I", self.take(4))[0]

    def str8(self):
        raw = self.take(self.u8())
        try:
            return bytes(raw).decode("utf-8")
        except UnicodeError:
            raise LinkError("payload", "text is not UTF-8") from None

    def rest(self):
        out = self.data[self.pos:]
        self.pos = len(self.data)
        return out

    def end(self):
        if self.pos != len(self.data):
            raise LinkError("payload", "unexpected bytes after the last field")


def pack_hello(node_id, board, firmware, max_payload, slot, capabilities):
    """capabilities: list of (kind, name, unit)."""
    out = str8(node_id) + str8(board) + str8(firmware) + struct.pack("<HBB", max_payload, slot, len(capabilities))
    for kind, name, unit in capabilities:
        out += bytes((kind,)) + str8(name) + str8(unit)
    return out


def pack_readings(uptime_ms, values):
    """values: list of (channel index, float)."""
    out = struct.pack("<IB", uptime_ms & 0xFFFFFFFF, len(values))
    for channel, value in values:
        out += struct.pack("<Bd", channel, value)
    return out


def pack_ack(seq, detail=""):
    return struct.pack("<H", seq) + str8(detail)


def pack_nack(seq, reason, detail=""):
    return struct.pack("<HB", seq, reason) + str8(detail)


def pack_log(level, text):
    return bytes((level,)) + str8(text)


def pack_fw_status(seq, next_offset):
    return struct.pack("<HI", seq, next_offset)


def unpack_command(payload):
    r = Reader(payload)
    actuator = r.str8()
    value = r.str8()
    r.end()
    return actuator, value


def unpack_ack(payload):
    r = Reader(payload)
    seq = r.u16()
    detail = r.str8()
    r.end()
    return seq, detail


def unpack_nack(payload):
    r = Reader(payload)
    seq = r.u16()
    reason = r.u8()
    detail = r.str8()
    r.end()
    return seq, reason, detail


def unpack_hello_request(payload):
    r = Reader(payload)
    versions = [r.u8() for _ in range(r.u8())]
    r.end()
    return versions


def unpack_fw_begin(payload):
    r = Reader(payload)
    manifest = bytes(r.take(r.u16()))
    signature = bytes(r.take(SIGNATURE_BYTES))
    r.end()
    return manifest, signature


def unpack_fw_chunk(payload):
    r = Reader(payload)
    offset = r.u32()
    return offset, bytes(r.rest())


def unpack_fw_commit(payload):
    r = Reader(payload)
    sha = bytes(r.take(SHA256_BYTES))
    r.end()
    return sha
