"""Every parser that takes bytes or text from outside, as a fuzz target: a function of one ``bytes`` input, the
parser's own clear error types, and seed inputs (valid messages the mutations start from).

Used by the property tests (``tests/fuzz/test_parsers.py``) and by the longer campaign (``scripts/fuzz.py``).
A target *passes* an input when the parser returns, or raises one of its ``clear`` errors with a non-empty
message; any other exception is a finding. Parsers that report problems as values (a bad frame, a bad
sentence, a skipped record) must give them a non-empty message too.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cache, partial
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

REPO = Path(__file__).resolve().parents[2]


class Unclear(AssertionError):
    """A parser rejected input (or reported a problem) without saying what is wrong."""


@dataclass(frozen=True)
class Target:
    name: str
    run: Callable[[bytes], object]
    clear: tuple[type[BaseException], ...]
    seeds: Sequence[bytes] = field(default_factory=tuple)

    def check(self, data: bytes) -> str:
        """Run one input: ``"ok"`` or ``"rejected"``; any other exception propagates (a finding)."""
        try:
            self.run(data)
        except self.clear as exc:
            if not str(exc).strip():
                raise Unclear(f"{self.name}: {type(exc).__name__} without a message") from exc
            return "rejected"
        return "ok"


def _each(clear: tuple[type[BaseException], ...], *calls: Callable[[], object]) -> None:
    """Run every call; each may raise one of ``clear`` (with a message), nothing else."""
    for call in calls:
        try:
            call()
        except clear as exc:
            _said(exc)


def _said(*messages: object) -> None:
    for message in messages:
        if not str(message).strip():
            raise Unclear(f"a problem reported without a message: {message!r}")


# ---------------------------------------------------------------------- config loader


def _config(data: bytes) -> None:
    from edugate.gateway.config import parse_config

    parse_config(data.decode("utf-8", "replace"), "fuzz.yaml")


def _config_seeds() -> list[bytes]:
    seeds = [b"school: s1\ngateway: gw-1\n"]
    for sample in sorted((REPO / "drivers").glob("*/sample.yaml"))[:8]:
        seeds.append(sample.read_bytes())
    return seeds


# ---------------------------------------------------------------------- command envelope


@cache
def _command_key() -> Any:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    return Ed25519PrivateKey.from_private_bytes(bytes(range(32)))


def _envelope(data: bytes) -> None:
    from edugate.contract.commands import check_shape, check_signature, decode_envelope

    obj = decode_envelope(data)
    check_shape(obj)
    check_signature(obj, {"central": _command_key().public_key()})


def _envelope_seeds() -> list[bytes]:
    from edugate.contract.commands import sign_command

    signed = sign_command(_command_key(), school="s1", gateway="gw-1", name="reload", args={"x": 1},
                          issued_at_ms=1_700_000_000_000, command_id="c-1")
    return [json.dumps(signed).encode(), json.dumps(signed | {"sig": base64.b64encode(b"\0" * 64).decode()}).encode()]


# ---------------------------------------------------------------------- device codecs


def _modbus(data: bytes) -> None:
    from edugate.drivers.modbus.codec import WIDTH, decode_words, diagnose_rtu, diagnose_tcp

    _said(diagnose_rtu(data, 1, 3), diagnose_tcp(data, 1, 4))
    words = [int.from_bytes(data[i:i + 2], "big") for i in range(0, len(data) - 1, 2)]
    for type_, width in WIDTH.items():
        if len(words) >= width:
            decode_words(words[:width], type_, "little" if data[0] & 1 else "big")


def _modbus_seeds() -> list[bytes]:
    from edugate.drivers.modbus.codec import rtu_frame

    return [rtu_frame(1, b"\x03\x04\x00\x2a\x01\x00"), rtu_frame(1, b"\x83\x02"),
            bytes.fromhex("000100000007010304002a0100")]


def _em4100(data: bytes) -> None:
    from edugate.drivers.em4100.driver import BadFrame, EM4100Decoder

    decoder = EM4100Decoder()
    out = decoder.feed(data) + decoder.flush(1.0)
    details = [f.detail for f in out if isinstance(f, BadFrame)]
    _said(*details)
    # privacy: a problem says lengths and positions, never the card's characters
    for detail in details:
        for run in re.findall(r"[0-9A-Fa-f]{8,}", detail):
            if run[:8].encode() in data:
                raise Unclear(f"em4100: a bad-frame message shows card characters: {detail!r}")


def _pn532(data: bytes) -> None:
    from edugate.drivers.pn532.codec import (
        FrameError,
        FrameSplitter,
        ResponseError,
        parse_firmware,
        parse_frame,
        parse_target_list,
    )

    splitter = FrameSplitter()
    splitter.feed(data)
    frames = []
    for _ in range(64):
        raw = splitter.next()
        if raw is None:
            break
        frames.append(raw)
    errors = (FrameError, ResponseError)
    for raw in [data, *frames]:
        try:
            frame = parse_frame(raw)
        except errors as exc:
            _said(exc)
            continue
        _each(errors, partial(parse_firmware, frame.params), partial(parse_target_list, frame.params))


def _pn532_seeds() -> list[bytes]:
    from edugate.drivers.pn532.codec import response

    return [response(0x03, b"\x32\x01\x06\x07"), response(0x4B, b"\x01\x01\x00\x04\x08\x04\x11\x22\x33\x44"),
            bytes.fromhex("0000ff00ff00")]


def _wiegand_bits(data: bytes) -> None:
    from edugate.drivers.wiegand.codec import decode

    decode([b & 1 for b in data])


def _wiegand_edges(data: bytes) -> None:
    from edugate.drivers.wiegand.codec import Edge, FrameAssembler

    assembler = FrameAssembler()
    t = 0
    results = []
    for b in data:
        t += (b >> 2) * 40_000  # 0 .. 2.5 ms between edges: bursts, pulses too short or too long, frame gaps
        results += assembler.feed(Edge(line=b & 1, t_ns=t, falling=not b & 2))
    results += assembler.flush(t + 10**9)
    for result in results:
        if isinstance(result, ValueError):
            _said(result)


def _wiegand_seeds() -> list[bytes]:
    from edugate.drivers.wiegand.codec import encode26

    bits = encode26(12, 3456)
    return [bytes(bits), bytes(0x80 | (b & 1) for b in bits)]


def _sip2(data: bytes) -> None:
    from edugate.drivers.library.sip2_codec import SIP2FormatError, parse

    _each((SIP2FormatError,), lambda: parse(data), lambda: parse(data, require_checksum=True))


def _sip2_seeds() -> list[bytes]:
    from edugate.drivers.library.sip2_codec import encode, login, sc_status

    return [encode(*sc_status(), seq=1).rstrip(b"\r"), encode(*login("user", "secret"), seq=2),
            b"98YYYNYN01000320260101    0800002.00AOinst|AMlibrary|BXYYYYYYYYYYYYYYYY|AY1AZE5D2\r",
            b"18030001AB20260101    120000AB1234|AJTitle|AY2AZF000\r"]


def _nmea(data: bytes) -> None:
    from edugate.drivers.gps_nmea.driver import BadSentence, GpsState, NmeaParser

    state = GpsState()
    for item in NmeaParser().feed(data + b"\n"):
        if isinstance(item, BadSentence):
            _said(item)
        else:  # update's clear error is ValueError (the driver counts it as a parse_error)
            _each((ValueError,), partial(state.update, item, 1.0))
    state.values()


def _nmea_seeds() -> list[bytes]:
    return [b"$GPRMC,123519,A,4807.038,N,01131.000,E,022.4,084.4,230394,003.1,W*6A\r\n",
            b"$GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,*47\r\n",
            b"$GPVTG,054.7,T,034.4,M,005.5,N,010.2,K*48\r\n"]


def _ble(data: bytes) -> None:
    from edugate.drivers.ble.codec import BadAdvert, decode_atc

    _each((BadAdvert,), *(lambda e=expected: decode_atc(data, "a4:c1:38:01:02:03", e)
                          for expected in ("auto", "atc1441", "pvvx")))


def _ble_seeds() -> list[bytes]:
    mac = bytes.fromhex("a4c138010203")
    return [mac + b"\x00\xe1\x32\x55\x0b\xb8\x07", mac[::-1] + b"\x34\x08\x88\x13\xb8\x0b\x55\x07\x04"]


def _pjlink(data: bytes) -> None:
    from edugate.drivers.pjlink import codec

    failures: list[BaseException] = []
    for parse in (codec.parse_greeting, codec.parse_response, codec.parse_notification):
        try:
            response = parse(data)
        except codec.PJLinkProtocolError as exc:
            failures.append(exc)
            continue
        if isinstance(response, codec.Response):
            for param_parser in (codec.parse_power, codec.parse_input, codec.parse_mute, codec.parse_errors,
                                 codec.parse_lamps):
                try:
                    param_parser(response.param)
                except codec.PJLinkProtocolError as exc:
                    failures.append(exc)
            try:
                codec.parse_hours(response.body, response.param)
            except codec.PJLinkProtocolError as exc:
                failures.append(exc)
    _said(*failures)


def _pjlink_seeds() -> list[bytes]:
    return [b"PJLINK 0\r", b"PJLINK 1 498e4a67\r", b"%1POWR=1\r", b"%2INPT=31\r", b"%1LAMP=1234 1 567 0\r",
            b"%1ERST=000100\r", b"%1AVMT=31\r", b"%1POWR=ERR3\r"]


# ---------------------------------------------------------------------- what central ingests


def _ingest(data: bytes) -> None:
    from edugate.central.ingest.lineproto import LineEncoder
    from edugate.contract.topics import Topic

    encoder = LineEncoder()
    for kind in ("telemetry", "event"):
        converted = encoder.convert(data, Topic("s1", "gw-1", kind), 1_700_000_000_000)
        _said(*converted.problems)


def _ingest_seeds() -> list[bytes]:
    record = {"v": 1, "seq": 7, "ts": 1_700_000_000_000, "synced": True, "school": "s1", "gateway": "gw-1",
              "device": "door", "room": "a1", "values": {"temperature": 21.5, "ok": True, "label": "x"}}
    event = record | {"type": "card_tap", "data": {"reader": "door", "decision": "allow"}}
    return [json.dumps([record]).encode(), json.dumps([event, record]).encode(), b"[]"]


def _topic(data: bytes) -> None:
    from edugate.contract.topics import InvalidTopic, parse_topic

    try:
        parse_topic(data.decode("utf-8", "replace"))
    except InvalidTopic as exc:
        _said(exc)


@cache
def targets() -> dict[str, Target]:
    """Name -> target (the imports happen here, once)."""
    from edugate.common.yamlconfig import ConfigError
    from edugate.contract.commands import CommandRejected
    from edugate.drivers.wiegand.codec import WiegandError

    found = [
        Target("config", _config, (ConfigError,), _config_seeds()),
        Target("command-envelope", _envelope, (CommandRejected,), _envelope_seeds()),
        Target("modbus", _modbus, (), _modbus_seeds()),
        Target("em4100", _em4100, (), [b"\x020800A1B2C3D4E5\x03", b"\x0201234\x03\r\n\x02"]),
        Target("pn532", _pn532, (), _pn532_seeds()),
        Target("wiegand-bits", _wiegand_bits, (WiegandError,), _wiegand_seeds()),
        Target("wiegand-edges", _wiegand_edges, (), _wiegand_seeds()),
        Target("sip2", _sip2, (), _sip2_seeds()),
        Target("nmea", _nmea, (), _nmea_seeds()),
        Target("ble-atc", _ble, (), _ble_seeds()),
        Target("pjlink", _pjlink, (), _pjlink_seeds()),
        Target("ingest-payload", _ingest, (), _ingest_seeds()),
        Target("ingest-topic", _topic, (), [b"edu/v1/s1/gw-1/telemetry", b"edu/v1/s1/gw-1/cmd/x"]),
    ]
    return {t.name: t for t in found}


# ---------------------------------------------------------------------- inputs


@st.composite
def _mutated(draw: st.DrawFn, seeds: Sequence[bytes]) -> bytes:
    """A seed with a few random edits: flip, insert, delete, duplicate a slice, cut."""
    data = bytearray(draw(st.sampled_from(list(seeds))))
    for _ in range(draw(st.integers(1, 8))):
        op = draw(st.integers(0, 5))
        at = draw(st.integers(0, len(data)))
        if op == 0 and data and at < len(data):
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif op == 1:
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif op == 2 and data:
            del data[at:at + draw(st.integers(1, 8))]
        elif op == 3 and data:
            end = min(len(data), at + draw(st.integers(1, 16)))
            data[at:at] = data[at:end] * draw(st.integers(1, 40))
        elif op == 4:
            data = data[:at]
        elif op == 5 and at < len(data):
            data[at] = draw(st.sampled_from([0, 0x7F, 0x80, 0xFF, ord("$"), ord("|"), ord(","), ord("*"), 0x0D,
                                             ord('"'), ord("{"), ord("["), ord("-"), ord("9"), ord(":")]))
    return bytes(data)


def inputs(target: Target) -> st.SearchStrategy[bytes]:
    """Random bytes, or mutations of the target's seeds (which reach deeper into the parser)."""
    random_bytes = st.binary(max_size=512)
    return st.one_of(random_bytes, _mutated(target.seeds)) if target.seeds else random_bytes
