"""One card, one pseudonym at every reader of a school: the card identity rule.

Readers of one card disagree on its number. A 125 kHz (EM4100) card has a
40-bit ID; an EM4100 serial reader sends all 40 bits, a Wiegand-26 reader the
low 24, a Wiegand-34 reader the low 32, a keyboard-wedge reader the low 32 as
ten decimal digits. A 13.56 MHz (MIFARE, ISO/IEC 14443 A) card has a 4- or
7-byte UID; a PN532 gives it in card order, many wedge and Wiegand readers
in reverse byte order or only its first 3 or 4 bytes.

The school's rule (``privacy.card_identity`` in the gateway config, the same
on every gateway of the school) says which part of a card's number is its
identity: the low ``prox_bits`` (40, 32 or 24) bits of a 125 kHz card, the
first ``nfc_bytes`` (all, 4 or 3) of a 13.56 MHz card's UID in card order.
:func:`canonical` turns one reader's raw read into those bytes; the pseudonym
is taken over them only. A reader that does something unusual gets a
per-reader override (``card_identity:`` on the device: ``family``, ``bits``,
``byte_order``). Without a rule, cards are pseudonymised as read (the
behaviour before rules existed, rule version 0).

The canonical bytes of an EM4100 reader under ``prox_bits: 40`` and of a PN532
under ``nfc_bytes: all`` are exactly what those readers read, so their
pseudonyms do not change when a school adopts such a rule.

Nothing here logs or formats a card number: errors say what and where, never the value.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Family = Literal["prox", "nfc"]
"""``prox``: 125 kHz proximity cards (EM4100/EM4102 and compatibles); ``nfc``: 13.56 MHz ISO/IEC 14443 A."""
ByteOrder = Literal["card", "reversed"]
ProxBits = Literal[40, 32, 24]
NfcBytes = Literal["all", 4, 3]

FAMILY_NAMES: dict[str, str] = {"prox": "125 kHz card", "nfc": "13.56 MHz card"}

TECHNOLOGIES: dict[str, tuple[Family | None, int | None]] = {
    "em4100": ("prox", 40),  # an EM4100 serial reader: the whole 40-bit EM ID
    "iso14443a": ("nfc", None),  # a PN532: the UID in card order
    "wiegand26": (None, 24),  # 24 data bits: the low 24 bits of an EM ID, or 3 bytes of a UID
    "wiegand34": (None, 32),  # 32 data bits
    "keyboard": (None, None),  # a keyboard wedge typing hex or decimal
    "station": (None, None),  # a library self-check station's card reader (CARD <hex>)
    "printed24": ("prox", 24),  # the 'FFF,NNNNN' number printed on 125 kHz cards (facility, card number)
    "printed32": ("prox", 32),  # the ten-digit number printed on 125 kHz cards
}
"""What each reader technology (``CardRead.technology``) reports by default: the card family and, for
125 kHz cards, how many low bits of the EM ID. None: the reader's config must say (``card_identity``)."""

AS_READ_TECHNOLOGIES = frozenset({"barcode"})
"""Reads that are not card numbers (a wedge in ``format: text``: library barcodes): always taken as read."""


class CardIdentityError(ValueError):
    """A read that cannot be mapped under the rule. ``reason`` is a counter name; the message has no card data."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class ReaderIdentity(BaseModel):
    """A card reader's ``card_identity:``: what its reads are, where its vendor does something unusual."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    family: Family | None = Field(None, description="Which cards this reader reads: 'prox' (125 kHz, EM4100) or "
                                  "'nfc' (13.56 MHz, MIFARE/ISO 14443 A). Needed for Wiegand and wedge readers "
                                  "once the school has a card identity rule.")
    bits: int | None = Field(None, ge=8, le=64, description="125 kHz cards: how many low bits of the card's "
                             "40-bit EM ID this reader reports (default: 40 EM4100, 24 Wiegand-26, 32 Wiegand-34, "
                             "as many as it types for a wedge).")
    byte_order: ByteOrder = Field("card", description="'reversed' if the reader reports the card's bytes in "
                                  "reverse order (many 13.56 MHz Wiegand readers and hex wedges do).")


