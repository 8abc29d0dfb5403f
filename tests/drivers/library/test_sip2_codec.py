"""SIP2 frames on plain bytes: checksums, every message we build or read, and every malformed field."""

from __future__ import annotations

import datetime as dt

import pytest

from edugate.drivers.library import sip2_codec as codec
from edugate.drivers.library.sip2_codec import SIP2ChecksumError, SIP2FormatError, checksum, encode, parse

WHEN = dt.datetime(2026, 11, 23, 9, 30, 5)
DATE = "20261123    093005"
PATRON = "P7654321"


def with_trailer(body: str, seq: int = 1) -> bytes:
    """A frame with AY/AZ computed independently of the codec (the spec's arithmetic, spelled out)."""
    data = f"{body}AY{seq}AZ".encode("cp850")
    total = 0
    for b in data:
        total = (total + b) & 0xFFFF
    return data + f"{(0x10000 - total) & 0xFFFF:04X}".encode() + b"\r"


def test_checksum_is_the_twos_complement_of_the_byte_sum() -> None:
    data = b"9300CNuser|COpass|AY0AZ"
    value = int(checksum(data), 16)
    assert (sum(data) + value) & 0xFFFF == 0
    assert checksum(b"") == "0000"
    assert checksum(b"\x01") == "FFFF"
    assert len(checksum(bytes(range(256)) * 10)) == 4


def test_sip_date_local_and_utc() -> None:
    assert codec.sip_date(WHEN) == DATE
    assert codec.sip_date(WHEN.replace(tzinfo=dt.UTC)) == "20261123   Z093005"


@pytest.mark.parametrize(("build", "expected"), [
    (lambda: codec.login("sc", "pw", "desk"), "9300CNsc|COpw|CPdesk|"),
    (lambda: codec.sc_status(), "9900802.00"),
    (lambda: codec.item_information("lib", "3011", when=WHEN), f"17{DATE}AOlib|AB3011|"),
    (lambda: codec.checkout("lib", PATRON, "3011", when=WHEN), f"11NN{DATE}{' ' * 18}AOlib|AA{PATRON}|AB3011|"),
    (lambda: codec.checkin("lib", "3011", "library", when=WHEN), f"09N{DATE}{DATE}APlibrary|AOlib|AB3011|"),
    (lambda: codec.patron_status("lib", PATRON, when=WHEN), f"23001{DATE}AOlib|AA{PATRON}|"),
])
def test_requests_match_the_spec_layout(build, expected: str) -> None:
    frame = encode(*build(), seq=3)
    assert frame == with_trailer(expected, 3)
    msg = parse(frame, require_checksum=True)
    assert msg.seq == 3 and msg.checksum == frame[-5:-1].decode()


def test_resend_requests_carry_a_checksum_but_no_sequence_number() -> None:
    assert encode("97") == b"97AZFEF5\r"  # the spec's own examples
    assert encode("96") == b"96AZFEF6\r"
    assert parse(b"97AZFEF5\r", require_checksum=True).code == "97"
    assert encode("96", error_detection=False) == b"96\r"


@pytest.mark.parametrize(("body", "check"), [
    ("941", lambda m: codec.SPECS[m.code].name == "login response" and m.fixed["ok"] == "1"),
    (f"98YYYYNN030003{DATE}2.00AOlib|AMSchool library|BXYYYYYYYYYYYYYYYY|",
     lambda m: codec.acs_status(m).online and codec.acs_status(m).library_name == "School library"),
    (f"18040201{DATE}ABitem1|AJTitle|AH2026-12-07|",
     lambda m: codec.item_info(m).charged and codec.item_info(m).due_date == "2026-12-07"),
    (f"120NNY{DATE}AOlib|AA{PATRON}|AB3011|AJTitle|AH|AFItem checked out to another patron|",
     lambda m: not codec.checkout_result(m).ok and "another" in codec.checkout_result(m).screen_message),
    (f"101YNN{DATE}AOlib|AB3011|AQlibrary|AJTitle|",
     lambda m: codec.checkin_result(m).ok and codec.checkin_result(m).resensitize),
    (f"24Y             001{DATE}AOlib|AA{PATRON}|AEName|BLY|",
     lambda m: codec.patron_status_result(m).valid and not codec.patron_status_result(m).can_borrow),
])
def test_responses_parse_into_typed_results(body: str, check) -> None:
    assert check(parse(with_trailer(body), require_checksum=True))


def test_unknown_item_and_repeated_screen_messages() -> None:
    msg = parse(with_trailer(f"18010101{DATE}ABnope|AJ|AFItem|AFnot found|"))
    info = codec.item_info(msg)
    assert not info.found and info.screen_message == "Item not found"


