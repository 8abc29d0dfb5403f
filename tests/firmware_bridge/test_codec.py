"""Byte-level tests of the gateway-side codec: round trips, corruption, fuzzing, the shared vectors."""

from __future__ import annotations

import json

import pytest
from cobs import cobs
from crc import Calculator, Crc32
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edugate.firmware_bridge.make_vectors import VECTORS_PATH, render
from edugate.firmware_bridge.protocol import (
    MAX_ENCODED,
    Ack,
    CodecError,
    Command,
    Frame,
    FrameSplitter,
    FwChunk,
    Hello,
    Message,
    MsgType,
    Nack,
    Reason,
    UnsupportedVersion,
    crc32,
    decode,
    decode_body,
    encode,
    encode_body,
    encode_frame,
)
from tests.firmware_bridge.strategies import messages

VECTORS = json.loads(VECTORS_PATH.read_text(encoding="utf-8"))
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _flip_every_bit(wire: bytes) -> list[bytes]:
    return [wire[:i] + bytes((wire[i] ^ (1 << bit),)) + wire[i + 1:] for i in range(len(wire)) for bit in range(8)]


def _all_refused(wire: bytes) -> list[CodecError]:
    """Feed ``wire`` and a delimiter to a fresh splitter; assert that nothing decodes; return the errors."""
    out = FrameSplitter().feed(wire + b"\x00")
    frames = [x for x in out if isinstance(x, Frame)]
    assert frames == [], f"a corrupted frame decoded: {frames}"
    return [x for x in out if isinstance(x, CodecError)]


# ---------------------------------------------------------------- round trips


@FUZZ
@given(messages, st.integers(0, 0xFFFF))
def test_every_message_round_trips(message: Message, seq: int) -> None:
    wire = encode(message, seq)
    assert wire.endswith(b"\x00") and b"\x00" not in wire[:-1]
    assert len(wire) - 1 <= MAX_ENCODED
    assert decode(wire[:-1]) == Frame(seq, message)
    assert FrameSplitter().feed(wire) == [Frame(seq, message)]


@FUZZ
@given(st.lists(messages, min_size=1, max_size=5), st.integers(1, 64))
def test_frames_split_across_reads_in_any_way(batch: list[Message], piece: int) -> None:
    wire = b"".join(encode(m, i) for i, m in enumerate(batch))
    splitter = FrameSplitter()
    got: list[Frame | CodecError] = []
    for i in range(0, len(wire), piece):
        got += splitter.feed(wire[i:i + piece])
    assert got == [Frame(i, m) for i, m in enumerate(batch)]
    assert splitter.pending == 0


def test_too_long_fields_are_refused_on_encode() -> None:
    with pytest.raises(CodecError, match="at most 255"):
        encode(Command("x" * 256, ""), 0)
    with pytest.raises(CodecError, match="over the limit"):
        encode(FwChunk(0, bytes(1021)), 0)
    with pytest.raises(CodecError, match="seq 65536"):
        encode(Ack(0), 65536)


# ---------------------------------------------------------------- corruption


@pytest.mark.parametrize("vector", VECTORS["frames"], ids=lambda v: v["name"])
def test_every_single_bit_flip_of_a_vector_frame_is_detected(vector: dict[str, str]) -> None:
    wire = bytes.fromhex(vector["wire"])
    for corrupted in _flip_every_bit(wire):
        assert _all_refused(corrupted)


@settings(max_examples=40, deadline=None)
@given(messages, st.integers(0, 0xFFFF))
def test_every_single_bit_flip_of_any_frame_is_detected(message: Message, seq: int) -> None:
    wire = encode(message, seq)
    if len(wire) > 300:  # keep the number of flips bounded (8 per byte)
        wire = encode(Ack(seq % 65536, "x"), seq)
    for corrupted in _flip_every_bit(wire):
        _all_refused(corrupted)


def test_every_truncation_is_detected() -> None:
    wire = bytes.fromhex(VECTORS["frames"][0]["wire"])
    for n in range(1, len(wire) - 1):
        assert _all_refused(wire[:n])


@pytest.mark.parametrize("vector", VECTORS["corrupt"], ids=lambda v: v["name"])
def test_corrupt_vectors_are_refused_with_their_reason(vector: dict[str, str]) -> None:
    with pytest.raises(CodecError) as info:
        decode(bytes.fromhex(vector["encoded"]))
    assert info.value.kind == vector["kind"]


def test_each_corruption_has_a_clear_message() -> None:
    good = encode(Command("led", "on"), 7)[:-1]
    flipped = bytearray(good)
    flipped[-1] ^= 1
    with pytest.raises(CodecError, match=r"CRC mismatch in a frame of \d+ bytes: sent 0x[0-9a-f]{8}, computed"):
        decode(bytes(flipped))
    with pytest.raises(CodecError, match="broken COBS encoding"):
        decode(b"\x09\x01")
    with pytest.raises(CodecError, match="shorter than a header and a CRC"):
        decode(cobs.encode(b"\x01\x02"))
    with pytest.raises(CodecError, match="unknown message type 0x7f"):
        decode_body(bytes((1, 0x7F, 0, 0, 0, 0)))
    with pytest.raises(CodecError, match=r"COMMAND: payload ends at byte 3 inside value"):
        decode_body(bytes((1, 0x20, 0, 0, 3, 0)) + b"\x01a\x05")
    with pytest.raises(CodecError, match="2 unexpected bytes after the payload's last field"):
        body = encode_body(Ack(1, ""), 0)
        decode_body(body[:4] + (len(body) - 4).to_bytes(2, "little") + body[6:] + b"zz")


