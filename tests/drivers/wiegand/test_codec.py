"""Wiegand decoding on plain edge lists: frames, parity, timing faults. No GPIO, no clock."""

from __future__ import annotations

import pytest

from edugate.drivers.wiegand.codec import (
    FRAME_GAP_NS,
    Edge,
    FrameAssembler,
    FrameResult,
    WiegandError,
    decode,
    encode,
    encode26,
)
from edugate.simulators.wiegand import frame_edges

MS = 1_000_000
US = 1_000


def bits_of(text: str) -> list[int]:
    return [int(c) for c in text.replace(" ", "")]


# ---------------------------------------------------------------- bits -> card


def test_a_hand_checked_26_bit_frame() -> None:
    # facility 1, card 1: data 00000001 00000000 00000001; first 12 data bits hold one 1 -> even parity 1;
    # last 12 hold one 1 -> odd parity 0.
    frame = bits_of("1 00000001 0000 0000 00000001 0")
    card = decode(frame)
    assert (card.bits, card.facility, card.number, card.uid) == (26, 1, 1, b"\x01\x00\x01")
    assert encode26(1, 1) == frame


@pytest.mark.parametrize(("facility", "number"), [(0, 0), (255, 65535), (123, 4567), (18, 40000)])
def test_26_bit_round_trip(facility: int, number: int) -> None:
    card = decode(encode26(facility, number))
    assert (card.facility, card.number) == (facility, number)
    assert card.uid == bytes([facility]) + number.to_bytes(2, "big")


@pytest.mark.parametrize("data", [0, 1, 0xDEADBEEF, 0xFFFFFFFF, 0x80000000])
def test_34_bit_round_trip(data: int) -> None:
    bits = encode(data, 34)
    assert len(bits) == 34
    assert bits[0] == sum(bits[1:17]) % 2  # even parity over the first 16 data bits
    assert (sum(bits[17:33]) + bits[33]) % 2 == 1  # odd over the last 16
    card = decode(bits)
    assert (card.bits, card.facility, card.number, card.uid) == (34, None, data, data.to_bytes(4, "big"))


@pytest.mark.parametrize(("flip", "which"), [(0, "leading even"), (5, "leading even"), (12, "leading even"),
                                             (13, "trailing odd"), (24, "trailing odd"), (25, "trailing odd")])
def test_any_single_flipped_bit_is_a_parity_error(flip: int, which: str) -> None:
    bits = encode26(77, 31337)
    bits[flip] ^= 1
    with pytest.raises(WiegandError, match=f"26-bit frame: the {which} parity bit") as info:
        decode(bits)
    assert info.value.reason == "parity"


@pytest.mark.parametrize("n", [0, 1, 25, 27, 33, 35, 64])
def test_wrong_bit_counts(n: int) -> None:
    with pytest.raises(WiegandError, match=f"^{n} bits; expected 26 or 34$") as info:
        decode([1] * n)
    assert info.value.reason == "bit_count"


def test_formats_limit_what_is_accepted() -> None:
    with pytest.raises(WiegandError, match="26 bits; expected 34"):
        decode(encode26(1, 2), formats=[34])


def test_errors_and_reprs_hide_the_card() -> None:
    card = decode(encode26(200, 54321))
    assert "54321" not in repr(card) and "200" not in repr(card) and repr(card).endswith("uid=<3 bytes>)")
    bits = encode26(200, 54321)
    bits[-1] ^= 1
    with pytest.raises(WiegandError) as info:
        decode(bits)
    assert "".join(map(str, bits)) not in str(info.value)


def test_encode_rejects_what_does_not_fit() -> None:
    with pytest.raises(ValueError, match="facility code"):
        encode26(256, 1)
    with pytest.raises(ValueError, match="cannot encode"):
        encode(1 << 32, 34)


# ---------------------------------------------------------------- edges -> frames


def run(edges: list[Edge], asm: FrameAssembler | None = None, *, end: bool = True) -> list[FrameResult]:
    asm = asm or FrameAssembler()
    out: list[FrameResult] = []
    for edge in sorted(edges, key=lambda e: e.t_ns):
        out += asm.feed(edge)
    if end and edges:
        out += asm.flush(max(e.t_ns for e in edges) + FRAME_GAP_NS + 1)
    return out


def test_frames_are_split_by_gaps_and_end_by_flush() -> None:
    a, b = encode26(1, 2), encode(0xCAFEF00D, 34)
    edges = frame_edges(a, 10 * MS) + frame_edges(b, 200 * MS)
    assert run(edges) == [a, b]
    asm = FrameAssembler()
    for edge in frame_edges(a, 0):
        assert asm.feed(edge) == []
    last = 25 * 2 * MS + 50 * US
    assert asm.deadline_ns == last + FRAME_GAP_NS
    assert asm.flush(last + FRAME_GAP_NS) == []  # not yet quiet long enough
    assert asm.flush(last + FRAME_GAP_NS + 1) == [a]
    assert not asm.pending and asm.deadline_ns is None


def test_falling_edges_alone_are_enough() -> None:
    bits = encode26(9, 999)
    assert run([e for e in frame_edges(bits, 0) if e.falling]) == [bits]


def test_slow_reader_within_the_gap_is_one_frame() -> None:
    bits = encode26(9, 999)
    assert run(frame_edges(bits, 0, interval_ns=20 * MS, pulse_ns=100 * US)) == [bits]


def only_error(results: list[FrameResult]) -> WiegandError:
    assert len(results) == 1 and isinstance(results[0], WiegandError), results
    return results[0]


def test_both_lines_at_once() -> None:
    bits = encode26(5, 5)
    edges = [*frame_edges(bits, 0), Edge(1 - bits[3], 3 * 2 * MS + 5 * US)]
    err = only_error(run(edges))
    assert err.reason == "both_lines" and "(after 4 bits)" in str(err)


def test_two_pulses_too_close_on_one_line() -> None:
    bits = encode26(5, 5)
    edges = [*frame_edges(bits, 0), Edge(bits[4], 4 * 2 * MS + 30 * US)]
    assert only_error(run(edges)).reason == "too_close"


def test_pulse_widths_are_checked_when_rising_edges_come() -> None:
    bits = encode26(5, 5)
    short = [*frame_edges(bits, 0), Edge(0, 7 * MS, True), Edge(0, 7 * MS + 2 * US, False)]
    err = only_error(run(short))
    assert err.reason == "pulse_short" and "a 2 µs pulse on D0" in str(err)
    long = frame_edges(bits, 0, pulse_ns=900 * US)
    assert only_error(run(long)).reason == "pulse_long"


def test_a_rising_edge_first_is_ignored() -> None:
    bits = encode26(5, 5)
    assert run([Edge(1, 0, falling=False), *frame_edges(bits, 1 * MS)]) == [bits]


def test_endless_noise_is_cut_off() -> None:
    err = only_error(run(frame_edges([1, 0] * 50, 0)))
    assert err.reason == "too_many_bits"


def test_a_bad_frame_does_not_spoil_the_next() -> None:
    good = encode26(3, 3)
    edges = frame_edges(good[:-1], 0) + frame_edges(good, 100 * MS)
    results = run(edges)
    assert decode_error(results[0]).reason == "bit_count"  # 25 bits: the assembler passes it, decode refuses
    assert results[1] == good


def decode_error(result: FrameResult) -> WiegandError:
    assert isinstance(result, list)
    with pytest.raises(WiegandError) as info:
        decode(result)
    return info.value


def test_lines_other_than_d0_d1_are_a_bug() -> None:
    with pytest.raises(ValueError, match="expected 0"):
        FrameAssembler().feed(Edge(2, 0))
