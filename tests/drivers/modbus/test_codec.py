"""Pure Modbus helpers, on plain register lists and plain bytes."""

from __future__ import annotations

import random
import struct

import pytest
from pymodbus.framer import FramerRTU

from edugate.drivers.modbus.codec import (
    MAX_READ_COUNT,
    Point,
    crc16,
    decode_words,
    diagnose_rtu,
    diagnose_tcp,
    encode_words,
    plan_reads,
    rtu_frame,
)

# ---------------------------------------------------------------- words <-> raw numbers


@pytest.mark.parametrize(
    ("words", "type_", "order", "expected"),
    [
        ([0x00D9], "int16", "big", 217),
        ([0xFF9C], "int16", "big", -100),
        ([0xFF9C], "uint16", "big", 65436),
        ([0x8000], "int16", "big", -32768),
        ([0x0001, 0x86A0], "uint32", "big", 100_000),
        ([0x86A0, 0x0001], "uint32", "little", 100_000),
        ([0xFFFF, 0xFFFE], "int32", "big", -2),
        ([0xFFFE, 0xFFFF], "int32", "little", -2),
        ([0x41AD, 0x999A], "float32", "big", struct.unpack(">f", bytes.fromhex("41ad999a"))[0]),
        ([0x999A, 0x41AD], "float32", "little", struct.unpack(">f", bytes.fromhex("41ad999a"))[0]),
        ([0x4366, 0x0000], "float32", "big", 230.0),
    ],
)
def test_decode_words(words: list[int], type_: str, order: str, expected: float) -> None:
    assert decode_words(words, type_, order) == expected


@pytest.mark.parametrize("type_", ["int16", "uint16", "int32", "uint32", "float32"])
@pytest.mark.parametrize("order", ["big", "little"])
def test_encode_is_the_inverse_of_decode(type_: str, order: str) -> None:
    rng = random.Random(7)
    for _ in range(200):
        width = 1 if type_.endswith("16") else 2
        words = [rng.randrange(0x10000) for _ in range(width)]
        raw = decode_words(words, type_, order)
        if type_ == "float32" and raw != raw:  # NaN has many encodings
            continue
        assert encode_words(raw, type_, order) == words


def test_decode_rejects_the_wrong_number_of_words() -> None:
    with pytest.raises(ValueError, match="int32 needs 2 register"):
        decode_words([1], "int32")


def test_encode_rejects_values_out_of_range() -> None:
    with pytest.raises(ValueError, match="does not fit in uint16"):
        encode_words(70000, "uint16")
    with pytest.raises(ValueError, match="does not fit in int16"):
        encode_words(-40000, "int16")


# ---------------------------------------------------------------- scaling


def test_scaled_values_are_rounded_to_the_scale_s_places() -> None:
    temp = Point("temperature", 1, "int16", scale=0.1)
    assert temp.decode([217]) == 21.7  # not 21.700000000000003
    assert temp.decode([0xFFCB]) == -5.3
    ph = Point("ph", 0, "uint16", scale=0.01)
    assert ph.decode([685]) == 6.85
    assert Point("x", 0, scale=0.25).decode([3]) == 0.75
    assert Point("x", 0, scale=0.1, offset=-0.45).decode([250]) == 24.55


def test_integral_scale_gives_ints() -> None:
    co2 = Point("co2", 2, "uint16")
    assert co2.decode([1250]) == 1250
    assert isinstance(co2.decode([1250]), int)
    tenfold = Point("flow", 0, "uint16", scale=10, offset=-5)
    assert tenfold.decode([12]) == 115
    assert isinstance(tenfold.decode([12]), int)


def test_explicit_decimals_win() -> None:
    assert Point("x", 0, "uint16", scale=0.001, decimals=1).decode([1234]) == 1.2


def test_float32_loses_its_noise_digits() -> None:
    p = Point("v", 0, "float32")
    assert p.decode(encode_words(21.7, "float32")) == 21.7
    assert Point("v", 0, "float32", decimals=1).decode(encode_words(229.96, "float32")) == 230.0
    assert p.decode([0x7FC0, 0x0000]) != p.decode([0x7FC0, 0x0000])  # NaN passes through as NaN


def test_engineering_value_to_registers_and_back() -> None:
    temp = Point("temperature", 1, "int16", scale=0.1)
    assert temp.encode(-5.3) == [0xFFCB]
    assert temp.encode(21.74) == [217]  # rounded to what the device can hold
    assert temp.encode(9999) == [0x7FFF]  # clamped to the type's range
    energy = Point("energy", 342, "float32")
    assert energy.decode(energy.encode(1234.5)) == 1234.5


# ---------------------------------------------------------------- read planning


def _addresses(blocks: list) -> list[tuple[str, int, int]]:
    return [(b.function, b.address, b.count) for b in blocks]


def test_contiguous_registers_share_one_read() -> None:
    points = [Point("hum", 0), Point("temp", 1, "int16"), Point("co2", 2)]
    blocks = plan_reads(points)
    assert _addresses(blocks) == [("holding", 0, 3)]
    assert blocks[0].decode([655, 0xFFF6, 800]) == {"hum": 655, "temp": -10, "co2": 800}
    assert blocks[0].describe() == "holding registers 0..2"


