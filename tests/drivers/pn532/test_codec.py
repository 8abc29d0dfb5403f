"""The PN532 frame codec on plain bytes: known-good frames from the PN532 user manual, every fault, the splitter."""

from __future__ import annotations

import pytest

from edugate.drivers.pn532 import codec as codec
from edugate.drivers.pn532.codec import Frame, FrameError, FrameSplitter, ResponseError, Target

H = bytes.fromhex

# The GetFirmwareVersion exchange of the PN532 user manual (UM0701-02): command, ACK, answer (PN532 v1.6).
MANUAL_GET_FIRMWARE = H("00 00 FF 02 FE D4 02 2A 00")
MANUAL_ACK = H("00 00 FF 00 FF 00")
MANUAL_FIRMWARE_ANSWER = H("00 00 FF 06 FA D5 03 32 01 06 07 E8 00")
MANUAL_NACK = H("00 00 FF FF 00 00")
MANUAL_ERROR = H("00 00 FF 01 FF 7F 81 00")

UID4 = H("A1 B2 C3 D4")
UID7 = H("04 11 22 33 44 55 66")


# ---------------------------------------------------------------- building


def test_get_firmware_version_command_is_byte_exact() -> None:
    assert codec.command(codec.GET_FIRMWARE_VERSION) == MANUAL_GET_FIRMWARE


def test_sam_configuration_and_in_list_passive_target_commands() -> None:
    # SAMConfiguration normal mode, timeout 0x14, IRQ on: D4+14+01+14+01 = 0xFE -> DCS 02.
    assert codec.command(codec.SAM_CONFIGURATION, H("01 14 01")) == H("00 00 FF 05 FB D4 14 01 14 01 02 00")
    # InListPassiveTarget MaxTg=1 BrTy=00: D4+4A+01+00 = 0x11F -> DCS E1.
    assert codec.command(codec.IN_LIST_PASSIVE_TARGET, H("01 00")) == H("00 00 FF 04 FC D4 4A 01 00 E1 00")
    # RFConfiguration MaxRetries FF 01 02: D4+32+05+FF+01+02 = 0x20D -> DCS F3.
    assert codec.command(codec.RF_CONFIGURATION, H("05 FF 01 02")) == H("00 00 FF 06 FA D4 32 05 FF 01 02 F3 00")


def test_response_frames_are_byte_exact() -> None:
    assert codec.response(codec.GET_FIRMWARE_VERSION, H("32 01 06 07")) == MANUAL_FIRMWARE_ANSWER
    assert codec.response(codec.SAM_CONFIGURATION) == H("00 00 FF 02 FE D5 15 16 00")
    assert codec.response(codec.IN_LIST_PASSIVE_TARGET, H("00")) == H("00 00 FF 03 FD D5 4B 00 E0 00")
    # One MIFARE Classic 1K: NbTg 1, Tg 1, SENS_RES 00 04, SEL_RES 08, NFCID length 4, NFCID1.
    # LEN = 2 + 10 = 0x0C, LCS F4; D5+4B+01+01+00+04+08+04 = 0x132, +A1+B2+C3+D4 = 0x41C -> DCS E4.
    assert codec.response(codec.IN_LIST_PASSIVE_TARGET, H("01 01 00 04 08 04") + UID4) == H(
        "00 00 FF 0C F4 D5 4B 01 01 00 04 08 04 A1 B2 C3 D4 E4 00")


def test_extended_frame_round_trip_and_size_limit() -> None:
    data = bytes([0x40]) + bytes(range(256)) + bytes(3)  # 260 bytes of PD: does not fit a normal frame
    raw = codec.build_frame(codec.HOST_TO_PN532, data)
    assert raw[:8] == H("00 00 FF FF FF 01 05") + bytes([(-0x106) & 0xFF])
    frame = codec.parse_frame(raw)
    assert (frame.kind, frame.tfi, frame.data) == ("info", codec.HOST_TO_PN532, data)
    normal = codec.build_frame(codec.PN532_TO_HOST, bytes(254))  # LEN 255: the largest normal frame
    assert normal[3:5] == H("FF 01")
    assert codec.parse_frame(normal).data == bytes(254)
    with pytest.raises(ValueError, match="frame too long: 265 bytes"):
        codec.build_frame(codec.HOST_TO_PN532, bytes(264))