def test_character_sets() -> None:
    title = "Dế Mèn phiêu lưu ký"
    frame = encode("18", ["03", "02", "01", DATE], [("AB", "1"), ("AJ", title)], seq=0, charset="utf-8")
    assert codec.item_info(parse(frame, charset="utf-8")).title == title
    with pytest.raises(ValueError, match=r"item information response \(18\): character at position \d+ cannot be "
                                         "sent in cp850"):
        encode("18", ["03", "02", "01", DATE], [("AB", "1"), ("AJ", title)], seq=0, charset="cp850")
    latin = encode("18", ["03", "02", "01", DATE], [("AB", "1"), ("AJ", "Müller")], seq=0, charset="latin-1")
    with pytest.raises(SIP2FormatError, match=r"byte at position \d+ is not valid utf-8"):
        parse(latin, charset="utf-8")


# ---------------------------------------------------------------- every malformed field, with its place


def corrupt(frame: bytes, at: int, new: bytes) -> bytes:
    """Replace bytes at ``at`` and fix the checksum again (a server that sends nonsense, correctly summed)."""
    body = frame[:at] + new + frame[at + len(new):]
    head = body[:body.rindex(b"AZ") + 2]
    return head + checksum(head).encode() + b"\r"


@pytest.mark.parametrize(("frame", "message"), [
    (with_trailer(f"180402 01{DATE}ABx|"), r"item information response \(18\): fixed field 'fee type' at position "
                                           r"7: expected 2 digits, got ' 0'"),
    (with_trailer(f"12XNNY{DATE}AB1|"), r"checkout response \(12\): fixed field 'ok' at position 3: expected 0 or 1"),
    (with_trailer(f"101YNQ{DATE}AB1|"), r"checkin response \(10\): fixed field 'alert' at position 6: expected Y or N"),
    (with_trailer("120NN"), r"checkout response \(12\): fixed field 'desensitize' at position 6 is cut short"),
    (with_trailer("120NNY2026112X    093005AB1|"), r"fixed field 'transaction date' at position 7: expected a date"),
    (with_trailer(f"24Y    X        001{DATE}AA1|"), r"fixed field 'patron status' at position 3"),
    (with_trailer(f"101YNN{DATE}AB1|AJTitle"), r"checkin response \(10\): field AJ \(title identifier\) at position "
                                               r"29 has no '\|' after its 5 characters"),
    (with_trailer(f"101YNN{DATE}AB1|aj1|"), r"expected a field identifier \(two capital letters\) at position 29"),
    (with_trailer(f"101YNN{DATE}AJTitle|"), r"checkin response \(10\): required field AB \(item identifier\) is "
                                            "missing"),
    (with_trailer("55"), r"unknown command code at position 1"),
    (b"9", r"too short for a command code"),
])
def test_malformed_fields_name_message_field_and_position(frame: bytes, message: str) -> None:
    with pytest.raises(SIP2FormatError, match=message):
        parse(frame, require_checksum=True)


def test_checksum_and_trailer_errors() -> None:
    good = with_trailer(f"101YNN{DATE}AB1|")
    bad_sum = good[:-3] + (b"00" if good[-3:-1] != b"00" else b"11") + b"\r"
    with pytest.raises(SIP2ChecksumError, match=r"checkin response \(10\): field AZ \(checksum\) at position \d+: "
                                                "does not match"):
        parse(bad_sum)
    with pytest.raises(SIP2FormatError, match=r"field AZ \(checksum\) at position \d+: not 4 hex digits"):
        parse(good[:-5] + b"12G4\r")
    with pytest.raises(SIP2FormatError, match=r"no AY/AZ trailer at the end .* but error detection is on"):
        parse(f"101YNN{DATE}AB1|\r".encode(), require_checksum=True)
    assert parse(f"101YNN{DATE}AB1|\r".encode()).get("AB") == "1"  # without error detection it is fine
    with pytest.raises(SIP2FormatError, match=r"a control character \(CR or NUL\) at position 4"):
        parse(b"941\x00AY1AZ0000\r")
    with pytest.raises(SIP2FormatError, match=r"expected checkout response \(12\), got login response \(94\)"):
        parse(with_trailer("941"), expect="12")


def test_errors_never_show_patron_barcodes() -> None:
    frames = [with_trailer(f"24              001{DATE}AA{PATRON}"),
              corrupt(with_trailer(f"24              001{DATE}AA{PATRON}|"), 3, b"X"),
              with_trailer(f"120NNY{DATE}AA{PATRON}|AB")]
    for frame in frames:
        with pytest.raises(SIP2FormatError) as info:
            parse(frame)
        assert PATRON not in str(info.value)
    msg = parse(with_trailer(f"24              001{DATE}AA{PATRON}|"))
    assert PATRON not in repr(msg)
    with pytest.raises(ValueError, match=r"checkout \(11\): field AA \(patron identifier\) contains '\|'") as info:
        encode(*codec.checkout("lib", "P1|2", "3011"), seq=1)
    assert "P1|2" not in str(info.value)
