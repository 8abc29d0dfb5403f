"""SIP2 (3M Standard Interchange Protocol 2.00) messages: pure building and parsing, no I/O.

A SIP2 message is one line of text ended by a carriage return::

    <2-digit command> <fixed-width fields> <variable fields: 2-letter id, value, '|'> [AY<seq>AZ<checksum>] CR

e.g. ``1720261123    120000AOschool|AB30112000000017|AY2AZF3BB\\r`` (item information).
With error detection on, every message ends with ``AY`` (sequence number, one
digit 0-9, echoed by the answer) and ``AZ`` + 4 hex digits: the two's
complement of the 16-bit sum of every byte up to and including ``AZ``. Request
resend messages (``96``/``97``) carry ``AZ`` only.

:func:`encode` builds a frame, :func:`parse` checks one against its
:data:`SPECS` entry and returns a :class:`Message`; ``item_info`` and friends
turn responses into typed results. Every problem raises :class:`SIP2FormatError`
naming the message, the field and its position (1-based character index in
the frame). Values of variable fields (patron barcodes!) never appear in an
error message: only their length and position do.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

DELIM = "|"
CR = b"\r"
DATE_WIDTH = 18
MAX_FRAME = 4096
"""A frame longer than this without a carriage return is not SIP2."""

FIELD_NAMES: dict[str, str] = {
    "AA": "patron identifier", "AB": "item identifier", "AC": "terminal password", "AD": "patron password",
    "AE": "personal name", "AF": "screen message", "AG": "print line", "AH": "due date",
    "AJ": "title identifier", "AM": "library name", "AN": "terminal location", "AO": "institution id",
    "AP": "current location", "AQ": "permanent location", "AY": "sequence number", "AZ": "checksum",
    "BG": "owner", "BH": "currency type", "BI": "cancel", "BK": "transaction id", "BL": "valid patron",
    "BO": "fee acknowledged", "BT": "fee type", "BV": "fee amount", "BX": "supported messages",
    "CF": "hold queue length", "CH": "item properties", "CI": "security inhibit", "CJ": "recall date",
    "CK": "media type", "CL": "sort bin", "CM": "hold pickup date", "CN": "login user id",
    "CO": "login password", "CP": "location code", "CQ": "valid patron password",
}

Kind = Literal["any", "digits", "yn", "ynu", "01", "date", "date_or_blank", "patron_status"]
_KIND_TEXT = {"digits": "digits", "yn": "Y or N", "ynu": "Y, N or U", "01": "0 or 1", "patron_status": "Y or space"}


@dataclass(frozen=True, slots=True)
class FixedField:
    name: str
    width: int
    kind: Kind = "any"


@dataclass(frozen=True, slots=True)
class MessageSpec:
    code: str
    name: str
    fixed: tuple[FixedField, ...] = ()
    required: tuple[str, ...] = ()
    """Variable fields the gateway relies on; a message without one is rejected."""

    @property
    def title(self) -> str:
        return f"{self.name} ({self.code})"


def _date(name: str = "transaction date") -> FixedField:
    return FixedField(name, DATE_WIDTH, "date")


SPECS: dict[str, MessageSpec] = {s.code: s for s in (
    MessageSpec("93", "login", (FixedField("UID algorithm", 1), FixedField("PWD algorithm", 1)), ("CN", "CO")),
    MessageSpec("94", "login response", (FixedField("ok", 1, "01"),)),
    MessageSpec("99", "SC status", (FixedField("status code", 1, "digits"), FixedField("max print width", 3, "digits"),
                                    FixedField("protocol version", 4))),
    MessageSpec("98", "ACS status", (
        FixedField("on-line status", 1, "yn"), FixedField("checkin ok", 1, "yn"), FixedField("checkout ok", 1, "yn"),
        FixedField("ACS renewal policy", 1, "yn"), FixedField("status update ok", 1, "yn"),
        FixedField("off-line ok", 1, "yn"), FixedField("timeout period", 3, "digits"),
        FixedField("retries allowed", 3, "digits"), _date("date / time sync"), FixedField("protocol version", 4))),
    MessageSpec("17", "item information", (_date(),), ("AO", "AB")),
    MessageSpec("18", "item information response", (
        FixedField("circulation status", 2, "digits"), FixedField("security marker", 2, "digits"),
        FixedField("fee type", 2, "digits"), _date()), ("AB",)),
    MessageSpec("11", "checkout", (FixedField("SC renewal policy", 1, "yn"), FixedField("no block", 1, "yn"), _date(),
                                   FixedField("nb due date", DATE_WIDTH, "date_or_blank")), ("AO", "AA", "AB")),
    MessageSpec("12", "checkout response", (
        FixedField("ok", 1, "01"), FixedField("renewal ok", 1, "yn"), FixedField("magnetic media", 1, "ynu"),
        FixedField("desensitize", 1, "ynu"), _date()), ("AB",)),
    MessageSpec("09", "checkin", (FixedField("no block", 1, "yn"), _date(), _date("return date")), ("AP", "AO", "AB")),
    MessageSpec("10", "checkin response", (
        FixedField("ok", 1, "01"), FixedField("resensitize", 1, "yn"), FixedField("magnetic media", 1, "ynu"),
        FixedField("alert", 1, "yn"), _date()), ("AB",)),
    MessageSpec("23", "patron status", (FixedField("language", 3, "digits"), _date()), ("AO", "AA")),
    MessageSpec("24", "patron status response", (
        FixedField("patron status", 14, "patron_status"), FixedField("language", 3, "digits"), _date()), ("AA",)),
    MessageSpec("96", "request SC resend"),
    MessageSpec("97", "request ACS resend"),
)}

RESEND_CODES = frozenset({"96", "97"})
RESPONSE_TO = {"93": "94", "99": "98", "17": "18", "11": "12", "09": "10", "23": "24"}
"""Request code -> the code of its answer."""

CIRCULATION = {
    "01": "other", "02": "on order", "03": "available", "04": "charged",
    "05": "charged; not to be recalled until earliest recall date", "06": "in process", "07": "recalled",
    "08": "waiting on hold shelf", "09": "waiting to be re-shelved", "10": "in transit", "11": "claimed returned",
    "12": "lost", "13": "missing",
}
CHARGED = frozenset({"04", "05"})

_FIELD_ID = re.compile(rb"[A-Z][A-Z0-9]")


class SIP2FormatError(ValueError):
    """A malformed SIP2 message. The text names the message, the field and the position; never a value."""


class SIP2ChecksumError(SIP2FormatError):
    """A message whose AZ checksum does not match its bytes (line noise: ask for a resend)."""


# ---------------------------------------------------------------- checksum and dates


def checksum(data: bytes) -> str:
    """The AZ value for ``data`` (every byte up to and including ``AZ``): 4 upper-case hex digits."""
    return f"{-sum(data) & 0xFFFF:04X}"


def checksum_ok(data: bytes, value: str) -> bool:
    """True if ``value`` (4 hex digits) is the checksum of ``data``."""
    return (sum(data) + int(value, 16)) & 0xFFFF == 0


def sip_date(when: dt.datetime | None = None) -> str:
    """``YYYYMMDDZZZZHHMMSS``: local time with a blank zone, or UTC with zone ``   Z`` for aware datetimes."""
    if when is None:
        when = dt.datetime.now()
    if when.tzinfo is not None:
        when = when.astimezone(dt.UTC)
        return when.strftime("%Y%m%d") + "   Z" + when.strftime("%H%M%S")
    return when.strftime("%Y%m%d") + "    " + when.strftime("%H%M%S")


BLANK_DATE = " " * DATE_WIDTH


# ---------------------------------------------------------------- building


def encode(code: str, fixed: Sequence[str] = (), fields: Iterable[tuple[str, str | None]] = (), *,
           seq: int | None = None, error_detection: bool = True, charset: str = "cp850") -> bytes:
    """One frame. ``fields`` are (id, value) pairs; None values are left out. ``seq`` 0-9 adds AY (with
    ``error_detection``); 96/97 get AZ only. Raises ValueError naming the field for a value that cannot be sent."""
    spec = SPECS.get(code)
    title = spec.title if spec else f"message {code}"
    if spec is not None:
        if len(fixed) != len(spec.fixed):
            raise ValueError(f"{title}: {len(spec.fixed)} fixed fields expected, got {len(fixed)}")
        for f, text in zip(spec.fixed, fixed, strict=True):
            if len(text) != f.width:
                raise ValueError(f"{title}: fixed field {f.name!r} must be {f.width} characters, got {len(text)}")
    parts = [code, *fixed]
    for fid, value in fields:
        if value is None:
            continue
        if any(c in value for c in "|\r\n\x00"):
            raise ValueError(f"{title}: field {fid} ({FIELD_NAMES.get(fid, 'unknown')}) contains '|', a line "
                             "break or NUL, which SIP2 cannot carry")
        parts.append(f"{fid}{value}{DELIM}")
    text = "".join(parts)
    try:
        body = text.encode(charset)
    except UnicodeEncodeError as exc:
        raise ValueError(f"{title}: character at position {exc.start + 1} cannot be sent in {charset}") from None
    if not error_detection:
        return body + CR
    if code not in RESEND_CODES:
        if seq is None or not 0 <= seq <= 9:
            raise ValueError(f"{title}: a sequence number 0-9 is needed with error detection")
        body += f"AY{seq}".encode("ascii")
    body += b"AZ"
    return body + checksum(body).encode("ascii") + CR


# ---------------------------------------------------------------- parsing


@dataclass(frozen=True)
class Message:
    """One parsed frame. ``fields`` maps each variable field id to its values (in order; most appear once)."""

    code: str
    fixed: dict[str, str]
    fields: dict[str, list[str]] = field(repr=False)
    seq: int | None = None
    checksum: str | None = None

    @property
    def spec(self) -> MessageSpec:
        return SPECS[self.code]

    def get(self, fid: str, default: str = "") -> str:
        values = self.fields.get(fid)
        return values[0] if values else default

    def __repr__(self) -> str:  # field values may be patron barcodes: show only which fields there are
        return f"Message(code={self.code!r}, fields={sorted(self.fields)}, seq={self.seq})"


def parse(frame: bytes, *, charset: str = "cp850", require_checksum: bool = False,
          expect: str | Iterable[str] | None = None) -> Message:
    """Parse and check one frame (with or without its CR). Raises :class:`SIP2FormatError` (or
    :class:`SIP2ChecksumError`) naming the message, the field and the position of the first problem."""
    raw = frame[:-1] if frame.endswith(CR) else frame
    if len(raw) < 2:
        raise SIP2FormatError(f"message of {len(raw)} characters: too short for a command code")
    try:
        code = raw[:2].decode("ascii")
    except UnicodeDecodeError:
        code = "??"
    spec = SPECS.get(code)
    if spec is None:
        raise SIP2FormatError(f"unknown command code at position 1 (not one of {', '.join(sorted(SPECS))})")
    if expect is not None:
        wanted = {expect} if isinstance(expect, str) else set(expect)
        if code not in wanted:
            names = " or ".join(SPECS[c].title for c in sorted(wanted))
            raise SIP2FormatError(f"expected {names}, got {spec.title}")
    if b"\r" in raw or b"\x00" in raw:
        pos = min(i for i in (raw.find(b"\r"), raw.find(b"\x00")) if i >= 0)
        raise SIP2FormatError(f"{spec.title}: a control character (CR or NUL) at position {pos + 1}")
    raw, seq, check = _trailer(raw, spec, require_checksum)
    try:
        text = raw.decode(charset)
    except UnicodeDecodeError as exc:
        raise SIP2FormatError(f"{spec.title}: byte at position {exc.start + 1} is not valid {charset} "
                              "(is the SIP2 character set right?)") from None
    pos = 2
    fixed: dict[str, str] = {}
    for f in spec.fixed:
        value = text[pos:pos + f.width]
        if len(value) < f.width:
            raise SIP2FormatError(f"{spec.title}: fixed field {f.name!r} at position {pos + 1} is cut short "
                                  f"({len(value)} of {f.width} characters)")
        problem = _check_fixed(value, f.kind)
        if problem:
            raise SIP2FormatError(f"{spec.title}: fixed field {f.name!r} at position {pos + 1}: {problem}")
        fixed[f.name] = value
        pos += f.width
    fields = _variable_fields(text, pos, spec)
    for fid in spec.required:
        if fid not in fields:
            raise SIP2FormatError(f"{spec.title}: required field {fid} ({FIELD_NAMES.get(fid, '?')}) is missing")
    return Message(code, fixed, fields, seq, check)


def _trailer(raw: bytes, spec: MessageSpec, require: bool) -> tuple[bytes, int | None, str | None]:
    """Strip and check ``AY<n>AZ<hhhh>``; return (the rest, seq, checksum)."""
    at = len(raw) - 6
    if at >= 2 and raw[at:at + 2] == b"AZ":
        check_bytes = raw[at + 2:]
        if not all(c in b"0123456789ABCDEFabcdef" for c in check_bytes):
            raise SIP2FormatError(f"{spec.title}: field AZ (checksum) at position {at + 3}: not 4 hex digits")
        check = check_bytes.decode("ascii")
        if not checksum_ok(raw[:at + 2], check):
            raise SIP2ChecksumError(f"{spec.title}: field AZ (checksum) at position {at + 3}: does not match the "
                                    "message (corrupted on the way)")
        rest = raw[:at]
        seq = None
        if len(rest) >= 5 and rest[-3:-1] == b"AY":
            digit = rest[-1:]
            if not digit.isdigit():
                raise SIP2FormatError(f"{spec.title}: field AY (sequence number) at position {len(rest)}: "
                                      "not a digit")
            seq, rest = int(digit), rest[:-3]
        elif spec.code not in RESEND_CODES and require:
            raise SIP2FormatError(f"{spec.title}: field AY (sequence number) is missing before AZ")
        return rest, seq, check
    if require:
        raise SIP2FormatError(f"{spec.title}: no AY/AZ trailer at the end (position {len(raw) + 1}), but error "
                              "detection is on (turn it off if the ILS does not send checksums)")
    return raw, None, None


def _check_fixed(value: str, kind: Kind) -> str | None:
    if kind == "any":
        return None
    if kind == "digits":
        return None if value.isascii() and value.isdigit() else f"expected {len(value)} digits, got {value!r}"
    if kind in ("yn", "ynu", "01"):
        allowed = {"yn": "YN", "ynu": "YNU", "01": "01"}[kind]
        return None if value in allowed else f"expected {_KIND_TEXT[kind]}, got {value!r}"
    if kind == "patron_status":
        return None if set(value) <= {"Y", " "} else "expected 14 characters, each Y or space"
    if kind == "date_or_blank" and value == BLANK_DATE:
        return None
    if value[:8].isdigit() and value[12:].isdigit() and value.isascii():
        return None
    return "expected a date YYYYMMDDZZZZHHMMSS"


def _variable_fields(text: str, pos: int, spec: MessageSpec) -> dict[str, list[str]]:
    fields: dict[str, list[str]] = {}
    while pos < len(text):
        fid = text[pos:pos + 2]
        if len(fid) < 2 or not _FIELD_ID.fullmatch(fid.encode("ascii", "replace")):
            raise SIP2FormatError(f"{spec.title}: expected a field identifier (two capital letters) at position "
                                  f"{pos + 1}")
        end = text.find(DELIM, pos + 2)
        if end < 0:
            raise SIP2FormatError(f"{spec.title}: field {fid} ({FIELD_NAMES.get(fid, 'unknown field')}) at "
                                  f"position {pos + 1} has no '|' after its {len(text) - pos - 2} characters")
        fields.setdefault(fid, []).append(text[pos + 2:end])
        pos = end + 1
    return fields


# ---------------------------------------------------------------- requests


def login(user: str, password: str, location: str | None = None) -> tuple[str, list[str], list[tuple[str, str | None]]]:
    return "93", ["0", "0"], [("CN", user), ("CO", password), ("CP", location)]


def sc_status(protocol: str = "2.00", max_print_width: int = 80) -> tuple[str, list[str], list]:
    return "99", ["0", f"{max_print_width:03d}", protocol], []


def item_information(institution: str, item: str, terminal_password: str | None = None,
                     when: dt.datetime | None = None) -> tuple[str, list[str], list]:
    return "17", [sip_date(when)], [("AO", institution), ("AB", item), ("AC", terminal_password)]


def checkout(institution: str, patron: str, item: str, *, terminal_password: str | None = None,
             patron_password: str | None = None, when: dt.datetime | None = None) -> tuple[str, list[str], list]:
    return "11", ["N", "N", sip_date(when), BLANK_DATE], [
        ("AO", institution), ("AA", patron), ("AB", item), ("AC", terminal_password), ("AD", patron_password)]


def checkin(institution: str, item: str, location: str, *, terminal_password: str | None = None,
            when: dt.datetime | None = None) -> tuple[str, list[str], list]:
    date = sip_date(when)
    return "09", ["N", date, date], [("AP", location), ("AO", institution), ("AB", item), ("AC", terminal_password)]


def patron_status(institution: str, patron: str, *, terminal_password: str | None = None,
                  patron_password: str | None = None, when: dt.datetime | None = None) -> tuple[str, list[str], list]:
    return "23", ["001", sip_date(when)], [("AO", institution), ("AA", patron), ("AC", terminal_password),
                                          ("AD", patron_password)]


# ---------------------------------------------------------------- typed responses


@dataclass(frozen=True)
class AcsStatus:
    online: bool
    checkin_ok: bool
    checkout_ok: bool
    protocol_version: str
    institution_id: str
    library_name: str
    supported_messages: str


@dataclass(frozen=True)
class ItemInfo:
    item_id: str
    circulation_status: str
    security_marker: str
    title: str
    due_date: str
    screen_message: str

    @property
    def charged(self) -> bool:
        return self.circulation_status in CHARGED

    @property
    def found(self) -> bool:
        """False when the ILS does not know the item (status 'other' and no title, as Koha and Evergreen say it)."""
        return not (self.circulation_status == "01" and not self.title)

    @property
    def status_text(self) -> str:
        return CIRCULATION.get(self.circulation_status, f"status {self.circulation_status}")


@dataclass(frozen=True)
class CheckoutResult:
    ok: bool
    item_id: str
    title: str
    due_date: str
    renewal: bool
    desensitize: str
    screen_message: str
    confirmed_by: Literal["checkout", "item_information"] = "checkout"
    """``item_information``: the answer to the checkout was lost, and the ILS said afterwards that the item
    is charged: the checkout went through and was not sent again."""


@dataclass(frozen=True)
class CheckinResult:
    ok: bool
    item_id: str
    title: str
    resensitize: bool
    alert: bool
    screen_message: str


@dataclass(frozen=True)
class PatronStatus:
    valid: bool
    charge_denied: bool
    screen_message: str
    patron_status: str = field(default="", repr=False)

    @property
    def can_borrow(self) -> bool:
        return self.valid and not self.charge_denied


def _screen(msg: Message) -> str:
    return " ".join(msg.fields.get("AF", [])).strip()


def acs_status(msg: Message) -> AcsStatus:
    f = msg.fixed
    return AcsStatus(f["on-line status"] == "Y", f["checkin ok"] == "Y", f["checkout ok"] == "Y",
                     f["protocol version"], msg.get("AO"), msg.get("AM"), msg.get("BX"))


def item_info(msg: Message) -> ItemInfo:
    return ItemInfo(msg.get("AB"), msg.fixed["circulation status"], msg.fixed["security marker"], msg.get("AJ"),
                    msg.get("AH"), _screen(msg))


def checkout_result(msg: Message) -> CheckoutResult:
    f = msg.fixed
    return CheckoutResult(f["ok"] == "1", msg.get("AB"), msg.get("AJ"), msg.get("AH"), f["renewal ok"] == "Y",
                          f["desensitize"], _screen(msg))


def checkin_result(msg: Message) -> CheckinResult:
    f = msg.fixed
    return CheckinResult(f["ok"] == "1", msg.get("AB"), msg.get("AJ"), f["resensitize"] == "Y", f["alert"] == "Y",
                         _screen(msg))


def patron_status_result(msg: Message) -> PatronStatus:
    status = msg.fixed["patron status"]
    valid = msg.get("BL", "Y") == "Y"
    return PatronStatus(valid, status[0] == "Y", _screen(msg), status)