class CardIdentityRule(BaseModel):
    """The school's card identity rule (``privacy.card_identity``): the same on every gateway of the school."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: int = Field(ge=1, le=1_000_000, description="The school's number for this rule. Pseudonyms made "
                         "under a rule are recorded with its version next to the school key; a gateway refuses "
                         "to start under another rule unless 'replaces' names the recorded version.")
    prox_bits: ProxBits = Field(40, description="125 kHz cards (EM4100): the low 40, 32 or 24 bits of the card's "
                                "EM ID are its identity. 24 when any Wiegand-26 reader reads them, 32 for "
                                "Wiegand-34 readers and ten-digit wedges, else 40.")
    nfc_bytes: NfcBytes = Field("all", description="13.56 MHz cards: the first 'all', 4 or 3 bytes of the UID "
                                "(in card order) are its identity. 4 when a Wiegand-34 reader reads 7-byte UIDs, "
                                "3 for Wiegand-26 readers.")
    replaces: int | None = Field(None, ge=0, description="Set once, on purpose: the recorded rule version this "
                                 "rule replaces (0: cards pseudonymised as read). Changing the rule changes "
                                 "pseudonyms (docs/privacy.md).")

    @model_validator(mode="after")
    def _replaces_older(self) -> CardIdentityRule:
        if self.replaces is not None and self.replaces >= self.version:
            raise ValueError(f"replaces ({self.replaces}) must be an older version than version ({self.version})")
        return self

    @property
    def text(self) -> str:
        """The rule without its version: what decides the pseudonyms (recorded next to the key)."""
        return f"prox_bits={self.prox_bits} nfc_bytes={self.nfc_bytes}"

    def describe(self) -> str:
        return f"version {self.version}: {self.text}"


AS_READ_VERSION = 0
AS_READ_TEXT = "as-read"
"""The rule of a school without ``privacy.card_identity``: every reader's bytes as read."""


def rule_version(rule: CardIdentityRule | None) -> int:
    return AS_READ_VERSION if rule is None else rule.version


def rule_text(rule: CardIdentityRule | None) -> str:
    return AS_READ_TEXT if rule is None else rule.text


def describe(rule: CardIdentityRule | None) -> str:
    return f"version 0: {AS_READ_TEXT}" if rule is None else rule.describe()


# ---------------------------------------------------------------- one read -> the canonical bytes


@dataclass(frozen=True, slots=True)
class Profile:
    """What one reader's reads are: card family, the EM ID bits it reports (125 kHz), its byte order."""

    family: Family | None
    bits: int | None
    byte_order: ByteOrder = "card"


def profile(technology: str, reader: ReaderIdentity | None = None) -> Profile:
    family, bits = TECHNOLOGIES.get(technology, (None, None))
    if reader is None:
        return Profile(family, bits)
    return Profile(reader.family or family, reader.bits or bits, reader.byte_order)


def canonical(raw: bytes, technology: str, rule: CardIdentityRule | None,
              reader: ReaderIdentity | None = None) -> bytes:
    """The bytes the pseudonym is taken over: ``raw`` mapped under the school's ``rule``.

    Raises :class:`CardIdentityError` (without card data) when the read cannot be mapped.
    """
    if rule is None or technology in AS_READ_TECHNOLOGIES:
        return raw
    return canonical_with(raw, profile(technology, reader), rule, technology)