def test_gaps_split_reads_unless_allowed() -> None:
    points = [Point("v", 0, "float32"), Point("i", 6, "float32"), Point("p", 12, "float32"), Point("f", 70, "float32")]
    assert _addresses(plan_reads(points)) == [("holding", 0, 2), ("holding", 6, 2), ("holding", 12, 2),
                                              ("holding", 70, 2)]
    assert _addresses(plan_reads(points, max_gap=4)) == [("holding", 0, 14), ("holding", 70, 2)]
    assert _addresses(plan_reads(points, max_gap=100)) == [("holding", 0, 72)]


def test_functions_are_never_mixed_and_order_is_stable() -> None:
    points = [Point("b", 1, function="input"), Point("a", 0, function="holding"), Point("c", 0, function="input")]
    assert _addresses(plan_reads(points)) == [("holding", 0, 1), ("input", 0, 2)]


def test_a_read_holds_at_most_125_registers() -> None:
    points = [Point(f"r{i}", i) for i in range(300)]
    blocks = plan_reads(points)
    assert _addresses(blocks) == [("holding", 0, 125), ("holding", 125, 125), ("holding", 250, 50)]
    assert all(b.count <= MAX_READ_COUNT for b in blocks)
    # a 32-bit value is never split across two reads
    wide = [Point(f"f{i}", 2 * i, "float32") for i in range(70)]
    assert _addresses(plan_reads(wide)) == [("holding", 0, 124), ("holding", 124, 16)]


def test_plan_rejects_bad_limits() -> None:
    with pytest.raises(ValueError):
        plan_reads([Point("a", 0)], max_count=126)


# ---------------------------------------------------------------- RTU CRC and frames


def test_crc_of_the_textbook_frame() -> None:
    # read 10 holding registers from unit 1: 01 03 00 00 00 0A, CRC C5 CD (low byte first)
    frame = rtu_frame(1, bytes.fromhex("030000000a"))
    assert frame.hex(" ") == "01 03 00 00 00 0a c5 cd"
    assert crc16(frame[:-2]) == 0xCDC5
    assert crc16(frame) == 0  # a frame with its CRC checks to zero


def test_crc_agrees_with_pymodbus() -> None:
    rng = random.Random(1)
    for n in range(1, 60):
        data = bytes(rng.randrange(256) for _ in range(n))
        assert crc16(data).to_bytes(2, "little") == FramerRTU.compute_CRC(data).to_bytes(2, "big")


def test_diagnose_rtu_byte_by_byte() -> None:
    good = rtu_frame(3, bytes.fromhex("0304") + bytes.fromhex("02bc00e6"))
    assert diagnose_rtu(b"", 3, 3) == "no bytes received"
    assert diagnose_rtu(good[:3], 3, 3) == "incomplete frame of 3 bytes"
    assert diagnose_rtu(good[:7], 3, 3) == "incomplete frame: 7 of 9 bytes"
    corrupt = bytearray(good)
    corrupt[4] ^= 0x5A
    sent, computed = int.from_bytes(good[-2:], "little"), crc16(bytes(corrupt[:-2]))
    assert sent != computed
    assert diagnose_rtu(bytes(corrupt), 3, 3).startswith(f"bad CRC {sent:04x}, computed {computed:04x} (noise")
    assert diagnose_rtu(rtu_frame(4, good[1:-2]), 3, 3) == "answer from unit 4, expected unit 3"
    assert diagnose_rtu(rtu_frame(3, bytes.fromhex("0403020000")), 3, 3) == "unexpected function code 4 in answer"
    assert diagnose_rtu(rtu_frame(3, bytes.fromhex("8302")), 3, 3) == "unexpected frame"  # a valid exception frame


def test_diagnose_tcp_byte_by_byte() -> None:
    good = bytes.fromhex("0001 0000 0007 03 03 04 02bc 00e6")
    assert diagnose_tcp(good[:5], 3, 3) == "incomplete MBAP header of 5 bytes"
    assert diagnose_tcp(good[:2] + b"\xa5\xa5" + good[4:], 3, 3).startswith(
        "protocol id 42405 in the MBAP header, not 0: not a Modbus/TCP answer")
    assert diagnose_tcp(good[:6] + b"\x04" + good[7:], 3, 3) == "answer from unit 4, expected unit 3"
    assert diagnose_tcp(good[:10], 3, 3) == "incomplete frame: header announces 13 bytes, received 10"
    assert diagnose_tcp(good[:7] + b"\x10" + good[8:], 3, 3) == "unexpected function code 16 in answer"


def test_a_block_decodes_every_point_like_the_point_alone() -> None:
    """The block's precompiled decoding (one unpack per point from the block's bytes) agrees with
    each point's own decoding, for every type, both word orders and points with gaps between them."""
    rng = random.Random(7)
    points = [Point("a", 0, "uint16"), Point("b", 1, "int16", scale=0.1), Point("c", 2, "float32", word_order="little"),
              Point("d", 4, "uint32"), Point("e", 7, "int32", word_order="little", scale=0.01),
              Point("f", 9, "float32"), Point("g", 12, "uint16", scale=2, offset=-3)]
    (block,) = plan_reads(points, max_gap=3)
    for _ in range(200):
        registers = [rng.randrange(0x10000) for _ in range(block.count)]
        expected = {p.name: p.decode(registers[p.address - block.address : p.end - block.address]) for p in points}
        got = block.decode(registers)
        assert got.keys() == expected.keys()
        for name in got:  # NaN != NaN: compare their representations
            assert repr(got[name]) == repr(expected[name]), name
    with pytest.raises(ValueError, match="3 registers, expected 13"):
        block.decode([0] * 3)