def test_unknown_protocol_version_names_the_versions_spoken() -> None:
    body = bytearray(encode_body(Hello("n1", "esp32", "2.0.0"), 3))
    body[0] = 2
    with pytest.raises(UnsupportedVersion) as info:
        decode(encode_frame(bytes(body))[:-1])
    exc = info.value
    assert (exc.version, exc.msg_type, exc.seq, exc.kind) == (2, MsgType.HELLO, 3, "version")
    assert str(exc) == "protocol version 2 is not supported: this gateway speaks protocol version 1"


def test_garbage_without_delimiter_is_bounded_and_reported_once() -> None:
    splitter = FrameSplitter()
    out = splitter.feed(b"\x55" * (3 * MAX_ENCODED))
    assert [e.kind for e in out if isinstance(e, CodecError)] == ["oversized"]
    assert splitter.pending == 0
    good = encode(Ack(1), 2)
    assert splitter.feed(b"\x00" + good) == [Frame(2, Ack(1))]


def test_unknown_nack_reason_from_a_newer_node_is_kept() -> None:
    frame = decode(encode(Nack(1, 200, "new"), 0)[:-1])
    assert frame.message == Nack(1, 200, "new")
    assert isinstance(frame.message, Nack) and frame.message.reason_name == "reason-200"
    assert Nack(1, Reason.FW_BAD_HASH).reason_name == "fw-bad-hash"


# ---------------------------------------------------------------- fuzzing: only CodecError, ever


@FUZZ
@given(st.binary(max_size=2000))
def test_decoder_raises_only_codec_errors_on_any_bytes(data: bytes) -> None:
    try:
        decode(data)
    except CodecError:
        pass
    for item in FrameSplitter().feed(data):
        assert isinstance(item, Frame | CodecError)


@FUZZ
@given(st.integers(1, 3), st.sampled_from([*list(MsgType), 0, 0x7F, 0xFF]), st.integers(0, 0xFFFF),
       st.binary(max_size=300))
def test_decoder_raises_only_codec_errors_on_any_checked_body(version: int, msg_type: int, seq: int,
                                                             payload: bytes) -> None:
    """Past the CRC, with a right or wrong length field: the message parsers see arbitrary payloads."""
    for length in (len(payload), (len(payload) + 1) % 65536):
        body = bytes((version, msg_type)) + seq.to_bytes(2, "little") + length.to_bytes(2, "little") + payload
        try:
            frame = decode(encode_frame(body)[:-1])
        except CodecError:
            continue
        assert encode_body(frame.message, frame.seq, frame.version) == body


@FUZZ
@given(messages, st.integers(0, 0xFFFF), st.data())
def test_decoder_raises_only_codec_errors_on_mutated_frames(message: Message, seq: int, data: st.DataObject) -> None:
    wire = bytearray(encode(message, seq))
    for _ in range(data.draw(st.integers(1, 6))):
        i = data.draw(st.integers(0, len(wire) - 1))
        wire[i] = data.draw(st.integers(0, 255))
    for item in FrameSplitter().feed(bytes(wire)):
        assert isinstance(item, Frame | CodecError)


# ---------------------------------------------------------------- the CRC and COBS we depend on


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=600))
def test_crc32_is_the_crc_package_crc32(data: bytes) -> None:
    assert crc32(data) == Calculator(Crc32.CRC32).checksum(data)


def test_vectors_file_is_what_the_generator_makes() -> None:
    assert VECTORS_PATH.read_text(encoding="utf-8") == render(), \
        "run: python -m edugate.firmware_bridge.make_vectors"


def test_vectors_decode_with_the_gateway_codec() -> None:
    assert crc32(b"123456789") == 0xCBF43926
    for v in VECTORS["crc32"]:
        assert f"{crc32(bytes.fromhex(v['data'])):08x}" == v["crc"]
    for v in VECTORS["frames"]:
        frame = decode(bytes.fromhex(v["wire"])[:-1])
        assert encode_body(frame.message, frame.seq) == bytes.fromhex(v["body"])
        assert (frame.seq, int(frame.message.TYPE)) == (v["seq"], v["type"])


def test_the_specifications_example_bytes_are_the_vectors() -> None:
    """Every long hex string quoted in docs/firmware-bridge.md is a frame (wire or body) or CRC input of
    vectors.json, so the specification cannot drift from the codecs."""
    import re

    doc = (VECTORS_PATH.parents[1] / "docs" / "firmware-bridge.md").read_text(encoding="utf-8")
    quoted = [q.replace(" ", "") for q in re.findall(r"`([0-9a-f ]{16,})`", doc)]
    known = {v["wire"] for v in VECTORS["frames"]} | {v["body"] for v in VECTORS["frames"]}
    known |= {v["data"] for v in VECTORS["crc32"]}
    assert len(quoted) >= 6
    assert [q for q in quoted if q not in known] == []
