"""The PJLink protocol (JBMIA PJLink class 1 and class 2) as pure functions: bytes in, values out, no I/O.

A PJLink device listens on TCP port 4352. On connect it greets with ``PJLINK 0\\r`` (no password) or
``PJLINK 1 <8 random chars>\\r`` (password set); the controller then prefixes its first command with
``md5(random + password)`` as 32 lower-case hex digits. A wrong password gets ``PJLINK ERRA\\r`` and the
device closes the connection. A command is ``%<class><BODY> <param>\\r`` (``?`` asks for the value), an
answer ``%<class><BODY>=<param>\\r``, where the parameter may be ``OK`` or one of the errors ``ERR1``
(undefined command) .. ``ERR4`` (device failure). Class 2 devices also send status notifications
(``%2POWR=1\\r``, ``%2ERST=...``, ``%2INPT=..``, ``%2LKUP=<MAC>``) as UDP datagrams to port 4352 of the
controller that last connected.

Every problem raises :class:`PJLinkProtocolError` (or :class:`PJLinkAuthError`) with what was wrong and
never echoes more than a short, printable excerpt of the bytes.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Final

DEFAULT_PORT: Final = 4352
MAX_LINE: Final = 512
"""Longer than any PJLink line (the spec caps a class 2 answer at 136 bytes with its terminator): garbage."""

POWER_STATES: Final = {0: "off", 1: "on", 2: "cooling", 3: "warm-up"}
SOURCES: Final = {"1": "RGB", "2": "VIDEO", "3": "DIGITAL", "4": "STORAGE", "5": "NETWORK", "6": "INTERNAL"}
ERRORS: Final = {"ERR1": "undefined command", "ERR2": "out of parameter", "ERR3": "unavailable time",
                 "ERR4": "projector/display failure", "ERRA": "authorization error"}
ERST_PARTS: Final = ("fan", "lamp", "temperature", "cover", "filter", "other")
NOTIFICATIONS: Final = frozenset({"LKUP", "ERST", "POWR", "INPT"})

_BODY = re.compile(r"^[A-Z0-9]{4}$")
_RESPONSE = re.compile(rb"^%([12])([A-Za-z0-9]{4})=([^\r]*)$")
_INPUT = re.compile(r"^[1-6][1-9A-Z]$")


class PJLinkProtocolError(ValueError):
    """Bytes that are not PJLink (a garbled or truncated line, an answer to another command)."""


class PJLinkAuthError(PJLinkProtocolError):
    """The device refused the password (``PJLINK ERRA``), or wants one and none is configured."""


class PJLinkCommandError(Exception):
    """The device answered ``ERR1``..``ERR4`` to a command. ``code`` is the error, ``body`` the command."""

    def __init__(self, body: str, code: str) -> None:
        super().__init__(f"{body}: {code} ({ERRORS.get(code, 'unknown error')})")
        self.body = body
        self.code = code


def excerpt(data: bytes, limit: int = 24) -> str:
    """A short, printable excerpt of bytes for an error message."""
    text = data[:limit].decode("ascii", "backslashreplace").replace("\r", "\\r").replace("\n", "\\n")
    return repr(text + ("..." if len(data) > limit else ""))


@dataclass(frozen=True)
class Greeting:
    auth: bool
    salt: str | None = None


@dataclass(frozen=True)
class Response:
    cls: int
    body: str
    param: str

    @property
    def error(self) -> str | None:
        """``ERR1``..``ERR4``/``ERRA`` when the device said no, else None."""
        return self.param if self.param in ERRORS else None


def parse_greeting(line: bytes) -> Greeting:
    """The line a device sends on connect (without or with its ``\\r``)."""
    text = line.rstrip(b"\r")
    if text == b"PJLINK 0":
        return Greeting(False)
    if text == b"PJLINK ERRA":
        raise PJLinkAuthError("the device refused the connection (PJLINK ERRA)")
    m = re.fullmatch(rb"PJLINK 1 ([\x21-\x7e]{8})", text)
    if m is None:
        raise PJLinkProtocolError(f"not a PJLink greeting: {excerpt(line)} (expected 'PJLINK 0' or 'PJLINK 1 <salt>')")
    return Greeting(True, m.group(1).decode("ascii"))


def auth_digest(salt: str, password: str) -> str:
    """The 32 hex digits a controller sends before its first command: md5(salt + password)."""
    if len(password.encode()) > 32:
        raise ValueError("a PJLink password has at most 32 bytes")
    return hashlib.md5((salt + password).encode(), usedforsecurity=False).hexdigest()


def encode_command(body: str, param: str = "?", cls: int = 1) -> bytes:
    """``%1POWR ?\\r`` and the like. ``param`` is ``?`` for a query, else the value to set."""
    if cls not in (1, 2):
        raise ValueError(f"PJLink class {cls}: only 1 and 2 exist")
    if not _BODY.match(body):
        raise ValueError(f"PJLink command {body!r}: four upper-case letters or digits, e.g. POWR")
    raw = param.encode()
    if len(raw) > 128 or b"\r" in raw or b"\n" in raw:
        raise ValueError(f"PJLink parameter of {body}: at most 128 bytes, no line breaks")
    return b"%" + str(cls).encode() + body.encode() + b" " + raw + b"\r"


def parse_response(line: bytes, expect: str | None = None) -> Response:
    """An answer line (with or without its ``\\r``); ``expect``: the command it must answer."""
    text = line.rstrip(b"\r")
    if text == b"PJLINK ERRA":
        raise PJLinkAuthError("wrong PJLink password (the device answered PJLINK ERRA)")
    m = _RESPONSE.match(text)
    if m is None:
        raise PJLinkProtocolError(f"garbled PJLink answer {excerpt(line)} (expected '%1BODY=value')")
    body = m.group(2).decode("ascii").upper()
    if expect is not None and body != expect:
        raise PJLinkProtocolError(f"answer to {body} where {expect} was asked: {excerpt(line)}")
    try:
        param = m.group(3).decode("utf-8")
    except UnicodeDecodeError:
        raise PJLinkProtocolError(f"{body}: the answer is not UTF-8: {excerpt(line)}") from None
    return Response(int(m.group(1)), body, param)


def parse_notification(datagram: bytes) -> Response:
    """A class 2 status notification (UDP): one ``%2BODY=value\\r`` line of LKUP, ERST, POWR or INPT."""
    if not datagram.endswith(b"\r"):
        raise PJLinkProtocolError(f"a PJLink notification ends with \\r: {excerpt(datagram)}")
    response = parse_response(datagram)
    if response.cls != 2 or response.body not in NOTIFICATIONS:
        raise PJLinkProtocolError(f"not a class 2 status notification: {excerpt(datagram)}")
    return response


def parse_power(param: str) -> int:
    if param not in ("0", "1", "2", "3"):
        raise PJLinkProtocolError(f"POWR: {param!r} is not a power state (0 off, 1 on, 2 cooling, 3 warm-up)")
    return int(param)


def parse_input(param: str) -> str:
    if not _INPUT.match(param):
        raise PJLinkProtocolError(f"INPT: {param!r} is not an input (two characters, e.g. 31 for DIGITAL 1)")
    return param


def input_name(code: str) -> str:
    """``31`` -> ``DIGITAL 1``."""
    return f"{SOURCES.get(code[0], '?')} {code[1]}"


def parse_mute(param: str) -> tuple[bool, bool]:
    """AVMT -> (video muted, audio muted)."""
    table = {"11": (True, False), "21": (False, True), "31": (True, True), "10": (False, False),
             "20": (False, False), "30": (False, False)}
    if param not in table:
        raise PJLinkProtocolError(f"AVMT: {param!r} is not a mute state (e.g. 30 for none, 31 for both)")
    return table[param]


def parse_errors(param: str) -> dict[str, int]:
    """ERST -> {fan, lamp, temperature, cover, filter, other}: 0 ok, 1 warning, 2 error."""
    if len(param) != 6 or any(c not in "012" for c in param):
        raise PJLinkProtocolError(f"ERST: {param!r} is not six digits 0/1/2 (fan lamp temperature cover filter other)")
    return {name: int(c) for name, c in zip(ERST_PARTS, param, strict=True)}


def parse_lamps(param: str) -> list[tuple[int, bool]]:
    """LAMP -> [(hours, on), ...] for up to eight lamps."""
    parts = param.split(" ")
    if not parts or len(parts) % 2 or len(parts) > 16:
        raise PJLinkProtocolError(f"LAMP: {param!r} is not pairs of hours and on/off")
    lamps = []
    for hours, on in zip(parts[::2], parts[1::2], strict=True):
        if not hours.isdigit() or len(hours) > 5 or on not in ("0", "1"):
            raise PJLinkProtocolError(f"LAMP: {param!r} is not pairs of hours (0-99999) and 0/1")
        lamps.append((int(hours), on == "1"))
    return lamps


def parse_hours(body: str, param: str) -> int:
    """FILT (class 2): hours of use of the filter."""
    if not param.isdigit() or len(param) > 5:
        raise PJLinkProtocolError(f"{body}: {param!r} is not a number of hours (0-99999)")
    return int(param)