def canonical_with(raw: bytes, prof: Profile, rule: CardIdentityRule, technology: str = "card") -> bytes:
    if not raw:
        raise CardIdentityError("empty", f"an empty {technology} read")
    if prof.family is None:
        raise CardIdentityError("no_family", f"a {technology} reader must say which cards it reads under the "
                                "school's card identity rule: card_identity: {family: prox} (125 kHz) or "
                                "{family: nfc} (13.56 MHz)")
    ordered = raw[::-1] if prof.byte_order == "reversed" else raw
    if prof.family == "prox":
        value = int.from_bytes(ordered, "big")
        width = prof.bits or 8 * len(raw)
        if value.bit_length() > width:
            raise CardIdentityError("too_wide", f"a {technology} read of {value.bit_length()} significant bits "
                                    f"from a reader set to report {width} bits of a 125 kHz card")
        keep = rule.prox_bits
        if width < keep:
            raise CardIdentityError("too_narrow", f"a {technology} reader reports {width} bits of a 125 kHz card; "
                                    f"the school's rule keeps {keep} (privacy.card_identity.prox_bits)")
        return (value & ((1 << keep) - 1)).to_bytes(keep // 8, "big")
    if rule.nfc_bytes == "all":
        return ordered
    if len(ordered) < rule.nfc_bytes:
        raise CardIdentityError("too_narrow", f"a {technology} read of {len(ordered)} bytes of a 13.56 MHz UID; "
                                f"the school's rule keeps {rule.nfc_bytes} (privacy.card_identity.nfc_bytes)")
    return ordered[:rule.nfc_bytes]


# ---------------------------------------------------------------- the readers of one config


def _technologies(dev: Any) -> list[str]:
    """The technologies a configured card reader can report (duck-typed on the drivers' configs)."""
    driver = getattr(dev, "driver", "")
    if driver == "em4100":
        return ["em4100"]
    if driver == "pn532":
        return ["iso14443a"]
    if driver == "wiegand":
        return [f"wiegand{n}" for n in getattr(dev, "formats", (26, 34))]
    if driver == "wedge":
        return ["barcode"] if getattr(dev, "format", "hex") == "text" else ["keyboard"]
    if driver == "library-selfcheck":
        return ["station"]
    return []


def check_readers(rule: CardIdentityRule | None, devices: Sequence[Any]) -> list[str]:
    """Problems of the card readers of one gateway under the school's rule, each naming the device."""
    problems: list[str] = []
    for i, dev in enumerate(devices):
        techs = _technologies(dev)
        reader: ReaderIdentity | None = getattr(dev, "card_identity", None)
        where = f"devices[{i}] ({getattr(dev, 'id', '?')})"
        if rule is None:
            if reader is not None:
                problems.append(f"{where}: card_identity has no effect without the school's rule "
                                "(privacy.card_identity): add the rule, or remove it from the reader")
            continue
        for tech in techs:
            if tech in AS_READ_TECHNOLOGIES:
                continue
            prof = profile(tech, reader)
            if tech == "keyboard" and prof.bits is None and getattr(dev, "uid_bytes", None):
                prof = Profile(prof.family, 8 * dev.uid_bytes, prof.byte_order)  # a decimal wedge's fixed width
            if prof.family is None:
                problems.append(f"{where}: say which cards this {dev.driver} reader reads: card_identity: "
                                "{family: prox} (125 kHz, EM4100) or {family: nfc} (13.56 MHz, MIFARE)")
                break
            if prof.family == "prox" and prof.bits is not None and prof.bits < rule.prox_bits:
                fix = ("formats: [34] if the reader sends only 34-bit frames, or " if tech == "wiegand26"
                       and len(techs) > 1 else "")
                problems.append(f"{where}: a {tech} reader reports only {prof.bits} bits of a 125 kHz card; the "
                                f"school's rule keeps {rule.prox_bits} (privacy.card_identity.prox_bits): set "
                                f"{fix}prox_bits: {prof.bits} on every gateway of the school (a new rule version)")
            if prof.family == "nfc" and tech == "wiegand26" and rule.nfc_bytes != 3:
                problems.append(f"{where}: a Wiegand-26 reader reports 3 bytes of a 13.56 MHz UID; the school's "
                                f"rule keeps {rule.nfc_bytes} (privacy.card_identity.nfc_bytes): set nfc_bytes: 3 "
                                "(a new rule version), or formats: [34]")
            if (tech == "keyboard" and prof.family is not None and getattr(dev, "format", None) == "decimal"
                    and getattr(dev, "uid_bytes", None) is None and (reader is None or reader.bits is None)):
                problems.append(f"{where}: a decimal wedge drops leading zero bytes: set uid_bytes (4 for the "
                                "usual ten-digit output) so that its reads keep their width")
    return problems


# ---------------------------------------------------------------- reads as people write them (card-check)


@dataclass(frozen=True, slots=True, repr=False)
class Read:
    """One read as a reader reports it. Personal data: never print ``raw``."""

    technology: str
    raw: bytes
    reader: ReaderIdentity | None = None
    label: str = ""

    def __repr__(self) -> str:
        return f"Read({self.technology}, <{len(self.raw)} bytes>)"

    @property
    def kind(self) -> str:
        return self.label or self.technology


READ_KINDS: dict[str, str] = {
    "em4100": "an EM4100 serial reader: the 10 hex digits of its frame (e.g. em4100:0A1B2C3D4E)",
    "nfc": "a PN532 or an NFC tool: the UID in hex, colons allowed (e.g. nfc:04:A2:2B:1C)",
    "w26": "a Wiegand-26 reader: facility,number (e.g. w26:44,15694) or the 24-bit number in decimal",
    "w34": "a Wiegand-34 reader: the 32-bit number in decimal (or 0x... hex)",
    "hex": "a keyboard wedge typing hex digits (e.g. hex:1C2BA204)",
    "dec": "a keyboard wedge typing a decimal number, bytes in card order (e.g. dec:0077736732)",
    "dec-le": "a keyboard wedge typing a decimal number of the bytes in reverse order (4 bytes, or 7)",
    "printed": "the number printed on a 125 kHz card: ten digits (0455884110) or facility,number (044,15694)",
}
"""``KIND:VALUE`` spellings :func:`parse_read` takes."""

_HEX_RE = re.compile(r"^[0-9a-fA-F]+$")


def _hex_bytes(text: str, kind: str) -> bytes:
    cleaned = text.strip().removeprefix("0x").removeprefix("0X").replace(":", "").replace(" ", "").replace("-", "")
    if not cleaned or not _HEX_RE.match(cleaned):
        raise ValueError(f"a {kind} read is hex digits ({READ_KINDS[kind]})")
    return bytes.fromhex(cleaned.zfill(len(cleaned) + len(cleaned) % 2))


def _number(text: str, kind: str) -> int:
    text = text.strip()
    if text.lower().startswith("0x") and _HEX_RE.match(text[2:] or "-"):
        return int(text[2:], 16)
    if not text.isdigit():
        raise ValueError(f"a {kind} read is a decimal number ({READ_KINDS[kind]})")
    return int(text)


def _fc_number(text: str, kind: str) -> int:
    facility, _, number = text.partition(",")
    if not (facility.strip().isdigit() and number.strip().isdigit()):
        raise ValueError(f"a {kind} read is facility,number ({READ_KINDS[kind]})")
    fc, num = int(facility), int(number)
    if fc > 255 or num > 65535:
        raise ValueError(f"a {kind} facility,number is at most 255,65535")
    return fc << 16 | num


def _fits(value: int, nbytes: int, kind: str) -> bytes:
    if value.bit_length() > 8 * nbytes:
        raise ValueError(f"a {kind} read has more than {8 * nbytes} bits")
    return value.to_bytes(nbytes, "big")


def parse_read(text: str) -> Read:
    """``KIND:VALUE`` (see :data:`READ_KINDS`) -> a :class:`Read`. Errors never repeat the value."""
    kind, sep, value = text.partition(":")
    kind = kind.strip().lower()
    if not sep or kind not in READ_KINDS:
        raise ValueError("a read is KIND:VALUE with KIND one of " + ", ".join(READ_KINDS))
    if kind == "em4100":
        raw = _hex_bytes(value, kind)
        if len(raw) != 5:
            raise ValueError(f"an em4100 read is 10 hex digits (5 bytes), not {len(raw)} bytes")
        return Read("em4100", raw, label=kind)
    if kind == "nfc":
        raw = _hex_bytes(value, kind)
        if len(raw) not in (4, 7, 10):
            raise ValueError(f"an nfc UID is 4, 7 or 10 bytes, not {len(raw)}")
        return Read("iso14443a", raw, label=kind)
    if kind == "w26":
        number = _fc_number(value, kind) if "," in value else _number(value, kind)
        return Read("wiegand26", _fits(number, 3, kind), label=kind)
    if kind == "w34":
        return Read("wiegand34", _fits(_number(value, kind), 4, kind), label=kind)
    if kind == "hex":
        return Read("keyboard", _hex_bytes(value, kind), label=kind)
    if kind in ("dec", "dec-le"):
        number = _number(value, kind)
        width = 4 if number.bit_length() <= 32 else 7
        raw = _fits(number, width, kind)
        return Read("keyboard", raw[::-1] if kind == "dec-le" else raw, label=kind)
    # printed
    if "," in value:
        return Read("printed24", _fits(_fc_number(value, kind), 3, kind), label="printed facility,number")
    if len(value.strip()) != 10:
        raise ValueError(f"a printed number is ten digits or facility,number ({READ_KINDS[kind]}; in a CSV "
                         "file put a facility,number in quotes)")
    return Read("printed32", _fits(_number(value, kind), 4, kind), label="printed ten-digit number")


# ---------------------------------------------------------------- do two reads name one card?


@dataclass(frozen=True, slots=True)
class Fix:
    """A rule (and reader overrides) under which two reads are one card."""

    rule: CardIdentityRule
    order_a: ByteOrder
    order_b: ByteOrder
    changes: tuple[str, ...]


def same_card(a: Read, b: Read, rule: CardIdentityRule | None, family: Family | None = None) -> bool:
    """Whether ``a`` and ``b`` give one pseudonym under ``rule`` (no key involved: the canonical bytes)."""
    family = card_family(a, b, family)
    try:
        return _canon(a, rule, family, None) == _canon(b, rule, family, None)
    except CardIdentityError:
        return False


def _canon(read: Read, rule: CardIdentityRule | None, family: Family | None, order: ByteOrder | None) -> bytes:
    if rule is None:
        return read.raw
    prof = profile(read.technology, read.reader)
    if family is not None and prof.family is None:
        prof = Profile(family, prof.bits, prof.byte_order)
    if order is not None:
        prof = Profile(prof.family, prof.bits, order)
    return canonical_with(read.raw, prof, rule, read.kind)


def card_family(a: Read, b: Read, given: Family | None = None) -> Family | None:
    """The family of the card both reads are of: given, or implied by either reader; None if nobody says."""
    if given is not None:
        return given
    for read in (a, b):
        fam = profile(read.technology, read.reader).family
        if fam is not None:
            return fam
    return None


def fixes(a: Read, b: Read, current: CardIdentityRule | None, family: Family | None) -> list[Fix]:
    """Every rule and per-reader byte order under which ``a`` and ``b`` are one card, fewest changes first."""
    base = current or CardIdentityRule(version=1)
    version = base.version + (0 if current is None else 1)
    found: list[Fix] = []
    seen: set[tuple[Any, ...]] = set()
    orders: Iterable[ByteOrder] = ("card", "reversed")
    for prox in (40, 32, 24):
        for nfc in ("all", 4, 3):
            if (family == "prox" and nfc != base.nfc_bytes) or (family == "nfc" and prox != base.prox_bits):
                continue
            rule = CardIdentityRule(version=version, prox_bits=prox, nfc_bytes=nfc)
            for oa in orders:
                for ob in orders:
                    key = (prox, nfc, oa, ob)
                    if key in seen:
                        continue
                    seen.add(key)
                    try:
                        if _canon(a, rule, family, oa) != _canon(b, rule, family, ob):
                            continue
                    except CardIdentityError:
                        continue
                    changes: list[str] = []
                    if current is None or prox != current.prox_bits:
                        changes.append(f"prox_bits: {prox}" if family != "nfc" else "")
                    if current is None or nfc != current.nfc_bytes:
                        changes.append(f"nfc_bytes: {nfc}" if family != "prox" else "")
                    if oa != profile(a.technology, a.reader).byte_order:
                        changes.append(f"byte_order: {oa} on the reader of read A")
                    if ob != profile(b.technology, b.reader).byte_order:
                        changes.append(f"byte_order: {ob} on the reader of read B")
                    found.append(Fix(rule, oa, ob, tuple(c for c in changes if c)))
    reference = {"em4100", "iso14443a"}  # readers that report the card as it is: adjust the others first
    found.sort(key=lambda f: (len(f.changes), (f.order_a != "card") * (a.technology in reference)
                              + (f.order_b != "card") * (b.technology in reference),
                              -f.rule.prox_bits, str(f.rule.nfc_bytes) != "all"))
    return found