# ---------------------------------------------------------------- parsing good frames


def test_parse_manual_frames() -> None:
    assert codec.parse_frame(MANUAL_ACK) == Frame("ack")
    assert codec.parse_frame(MANUAL_NACK) == Frame("nack")
    assert codec.parse_frame(MANUAL_ERROR) == Frame("error", 0x7F)
    cmd = codec.parse_frame(MANUAL_GET_FIRMWARE)
    assert (cmd.kind, cmd.tfi, cmd.code, cmd.params) == ("info", 0xD4, 0x02, b"")
    answer = codec.parse_frame(MANUAL_FIRMWARE_ANSWER)
    assert (answer.kind, answer.tfi, answer.code, answer.params) == ("info", 0xD5, 0x03, H("32 01 06 07"))
    firmware = codec.parse_firmware(answer.params)
    assert (firmware.ic, firmware.version, firmware.revision, firmware.support) == (0x32, 1, 6, 7)
    assert str(firmware) == "PN532 firmware 1.6"


def test_preamble_is_optional_and_may_be_longer() -> None:
    assert codec.parse_frame(MANUAL_ACK[1:]) == Frame("ack")
    assert codec.parse_frame(b"\x00\x00" + MANUAL_FIRMWARE_ANSWER).params == H("32 01 06 07")


# ---------------------------------------------------------------- parsing bad frames


def _corrupt(raw: bytes, at: int, value: int) -> bytes:
    return raw[:at] + bytes([value]) + raw[at + 1:]


@pytest.mark.parametrize(("raw", "kind", "offset", "message"), [
    (_corrupt(MANUAL_FIRMWARE_ANSWER, 4, 0xFB), "bad_lcs", 4, "bad length checksum at byte 4: LEN 0x06 + LCS 0xFB"),
    (_corrupt(MANUAL_FIRMWARE_ANSWER, 11, 0xE9), "bad_dcs", 11, "bad data checksum at byte 11: TFI and 5 data bytes"),
    (MANUAL_FIRMWARE_ANSWER[:9], "truncated", 9, "truncated: 9 of 13 bytes (LEN 6)"),
    (MANUAL_FIRMWARE_ANSWER[:4], "truncated", 4, "inside the length field"),
    (MANUAL_ACK[:5], "truncated", 5, "truncated ACK: no postamble"),
    (_corrupt(MANUAL_FIRMWARE_ANSWER, 12, 0x55), "bad_postamble", 12, "postamble at byte 12 is 0x55, not 00"),
    (MANUAL_FIRMWARE_ANSWER + b"\x00\x00", "trailing", 13, "2 bytes after the postamble at byte 12"),
    (H("00 01 FF 00 FF 00"), "no_start", 0, "no start code 00 FF at byte 0"),
    (b"", "no_start", 0, "frame of 0 bytes"),
    (H("00 00 FF 02 FE 42 00 BE 00"), "bad_tfi", 5, "unknown frame identifier (TFI) 0x42 at byte 5"),
    (H("00 00 FF 01 FF D5 2B 00"), "bad_tfi", 6, "without a command code"),
    (H("00 00 FF FF FF 01 05 FB") + bytes(3), "bad_lcs", 7, "LENM 0x01 + LENL 0x05 + LCS 0xFB"),
])
def test_parse_errors_name_the_fault_and_the_byte(raw: bytes, kind: str, offset: int, message: str) -> None:
    with pytest.raises(FrameError) as info:
        codec.parse_frame(raw)
    assert info.value.kind == kind
    assert info.value.offset == offset
    assert message in str(info.value)


def test_errors_and_reprs_never_show_card_bytes() -> None:
    good = codec.response(codec.IN_LIST_PASSIVE_TARGET, H("01 01 00 04 08 04") + UID4)
    bad_dcs = good[:-2] + bytes([good[-2] ^ 0xFF]) + good[-1:]
    with pytest.raises(FrameError) as info:
        codec.parse_frame(bad_dcs)
    frame = codec.parse_frame(good)
    texts = [str(info.value), repr(frame), repr(codec.parse_target_list(frame.params)[0])]
    for text in texts:
        for form in (UID4.hex(), UID4.hex().upper(), UID4.hex(" "), UID4.hex(":").upper(), "a1", "A1"):
            assert form not in text, text


