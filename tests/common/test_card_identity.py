"""The card identity rule: every reader family's read -> one canonical number, the rule recorded next to the
key, readers checked against the rule in the config, and ``edugate card-check``."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from edugate.common.card_identity import (
    CardIdentityError,
    CardIdentityRule,
    Read,
    ReaderIdentity,
    canonical,
)
from edugate.common.privacy import (
    CardRuleError,
    KeyFileError,
    Pseudonymizer,
    load_or_create_key,
    open_school_key,
    read_rule_record,
    rule_record_path,
)
from edugate.drivers.wedge.driver import WedgeConfig, interpret
from edugate.drivers.wiegand.codec import decode, encode, encode26
from edugate.gateway.config import ConfigError, parse_config
from edugate.simulators.em4100 import EM4100Simulator
from edugate.simulators.wedge_serial import card_text
from tests.helpers import REPO, wait_for

EM = bytes.fromhex("0A1B2C3D4E")  # a 125 kHz card's 40-bit EM ID: facility 0x2C = 44, number 0x3D4E = 15694
UID4 = bytes.fromhex("04A22B1C")  # a 13.56 MHz card's UID, card order
UID7 = bytes.fromhex("04A22B1C5D8000")
PROX, NFC = ReaderIdentity(family="prox"), ReaderIdentity(family="nfc")


def rule(prox: int = 40, nfc: str | int = "all", version: int = 1) -> CardIdentityRule:
    return CardIdentityRule(version=version, prox_bits=prox, nfc_bytes=nfc)  # type: ignore[arg-type]


def wedge(fmt: str, **kw: object) -> WedgeConfig:
    return WedgeConfig(id="w", driver="wedge", device_path="/dev/input/w", format=fmt, **kw)  # type: ignore[arg-type]


def spellings(uid: bytes) -> set[str]:
    forms: set[str] = set()
    for part in {uid, uid[-4:], uid[-3:], uid[::-1]}:
        forms |= {part.hex(), part.hex().upper(), str(int.from_bytes(part, "big"))}
    return {f for f in forms if len(f) >= 6}


# ---------------------------------------------------------------- reads -> canonical numbers


def test_a_125khz_card_is_one_number_at_every_reader_family_under_the_rule() -> None:
    """The bytes each driver really produces for one EM card (codecs and the wedge's interpret, not made up)."""
    w26 = decode(encode26(EM[2], int.from_bytes(EM[3:], "big"))).uid
    w34 = decode(encode(int.from_bytes(EM[1:], "big"), 34)).uid
    hex_wedge = interpret(EM.hex().upper(), wedge("hex"))
    ten_digits = interpret(str(int.from_bytes(EM[1:], "big")).zfill(10), wedge("decimal", uid_bytes=4))
    reads = [(EM, "em4100", None), (w26, "wiegand26", PROX), (w34, "wiegand34", PROX),
             (hex_wedge, "keyboard", PROX), (ten_digits, "keyboard", ReaderIdentity(family="prox", bits=32))]
    r24 = rule(prox=24)
    assert {canonical(raw, tech, r24, reader) for raw, tech, reader in reads} == {EM[-3:]}
    r32 = rule(prox=32)
    assert {canonical(raw, tech, r32, reader) for raw, tech, reader in reads if tech != "wiegand26"} == {EM[-4:]}
    with pytest.raises(CardIdentityError, match="reports 24 bits of a 125 kHz card; the school's rule keeps 32") as e:
        canonical(w26, "wiegand26", r32, PROX)
    assert e.value.reason == "too_narrow" and not spellings(EM) & set(str(e.value).split())
    # without a rule, and under the widest rule, the EM4100 reader's pseudonyms stay what they were
    assert canonical(EM, "em4100", None) == EM == canonical(EM, "em4100", rule(prox=40))
    assert canonical(w26, "wiegand26", None) == w26


def test_a_1356mhz_uid_in_either_byte_order_4_or_7_bytes() -> None:
    le_decimal = interpret(str(int.from_bytes(UID4, "little")).zfill(10),
                           wedge("decimal", uid_bytes=4, byte_order="little"))
    w34_reversed = decode(encode(int.from_bytes(UID4[::-1], "big"), 34)).uid
    reads = [(UID4, "iso14443a", None), (le_decimal, "keyboard", NFC),
             (w34_reversed, "wiegand34", ReaderIdentity(family="nfc", byte_order="reversed")),
             (UID4[::-1], "keyboard", ReaderIdentity(family="nfc", byte_order="reversed"))]
    assert {canonical(raw, tech, rule(), reader) for raw, tech, reader in reads} == {UID4}
    # a 7-byte UID: a Wiegand-34 reader sends its first 4 bytes; nfc_bytes: 4 makes them one card with the PN532
    w34_of_7 = decode(encode(int.from_bytes(UID7[:4], "big"), 34)).uid
    assert canonical(UID7, "iso14443a", rule(nfc=4)) == canonical(w34_of_7, "wiegand34", rule(nfc=4), NFC) \
        == UID7[:4]
    assert canonical(UID7, "iso14443a", rule()) != canonical(w34_of_7, "wiegand34", rule(), NFC)
    w26_of_7 = decode(encode(int.from_bytes(UID7[:3], "big"), 26)).uid
    assert canonical(w26_of_7, "wiegand26", rule(nfc=3), NFC) == canonical(UID7, "iso14443a", rule(nfc=3))
    with pytest.raises(CardIdentityError, match=r"3 bytes of a 13\.56 MHz UID; the school's rule keeps 4"):
        canonical(w26_of_7, "wiegand26", rule(nfc=4), NFC)
    # 4- and 7-byte cards at one decimal little-endian wedge typing whole UIDs: uid_bytes: 7 and nfc_bytes: 4
    mixed = wedge("decimal", uid_bytes=7, byte_order="little")
    for uid in (UID4, UID7):
        typed = interpret(str(int.from_bytes(uid, "little")), mixed)
        assert canonical(typed, "keyboard", rule(nfc=4), NFC) == canonical(uid, "iso14443a", rule(nfc=4)) == uid[:4]


def test_readers_that_do_not_say_their_cards_and_barcodes() -> None:
    with pytest.raises(CardIdentityError, match=r"card_identity: \{family: prox\}") as e:
        canonical(UID4, "wiegand34", rule())
    assert e.value.reason == "no_family"
    assert canonical(b"P00123", "barcode", rule()) == b"P00123"  # a wedge in format: text reads barcodes
    with pytest.raises(CardIdentityError, match="significant bits"):
        canonical(EM, "keyboard", rule(prox=24), ReaderIdentity(family="prox", bits=32))


def test_the_pseudonym_is_taken_over_the_canonical_number_only(tmp_path: Path) -> None:
    key = load_or_create_key(tmp_path / "school.key")
    p = Pseudonymizer(key, rule(prox=24))
    w26 = decode(encode26(EM[2], int.from_bytes(EM[3:], "big"))).uid
    assert p.card(EM, "em4100") == p.card(w26, "wiegand26", PROX) == p(EM[-3:]) != p(EM)
    assert Pseudonymizer(key).card(EM, "em4100") == p(EM)  # no rule: as read


# ---------------------------------------------------------------- the config


BASE = """school: s1
gateway: g1
privacy: {secret_file: /tmp/k, card_identity: RULE}
devices:
DEVICES"""


def parse(rule_text: str, devices: list[dict]) -> object:
    text = BASE.replace("RULE", rule_text).replace("DEVICES", "".join(
        f"  - {json.dumps(d)}\n" for d in devices))
    return parse_config(text, "site.yaml")


def problems(rule_text: str, devices: list[dict]) -> str:
    with pytest.raises(ConfigError) as e:
        parse(rule_text, devices)
    return str(e.value)


W = {"id": "gate", "driver": "wiegand", "d0_line": 17, "d1_line": 27}


def test_the_config_checks_every_reader_against_the_rule() -> None:
    cfg = parse("{version: 3, prox_bits: 24, replaces: 2}", [W | {"card_identity": {"family": "prox"}}])
    assert cfg.privacy.card_identity == rule(prox=24, version=3).model_copy(update={"replaces": 2})  # type: ignore[attr-defined]
    assert "devices[0] (gate): say which cards this wiegand reader reads" in problems("{version: 1}", [W])
    text = problems("{version: 1, prox_bits: 32}", [W | {"card_identity": {"family": "prox"}}])
    assert "a wiegand26 reader reports only 24 bits of a 125 kHz card; the school's rule keeps 32" in text
    assert "formats: [34] if the reader sends only 34-bit frames" in text
    parse("{version: 1, prox_bits: 32}", [W | {"formats": [34], "card_identity": {"family": "prox"}}])
    assert "set nfc_bytes: 3" in problems("{version: 1}", [W | {"formats": [26], "card_identity": {"family": "nfc"}}])
    dec = {"id": "desk", "driver": "wedge", "device_path": "/dev/input/d", "format": "decimal",
           "card_identity": {"family": "prox"}}
    assert "set uid_bytes" in problems("{version: 1, prox_bits: 32}", [dec])
    parse("{version: 1, prox_bits: 32}", [dec | {"uid_bytes": 4}])
    assert "a keyboard reader reports only 32 bits of a 125 kHz card; the school's rule keeps 40" in problems(
        "{version: 1}", [dec | {"uid_bytes": 4}])
    parse("{version: 1}", [{"id": "scan", "driver": "wedge", "device_path": "/dev/input/s", "format": "text"}])
    station = {"id": "selfcheck", "driver": "library-selfcheck", "port": "/dev/ttyS1", "patrons_file": "/tmp/p.csv",
               "sip2": {"host": "127.0.0.1", "port": 6001, "institution_id": "lib", "login_user": "u",
                        "login_password_file": "/tmp/pw"}}
    assert "devices[0] (selfcheck): say which cards this library-selfcheck reader reads" in problems(
        "{version: 1}", [station])
    parse("{version: 1}", [station | {"card_identity": {"family": "nfc"}}])
    text = problems("null", [W | {"card_identity": {"family": "prox"}}])
    assert "card_identity has no effect without the school's rule" in text
    assert "replaces (2) must be an older version than version (2)" in problems("{version: 2, replaces: 2}", [])
    assert "prox_bits" in problems("{version: 1, prox_bits: 30}", [])


# ---------------------------------------------------------------- the rule recorded next to the key


def test_the_rule_is_recorded_and_a_different_one_refused_unless_it_says_what_it_replaces(tmp_path: Path) -> None:
    key = tmp_path / "school.key"
    open_school_key(key, rule(prox=24))  # a new key: its pseudonyms are made under this rule from the start
    assert read_rule_record(key) == (1, "prox_bits=24 nfc_bytes=all")
    assert open_school_key(key, rule(prox=24)).rule == rule(prox=24)  # the same rule: starts
    with pytest.raises(CardRuleError, match=r"made under card identity rule version 1 \(prox_bits=24 nfc_bytes=all"
                       r".*the config gives version 2: prox_bits=32.*set privacy.card_identity.replaces: 1"):
        open_school_key(key, rule(prox=32, version=2))
    with pytest.raises(CardRuleError, match="under the same number: a changed rule needs a new version"):
        open_school_key(key, rule(prox=32, version=1))
    with pytest.raises(CardRuleError, match=r"has no privacy\.card_identity"):
        open_school_key(key, None)
    assert read_rule_record(key) == (1, "prox_bits=24 nfc_bytes=all"), "a refused start records nothing"
    changed = CardIdentityRule(version=2, prox_bits=32, replaces=1)
    assert open_school_key(key, changed).rule == changed  # told explicitly: recorded
    doc = json.loads(rule_record_path(key).read_text())
    assert (doc["version"], doc["rule"], doc["replaced"]) == (2, "prox_bits=32 nfc_bytes=all",
                                                             {"version": 1, "rule": "prox_bits=24 nfc_bytes=all"})
    open_school_key(key, changed)  # replaces: 1 stays in the config: harmless once recorded


def test_a_key_from_before_rules_made_its_pseudonyms_as_read(tmp_path: Path) -> None:
    key = tmp_path / "school.key"
    load_or_create_key(key)  # provisioned, or used before this version: no record
    with pytest.raises(CardRuleError, match=r"version 0 \(as-read"):
        open_school_key(key, rule())
    assert read_rule_record(key) is None
    open_school_key(key, None)  # as read, as before: starts, and says so from now on
    assert read_rule_record(key) == (0, "as-read")
    open_school_key(key, CardIdentityRule(version=1, replaces=0))
    assert read_rule_record(key) == (1, "prox_bits=40 nfc_bytes=all")


def test_a_damaged_rule_record_stops_the_gateway_with_what_to_do(tmp_path: Path) -> None:
    key = tmp_path / "school.key"
    open_school_key(key, rule(prox=24))
    for damage in (b"", b"\xff\xfe garbage", b'{"version": "one"}', b"[1, 2]"):
        rule_record_path(key).write_bytes(damage)
        with pytest.raises(KeyFileError, match=rf"^{rule_record_path(key)}: not a card rule record .*restore it "
                           "from the backup of the key"):
            open_school_key(key, rule(prox=24))
        assert rule_record_path(key).read_bytes() == damage, "a damaged record is left for the operator to see"


def test_the_demo_schools_mixed_readers_give_one_card_one_number() -> None:
    """The demo school's readers (EM4100 doors, a PN532, the library self-check station's 125 kHz reader, a serial
    desk wedge typing decimal little-endian) under its rule: one 125 kHz card is one number at the EM4100 readers
    and at the station; one 13.56 MHz card is one number at the PN532 and at the desk wedge (what the wedge sends,
    through the driver's own decoding)."""
    from edugate.gateway.config import load_config

    cfg = load_config(REPO / "cli" / "demo-school.yaml")
    school = cfg.privacy.card_identity
    assert school is not None
    readers = {d.id: d for d in cfg.devices if getattr(d, "card_identity", None) is not None
               or d.driver in ("em4100", "pn532")}
    assert {d.driver for d in readers.values()} >= {"em4100", "pn532", "library-selfcheck"}, "the demo mixes families"
    prox = {canonical(EM, "station" if d.driver == "library-selfcheck" else "em4100", school, d.card_identity)
            for d in readers.values() if d.driver in ("em4100", "library-selfcheck")}
    assert len(prox) == 1
    assert canonical(UID7, "iso14443a", school, readers["c10a-reader"].card_identity) == UID7
    desk = readers["library-desk"]
    assert isinstance(desk, WedgeConfig) and desk.source == "serial", "the desk reader the demo can simulate"
    sent = card_text(UID4, desk.format, desk.byte_order)  # type: ignore[arg-type]
    assert sent == str(int.from_bytes(UID4[::-1], "big")).zfill(10), "ten digits of the reversed bytes"
    typed = interpret(sent, desk)
    at_desk = canonical(typed, "keyboard", school, desk.card_identity)
    assert at_desk == canonical(UID4, "iso14443a", school, readers["c10a-reader"].card_identity) == UID4
    families = {"pn532", "wedge"}
    assert families <= {d.driver for d in readers.values() if d.card_identity is None or d.card_identity.family
                        in (None, "nfc")}, "one 13.56 MHz card is shared by two reader families"


def test_edugate_run_refuses_to_start_under_another_rule(tmp_path: Path) -> None:
    key = tmp_path / "school.key"
    open_school_key(key, rule(prox=24))
    config = tmp_path / "gw.yaml"
    config.write_text(yaml.safe_dump({
        "school": "s1", "gateway": "g1", "storage": {"path": str(tmp_path / "outbox.sqlite")},
        "privacy": {"secret_file": str(key), "card_identity": {"version": 2, "prox_bits": 32}}}))
    result = subprocess.run([sys.executable, "-m", "edugate.cli.main", "run", str(config)], capture_output=True,
                            text=True, cwd=REPO, timeout=60)
    assert result.returncode == 2, result.stderr
    assert "made under card identity rule version 1" in result.stderr and "replaces: 1" in result.stderr
    assert not (tmp_path / "outbox.sqlite").exists(), "nothing ran"


# ---------------------------------------------------------------- edugate card-check


def card_check(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edugate.cli.main", "card-check", *args], capture_output=True,
                          text=True, cwd=REPO, input=stdin, timeout=60)


def test_card_check_tells_same_card_and_which_rule_would_match(tmp_path: Path) -> None:
    config = tmp_path / "gw.yaml"
    config.write_text(yaml.safe_dump({
        "school": "s1", "gateway": "g1", "privacy": {"secret_file": str(tmp_path / "k"),
                                                     "card_identity": {"version": 4, "prox_bits": 32}},
        "devices": [W | {"formats": [34], "card_identity": {"family": "prox"}}]}))
    em, w26 = f"em4100:{EM.hex().upper()}", f"w26:{EM[2]},{int.from_bytes(EM[3:], 'big')}"
    different = card_check("-c", str(config), em, w26)
    assert different.returncode == 1, different.stderr
    assert "DIFFERENT: two pseudonyms under the school's rule (version 4: prox_bits=32" in different.stdout
    assert "privacy.card_identity: {prox_bits: 24} on every gateway of the school (version: 5, replaces: 4)" \
        in different.stdout
    same = card_check("-c", str(config), em, f"gate=w34:{int.from_bytes(EM[1:], 'big')}")
    assert same.returncode == 0 and "SAME CARD" in same.stdout, same.stdout + same.stderr
    reversed_w34 = f"w34:{int.from_bytes(UID4[::-1], 'big')}"
    nfc = card_check(f"nfc:{UID4.hex(':')}", reversed_w34)
    assert nfc.returncode == 1
    assert "card_identity: {byte_order: reversed} on the reader of read B" in nfc.stdout.splitlines()[4]
    hidden = card_check(stdin=f"nfc:{UID4.hex()}\ndec-le:{int.from_bytes(UID4, 'little')}\n")  # not in argv
    assert hidden.returncode == 0 and "SAME CARD" in hidden.stdout
    unknown = card_check("hex:1C2BA204", reversed_w34)
    assert unknown.returncode == 2 and "--card prox (125 kHz) or --card nfc" in unknown.stderr
    bad = card_check(f"em4100:{EM.hex()}00", w26)
    assert bad.returncode == 2 and "an em4100 read is 10 hex digits (5 bytes), not 6 bytes" in bad.stderr
    for result in (different, same, nfc, hidden, unknown, bad):
        for form in spellings(EM) | spellings(UID4):
            assert form not in result.stdout + result.stderr, f"card-check printed a card number ({form})"


def test_pasted_reads_of_every_family_printed_numbers_and_7_byte_uids() -> None:
    """The reads people paste into card-check (and write in rosters) name the card the drivers' reads name."""
    from edugate.common.card_identity import parse_read, same_card

    em = parse_read(f"em4100:{EM.hex()}")
    ten = parse_read(f"printed:{int.from_bytes(EM[1:], 'big'):010d}")
    fc = parse_read(f"printed:{EM[2]:03d},{int.from_bytes(EM[3:], 'big')}")
    w26, w34 = parse_read(f"w26:{int.from_bytes(EM[2:], 'big')}"), parse_read(f"w34:{int.from_bytes(EM[1:], 'big')}")
    assert all(same_card(em, other, rule(prox=24)) for other in (ten, fc, w26, w34))
    assert all(same_card(em, other, rule(prox=32)) for other in (ten, w34))
    assert not same_card(em, fc, rule(prox=32)) and not same_card(em, ten, rule(prox=40))
    nfc7 = parse_read(f"nfc:{UID7.hex(':')}")
    for spelled in (f"hex:{UID7.hex()}", f"dec:{int.from_bytes(UID7, 'big')}",
                    f"dec-le:{int.from_bytes(UID7, 'little')}"):
        assert same_card(nfc7, parse_read(spelled), rule(), "nfc"), spelled
    reversed_hex = parse_read(f"hex:{UID7[::-1].hex()}")
    assert not same_card(nfc7, reversed_hex, rule(), "nfc")
    assert same_card(nfc7, Read("keyboard", reversed_hex.raw, ReaderIdentity(family="nfc", byte_order="reversed")),
                     rule())
    assert same_card(nfc7, parse_read(f"w34:{int.from_bytes(UID7[:4], 'big')}"), rule(nfc=4), "nfc")
    for bad in ("printed:12345", "w26:256,1", "nfc:04A2B", "em4100:0A1B2C3D", "dec:12ab", "w34:4294967296"):
        with pytest.raises(ValueError) as e:
            parse_read(bad)
        assert bad.partition(":")[2] not in str(e.value), "an error never repeats the read"


async def test_card_check_reads_a_tap_on_a_configured_reader(tmp_path: Path) -> None:
    config = tmp_path / "gw.yaml"
    config.write_text(yaml.safe_dump({
        "school": "s1", "gateway": "g1", "privacy": {"secret_file": str(tmp_path / "k"),
                                                     "card_identity": {"version": 1, "prox_bits": 24}},
        "devices": [{"id": "lab-door", "driver": "em4100", "port": str(tmp_path / "ttyLAB")},
                    W | {"formats": [26], "card_identity": {"family": "prox"}}]}))
    async with EM4100Simulator(tmp_path / "ttyLAB") as reader:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "edugate.cli.main", "card-check", "-c", str(config), "--tap", "lab-door",
            f"gate=w26:{EM[2]},{int.from_bytes(EM[3:], 'big')}", "--timeout", "20", "--log-level", "DEBUG", cwd=REPO,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        assert proc.stdout is not None
        prompt = await asyncio.wait_for(proc.stdout.readline(), 20)
        assert b"read B: tap the card on lab-door (em4100" in prompt
        reader.present(EM)  # the card held on the reader: frames every 0.1 s, as a real RDM6300 sends them
        out, err = await asyncio.wait_for(proc.communicate(), 30)
        await reader.release()
    text = prompt.decode() + out.decode() + err.decode()
    assert proc.returncode == 0, text
    assert "read B: em4100 at lab-door (125 kHz card, 40 bits of the EM ID)" in text and "SAME CARD" in text
    assert "DEBUG" in text and "reading cards" in text, "the scan must see the driver's log, every level"
    assert not any(form in text for form in spellings(EM))


def test_reidentification_maps_the_roster_under_the_recorded_rule(tmp_path: Path) -> None:
    key = tmp_path / "school.key"
    gateway = open_school_key(key, rule(prox=24))  # what the gateway pseudonymises with
    w26 = decode(encode26(EM[2], int.from_bytes(EM[3:], "big"))).uid
    roster = tmp_path / "roster.csv"
    printed = f"printed:{EM[2]:03d},{int.from_bytes(EM[3:], 'big')}"  # facility,number: quoted in the CSV
    roster.write_text(f'student_id,uid\nS1,em4100:{EM.hex()}\nS2,"{printed}"\nS3,nfc:{UID4.hex(":")}\n')
    result = subprocess.run([sys.executable, "-m", "edugate.cli.main", "pseudonym", "--key", str(key), "--purpose",
                             "test", "--roster", str(roster)], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert result.returncode == 0, result.stderr
    rows = dict(line.split(",") for line in result.stdout.split()[1:])
    assert rows == {"S1": gateway.card(w26, "wiegand26", PROX), "S2": gateway.card(EM, "em4100"),
                    "S3": gateway.card(UID4, "iso14443a")}
    assert rows["S1"] == rows["S2"]
    roster.write_text(f"student_id,uid\nS2,{printed}\n")  # unquoted: the CSV cuts it at the comma
    cut = subprocess.run([sys.executable, "-m", "edugate.cli.main", "pseudonym", "--key", str(key), "--purpose",
                          "test", "--roster", str(roster)], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert cut.returncode == 2 and "in a CSV file put a facility,number in quotes" in cut.stderr
    roster.write_text(f"student_id,uid\nS1,{EM.hex()}\n")  # a bare number: which card family, which bits?
    refused = subprocess.run([sys.executable, "-m", "edugate.cli.main", "pseudonym", "--key", str(key), "--purpose",
                              "test", "--roster", str(roster)], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert refused.returncode == 2
    assert f"{roster}:2: under the school's card identity rule (version 1: prox_bits=24" in refused.stderr
    assert not any(form in refused.stderr for form in spellings(EM))


async def test_a_read_the_rule_cannot_map_is_counted_and_signalled_and_the_next_tap_works(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A wedge set up to type only the low 16 bits of a 125 kHz card, under a rule that keeps 24."""
    from edugate.drivers.base import DriverContext
    from edugate.drivers.wedge.driver import WedgeDriver
    from edugate.simulators.wedge import FakeKeyboard
    from tests.drivers.fakes import FakeEmit

    cfg = wedge("hex", role="door", card_identity=PROX, reopen_max_s=0.05)
    keyboard = FakeKeyboard("/dev/input/w")
    driver = WedgeDriver(cfg, source_factory=keyboard.open)
    school = Pseudonymizer(load_or_create_key(tmp_path / "school.key"), rule(prox=24))
    driver.ctx = DriverContext(pseudonymize=school, card_rule=school.rule)
    signals: list[str] = []

    async def signal(outcome: str) -> None:
        signals.append(outcome)

    driver.signal = signal  # type: ignore[method-assign,assignment]  # the wedge has no LED: watch the outcome
    emit = FakeEmit()
    task = asyncio.create_task(driver.run(emit))
    try:
        await keyboard.wait_open()
        keyboard.type(EM[-2:].hex())  # 16 bits: not enough for the rule
        keyboard.type(EM.hex())  # the whole EM ID: fine
        tap = await emit.next()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await driver.close()
    assert tap.data["card"] == school(EM[-3:]) and len(emit.taps()) == 1
    assert signals == ["error", "accepted"]
    assert driver.health.counters["unmapped_reads"] == driver.health.counters["unmapped_reads.too_narrow"] == 1
    assert "a keyboard reader reports 16 bits of a 125 kHz card; the school's rule keeps 24" in caplog.text
    assert not any(form in caplog.text + str(driver.health.as_dict()) for form in spellings(EM) | {EM[-2:].hex()})


KEY_MAKER = """
import sys
from pathlib import Path
from edugate.common.card_identity import CardIdentityRule
from edugate.common.privacy import open_school_key
root, rule = Path(sys.argv[1]), CardIdentityRule(version=3, prox_bits=24)
print("ready", flush=True)
for n in range(1_000_000):
    open_school_key(root / str(n) / "school.key", rule)
"""


def test_a_gateway_killed_while_making_its_first_key_starts_under_its_rule(tmp_path: Path) -> None:
    """``kill -9`` at random points of first starts (a new key, its rule recorded): every first start that got
    as far as a key file leaves the key whole and its rule recorded, so the next start runs under that rule."""
    import random
    import signal

    rng = random.Random(22)
    for cycle in range(6):
        root = tmp_path / str(cycle)
        proc = subprocess.Popen([sys.executable, "-c", KEY_MAKER, str(root)], stdout=subprocess.PIPE, cwd=REPO)
        assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
        made = rng.randrange(1, 12)  # first starts before the kill lands, somewhere in one of them
        wait_for(lambda r=root, m=made: len(list(r.glob("*"))) >= m, 10, "first starts to run")  # type: ignore[misc]
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    dirs = list(tmp_path.glob("*/*"))
    assert len(dirs) > 6, "the gateway must have been killed in the middle of its work"
    for folder in dirs:
        key = folder / "school.key"
        if key.exists():  # the next start: the key is whole, its rule recorded
            assert len(load_or_create_key(key)) == 32
            assert read_rule_record(key) == (3, "prox_bits=24 nfc_bytes=all"), folder
        assert open_school_key(key, rule(prox=24, version=3)).rule == rule(prox=24, version=3)
