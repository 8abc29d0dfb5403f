"""The PJLink codec byte by byte: greetings, the MD5 digest, commands, answers, notifications, garbage."""

from __future__ import annotations

import hashlib

import pytest

from edugate.drivers.pjlink import codec
from edugate.drivers.pjlink.codec import PJLinkAuthError, PJLinkProtocolError, Response


def test_greetings() -> None:
    assert codec.parse_greeting(b"PJLINK 0\r") == codec.Greeting(False)
    assert codec.parse_greeting(b"PJLINK 1 498e4a67\r") == codec.Greeting(True, "498e4a67")
    with pytest.raises(PJLinkAuthError, match="PJLINK ERRA"):
        codec.parse_greeting(b"PJLINK ERRA\r")
    for bad in (b"PJLINK 1 498e4a6\r", b"PJLINK 2\r", b"HTTP/1.1 400\r", b"", b"PJLINK 1 498e4a67 x\r"):
        with pytest.raises(PJLinkProtocolError, match="not a PJLink greeting"):
            codec.parse_greeting(bad)


def test_digest_is_the_specs_example() -> None:
    # PJLink specification 1.04, §5.1: random number 498e4a67, password JBMIAProjectorLink
    assert codec.auth_digest("498e4a67", "JBMIAProjectorLink") == "5d8409bc1c3fa39749434aa3a5c38682"
    assert codec.auth_digest("00000000", "") == hashlib.md5(b"00000000").hexdigest()
    with pytest.raises(ValueError, match="at most 32 bytes"):
        codec.auth_digest("498e4a67", "x" * 33)


def test_commands_byte_by_byte() -> None:
    assert codec.encode_command("POWR") == b"%1POWR ?\r"
    assert codec.encode_command("POWR", "1") == b"\x25\x31\x50\x4f\x57\x52\x20\x31\x0d"
    assert codec.encode_command("INPT", "3A", cls=2) == b"%2INPT 3A\r"
    assert codec.encode_command("SNUM", cls=2) == b"%2SNUM ?\r"
    for body, param, cls, why in (("powr", "?", 1, "four upper-case"), ("POW", "?", 1, "four upper-case"),
                                  ("POWR", "1\r", 1, "no line breaks"), ("NAME", "x" * 129, 1, "at most 128"),
                                  ("POWR", "?", 3, "only 1 and 2")):
        with pytest.raises(ValueError, match=why):
            codec.encode_command(body, param, cls)


def test_answers() -> None:
    assert codec.parse_response(b"%1POWR=1\r") == Response(1, "POWR", "1")
    assert codec.parse_response(b"%1powr=OK\r", expect="POWR") == Response(1, "POWR", "OK")
    assert codec.parse_response(b"%1INF2=PJ-2000 WXGA\r").param == "PJ-2000 WXGA"
    assert codec.parse_response(b"%2NAME=Ph\xc3\xb2ng 101\r").param == "Phòng 101"
    assert codec.parse_response(b"%1NAME=\r").param == ""
    r = codec.parse_response(b"%1LAMP=ERR3\r")
    assert r.error == "ERR3" and codec.ERRORS[r.error] == "unavailable time"
    assert codec.parse_response(b"%1POWR=0\r").error is None
    with pytest.raises(PJLinkAuthError, match="wrong PJLink password"):
        codec.parse_response(b"PJLINK ERRA\r")
    with pytest.raises(PJLinkProtocolError, match="answer to INPT where POWR was asked"):
        codec.parse_response(b"%1INPT=31\r", expect="POWR")
    with pytest.raises(PJLinkProtocolError, match=r"garbled PJLink answer '%1P\\\\x8fWR"):
        codec.parse_response(b"%1P\x8fWR\xff=\x00\x13garbage\r")
    for bad in (b"%3POWR=1\r", b"%1POWR 1\r", b"1POWR=1\r", b"%1PO=1\r", b"%1POWR=1\r\n"):
        with pytest.raises(PJLinkProtocolError, match="garbled"):
            codec.parse_response(bad)
    with pytest.raises(PJLinkProtocolError, match="not UTF-8"):
        codec.parse_response(b"%1NAME=\xff\xfe\r")


def test_an_excerpt_is_short_and_printable() -> None:
    text = codec.excerpt(b"\x00" * 100 + b"\r")
    assert text.startswith("'\\x00") and text.endswith("...'") and len(text) < 110


def test_status_values() -> None:
    assert [codec.parse_power(p) for p in "0123"] == [0, 1, 2, 3]
    assert codec.parse_input("31") == "31" and codec.input_name("31") == "DIGITAL 1"
    assert codec.parse_input("3A") == "3A" and codec.input_name("52") == "NETWORK 2"
    assert codec.parse_mute("31") == (True, True) and codec.parse_mute("11") == (True, False)
    assert codec.parse_mute("21") == (False, True) and codec.parse_mute("30") == (False, False)
    assert codec.parse_errors("020001") == {"fan": 0, "lamp": 2, "temperature": 0, "cover": 0, "filter": 0,
                                            "other": 1}
    assert codec.parse_lamps("1200 1") == [(1200, True)]
    assert codec.parse_lamps("99999 0 12 1") == [(99999, False), (12, True)]
    assert codec.parse_hours("FILT", "310") == 310
    for fn, bad in ((codec.parse_power, "4"), (codec.parse_power, ""), (codec.parse_input, "71"),
                    (codec.parse_input, "3"), (codec.parse_mute, "12"), (codec.parse_errors, "00000"),
                    (codec.parse_errors, "000300"), (codec.parse_lamps, "1200"), (codec.parse_lamps, "12x 1"),
                    (codec.parse_lamps, "100000 1"), (codec.parse_lamps, "1 2")):
        with pytest.raises(PJLinkProtocolError):
            fn(bad)
    with pytest.raises(PJLinkProtocolError, match="FILT"):
        codec.parse_hours("FILT", "-1")


def test_class_2_notifications() -> None:
    assert codec.parse_notification(b"%2POWR=1\r") == Response(2, "POWR", "1")
    assert codec.parse_notification(b"%2LKUP=00:1A:2B:3C:4D:5E\r").body == "LKUP"
    assert codec.parse_notification(b"%2ERST=000020\r").param == "000020"
    with pytest.raises(PJLinkProtocolError, match="ends with"):
        codec.parse_notification(b"%2POWR=1")
    with pytest.raises(PJLinkProtocolError, match="not a class 2 status notification"):
        codec.parse_notification(b"%1POWR=1\r")
    with pytest.raises(PJLinkProtocolError, match="not a class 2 status notification"):
        codec.parse_notification(b"%2NAME=x\r")