# ---------------------------------------------------------------- the splitter


def test_splitter_cuts_a_stream_fed_byte_by_byte() -> None:
    stream = b"\x55\x55junk" + MANUAL_ACK + MANUAL_FIRMWARE_ANSWER + MANUAL_ERROR
    splitter = FrameSplitter()
    frames: list[bytes] = []
    for b in stream:
        splitter.feed(bytes([b]))
        while (raw := splitter.next()) is not None:
            frames.append(raw)
    assert frames == [MANUAL_ACK[1:], MANUAL_FIRMWARE_ANSWER[1:], MANUAL_ERROR[1:]]
    assert [codec.parse_frame(f).kind for f in frames] == ["ack", "info", "error"]
    assert splitter.junk == 6  # 55 55 j u n k; the zeros are preamble
    assert splitter.pending == 0


def test_splitter_reports_pending_and_expected_size_of_a_partial_frame() -> None:
    splitter = FrameSplitter()
    splitter.feed(MANUAL_FIRMWARE_ANSWER[:3])
    assert splitter.next() is None
    assert splitter.expected is None
    splitter.feed(MANUAL_FIRMWARE_ANSWER[3:7])
    assert splitter.next() is None
    assert (splitter.pending, splitter.expected) == (6, 12)  # from the start code: 00 FF 06 FA D5 03, of 12
    assert splitter.clear() == 6


def test_splitter_recovers_after_a_bad_length_checksum() -> None:
    splitter = FrameSplitter()
    bad = _corrupt(MANUAL_FIRMWARE_ANSWER, 4, 0x00)
    splitter.feed(bad + MANUAL_ACK)
    first = splitter.next()
    assert first == bad[1:5]
    with pytest.raises(FrameError, match="bad length checksum"):
        codec.parse_frame(first)
    assert splitter.next() == MANUAL_ACK[1:]  # the rest of the broken frame holds no start code: skipped


# ---------------------------------------------------------------- InListPassiveTarget answers


def test_no_target() -> None:
    assert codec.parse_target_list(H("00")) == []


def test_four_byte_uid() -> None:
    [target] = codec.parse_target_list(H("01 01 00 04 08 04") + UID4)
    assert target == Target(1, H("00 04"), 0x08, UID4)


def test_seven_byte_uid() -> None:
    [target] = codec.parse_target_list(H("01 01 00 44 00 07") + UID7)
    assert (target.sens_res, target.sel_res, target.uid, target.ats) == (H("00 44"), 0x00, UID7, b"")


def test_iso14443_4_card_with_ats_and_two_targets() -> None:
    ats = H("06 75 77 81 02 80")  # TL=6 (its own length), T0, TA, TB, TC, one historical byte
    params = H("02") + H("01 03 44 20 07") + UID7 + ats + H("02 00 04 08 04") + UID4
    first, second = codec.parse_target_list(params)
    assert (first.tg, first.sel_res, first.uid, first.ats) == (1, 0x20, UID7, ats)
    assert (second.tg, second.uid, second.ats) == (2, UID4, b"")


@pytest.mark.parametrize(("params", "message"), [
    (b"", "empty (no NbTg)"),
    (H("03"), "says 3 targets; the PN532 handles at most 2"),
    (H("01 01 00 04"), "answer ends at byte 4 inside the target header (needs bytes 1..5)"),
    (H("01 01 00 04 08 05") + UID4 + b"\x00", "NFCID length 5 at byte 5 (expected 4, 7 or 10)"),
    (H("01 01 00 44 00 07") + UID4, "answer ends at byte 10, 7-byte NFCID needs bytes 6..12"),
    (H("01 01 00 04 28 04") + UID4, "ISO 14443-4 card without a complete ATS at byte 10"),
    (H("01 01 00 04 08 04") + UID4 + b"\x90\x00", "2 unexpected bytes after byte 10"),
])
def test_bad_target_lists(params: bytes, message: str) -> None:
    with pytest.raises(ResponseError, match=message.replace("(", r"\(").replace(")", r"\)")):
        codec.parse_target_list(params)


def test_bad_firmware_answer() -> None:
    with pytest.raises(ResponseError, match="3 parameter bytes, expected 4"):
        codec.parse_firmware(H("32 01 06"))
