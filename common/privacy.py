"""Pseudonyms for personal identifiers (card UIDs, patron barcodes).

A raw identifier never leaves the driver that read it: it becomes
``HMAC-SHA256(school key, identifier)``, truncated to 128 bits and written as
``p1-<32 hex>``. The key is a per-school secret in a file readable only by the
gateway (mode 0600), generated on first run. Whoever holds the key can
re-identify a pseudonym by computing the pseudonyms of a known roster
(``edugate pseudonym``); nobody else can. See docs/privacy.md for rotation.

Which bytes of a card the pseudonym is taken over is the school's card identity
rule (:mod:`edugate.common.card_identity`). The rule's version is recorded next
to the key (``<key file>.card-rule``): :func:`open_school_key` refuses a rule
other than the recorded one unless the new rule says which version it replaces.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import stat
import time
from pathlib import Path

from edugate.common.card_identity import (
    AS_READ_TEXT,
    AS_READ_VERSION,
    READ_KINDS,
    CardIdentityRule,
    ReaderIdentity,
    canonical,
    describe,
    parse_read,
    rule_text,
    rule_version,
)

log = logging.getLogger(__name__)

KEY_BYTES = 32
PREFIX = "p1-"  # version of the scheme: a future change of algorithm gets a new prefix
_IMPORTED_AT = time.time()  # this process's start, where psutil is not installed (central's tools)


class KeyFileError(OSError):
    """The school key file cannot be used (missing, unreadable, too open), or its recorded card rule disagrees."""


class CardRuleError(KeyFileError):
    """The config's card identity rule is not the one the school's pseudonyms were made under."""


def load_or_create_key(path: Path) -> bytes:
    """Read the school key, creating it (0600, random 256 bits) if the file does not exist."""
    path = Path(path)
    remove_stray_new_keys(path)
    if not path.exists():
        return _create_key(path, secrets.token_bytes(KEY_BYTES))
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise KeyFileError(f"{path}: the pseudonymisation key must be readable by its owner only "
                           f"(mode is {mode:04o}; run: chmod 600 {path})")
    try:
        key = bytes.fromhex(path.read_bytes().decode("utf-8").strip())
    except UnicodeDecodeError as exc:
        raise KeyFileError(f"{path}: not a hex-encoded key (not UTF-8 text: byte {exc.object[exc.start]:#04x} at "
                           f"offset {exc.start})") from None
    except ValueError:
        raise KeyFileError(f"{path}: not a hex-encoded key") from None
    if len(key) < 16:
        raise KeyFileError(f"{path}: key too short ({len(key)} bytes; at least 16)")
    return key


def _create_key(path: Path, key: bytes) -> bytes:
    """Write a new key file (0600) whole or not at all: a crash or power loss leaves no empty or partial key."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.new")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(key.hex() + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(tmp, path)  # fails if another process made the key meanwhile: never overwrite a key
        except FileExistsError:
            raise
        except OSError:  # a file system without hard links (a FAT stick holding --school-keys)
            if path.exists():
                raise FileExistsError(f"{path}: made by another process meanwhile") from None
            os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)
    log.warning("created a new pseudonymisation key %s (id %s): back it up; without it pseudonyms "
                "cannot be re-identified", path, key_id(key))
    return key


def _process_started() -> float:
    try:
        import psutil
    except ImportError:
        return _IMPORTED_AT
    return float(psutil.Process().create_time())


def remove_stray_new_keys(path: Path) -> list[Path]:
    """Delete the ``<key file>.<pid>.new`` files a crash during :func:`_create_key` left next to ``path``: only
    names of exactly that pattern, last written before this process started (a key being made now by another
    process is left alone). Returns what was deleted; each is logged (the name, never the content)."""
    path = Path(path)
    pattern = re.compile(re.escape(path.name) + r"\.(\d+)\.new")
    started = _process_started()
    removed: list[Path] = []
    try:
        entries = list(path.parent.iterdir())
    except OSError:  # no folder yet (a new key), or not listable: nothing to clean
        return removed
    for entry in entries:
        match = pattern.fullmatch(entry.name)
        if match is None or int(match.group(1)) == os.getpid():
            continue
        try:
            info = entry.lstat()
            if not stat.S_ISREG(info.st_mode) or info.st_mtime >= started:
                continue
            entry.unlink()
        except FileNotFoundError:
            continue
        except OSError as exc:
            log.warning("%s: a key left half-made by an interrupted start; cannot delete it: %s", entry,
                        exc.strerror or exc)
            continue
        removed.append(entry)
        log.warning("%s: deleted a key left half-made by an interrupted start (it was never used)", entry)
    return removed


def _fsync_dir(folder: Path) -> None:
    """Make a rename or link in ``folder`` durable (where the file system can: some cannot sync a folder)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def key_id(key: bytes) -> str:
    """A short public fingerprint of the key, so central can tell key generations apart."""
    return hashlib.sha256(b"edugate-key-id" + key).hexdigest()[:8]


class Pseudonymizer:
    """Keyed pseudonyms. ``rule``: the school's card identity rule (None: cards as read), for :meth:`card`."""

    def __init__(self, key: bytes, rule: CardIdentityRule | None = None) -> None:
        self._key = key
        self.key_id = key_id(key)
        self.rule = rule

    def __call__(self, raw: bytes) -> str:
        return PREFIX + hmac.new(self._key, raw, hashlib.sha256).hexdigest()[:32]

    def card(self, raw: bytes, technology: str, reader: ReaderIdentity | None = None) -> str:
        """The pseudonym of a card read by a reader of ``technology`` (with its override), under the rule."""
        return self(canonical(raw, technology, self.rule, reader))

    def __repr__(self) -> str:  # never show the key
        return f"Pseudonymizer(key_id={self.key_id})"


def normalise_uid(text: str) -> bytes:
    """A UID as people write it ('04:A2:2B:1C', '04a22b1c', '0x04A22B1C') -> bytes."""
    cleaned = text.strip().lower().removeprefix("0x").replace(":", "").replace("-", "").replace(" ", "")
    try:
        return bytes.fromhex(cleaned)
    except ValueError:
        raise ValueError(f"not a card UID in hex: {text!r}") from None


# ---------------------------------------------------------------- the card rule recorded next to the key


RULE_SUFFIX = ".card-rule"


def rule_record_path(secret_file: Path) -> Path:
    """Where the card identity rule of the pseudonyms made with ``secret_file`` is recorded."""
    secret_file = Path(secret_file)
    return secret_file.with_name(secret_file.name + RULE_SUFFIX)


def read_rule_record(secret_file: Path) -> tuple[int, str] | None:
    """(version, rule text) recorded next to the key, or None when nothing is recorded."""
    path = rule_record_path(secret_file)
    try:
        doc = json.loads(path.read_text())
        return int(doc["version"]), str(doc["rule"])
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise KeyFileError(f"{path}: not a card rule record ({exc}); it says which rule this school's "
                           "pseudonyms were made under: restore it from the backup of the key") from None


def _write_rule_record(secret_file: Path, rule: CardIdentityRule | None, key: bytes,
                       replaced: tuple[int, str] | None) -> None:
    path = rule_record_path(secret_file)
    doc: dict[str, object] = {"version": rule_version(rule), "rule": rule_text(rule), "key_id": key_id(key),
                              "since": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}
    if rule is not None:
        doc["card_identity"] = rule.model_dump(mode="json", exclude={"replaces"})
    if replaced is not None:
        doc["replaced"] = {"version": replaced[0], "rule": replaced[1]}
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w") as fh:  # durable before it counts: a power cut leaves the old record or the new one
        fh.write(json.dumps(doc, indent=2) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def open_school_key(secret_file: Path, rule: CardIdentityRule | None) -> Pseudonymizer:
    """The school's pseudonymizer, once the config's card ``rule`` agrees with the rule recorded next to the key.

    A new key records the rule. A key without a record made its pseudonyms as read (version 0). A rule
    other than the recorded one raises :class:`CardRuleError`, unless ``rule.replaces`` names the recorded
    version: then the new rule is recorded (and logged) and pseudonyms change from here on.
    """
    secret_file = Path(secret_file)
    remove_stray_new_keys(secret_file)
    if not secret_file.exists():
        # A new key: no pseudonym was made with it yet. Record its rule first, then create the key, so that a
        # crash in between leaves a record without a key (redone on the next start), never a key without a
        # record, which would count as a key from before rules (version 0) and refuse this rule.
        key = secrets.token_bytes(KEY_BYTES)
        secret_file.parent.mkdir(parents=True, exist_ok=True)
        _write_rule_record(secret_file, rule, key, None)
        return Pseudonymizer(_create_key(secret_file, key), rule)
    key = load_or_create_key(secret_file)
    recorded = read_rule_record(secret_file)
    if recorded is None:
        recorded = (AS_READ_VERSION, AS_READ_TEXT)
    wanted = (rule_version(rule), rule_text(rule))
    record = rule_record_path(secret_file)
    if recorded == wanted:
        if not record.exists():
            _write_rule_record(secret_file, rule, key, None)
    elif recorded[0] == wanted[0]:
        raise CardRuleError(f"{secret_file}: card identity rule version {wanted[0]} is recorded as "
                            f"({recorded[1]}) in {record}, but the config gives ({wanted[1]}) under the same "
                            f"number: a changed rule needs a new version (and replaces: {recorded[0]})")
    elif rule is not None and rule.replaces == recorded[0]:
        _write_rule_record(secret_file, rule, key, recorded)
        log.warning("card identity rule changed from version %d (%s) to %s, as privacy.card_identity.replaces "
                    "says: cards now get new pseudonyms at the readers whose reads the rule maps differently "
                    "(push new allow-lists; see docs/privacy.md)", recorded[0], recorded[1], describe(rule))
    elif rule is None:
        raise CardRuleError(f"{secret_file}: this school's pseudonyms are made under card identity rule version "
                            f"{recorded[0]} ({recorded[1]}, recorded in {record}), but the config has no "
                            "privacy.card_identity (cards as read): add the school's rule to the config. Going "
                            f"back to reading cards as read changes pseudonyms: only then delete {record}")
    else:
        raise CardRuleError(f"{secret_file}: this school's pseudonyms are made under card identity rule version "
                            f"{recorded[0]} ({recorded[1]}, recorded in {record}); the config gives "
                            f"{describe(rule)}. A different rule gives cards new pseudonyms: allow-lists, "
                            "attendance history and re-identification change with it (docs/privacy.md). If that "
                            f"is intended, set privacy.card_identity.replaces: {recorded[0]} on every gateway of "
                            "the school")
    return Pseudonymizer(key, rule)


def recorded_rule(secret_file: Path) -> CardIdentityRule | None:
    """The card identity rule recorded next to the key (None: as read, or nothing recorded)."""
    path = rule_record_path(secret_file)
    if read_rule_record(secret_file) is None:
        return None
    doc = json.loads(path.read_text())
    return CardIdentityRule.model_validate(doc["card_identity"]) if "card_identity" in doc else None


def card_pseudonym(p: Pseudonymizer, text: str) -> str:
    """The pseudonym of a card number as written in a roster: ``KIND:VALUE`` (as ``edugate card-check`` takes,
    e.g. ``em4100:0A1B2C3D4E``, ``nfc:04:A2:2B:1C``, ``printed:044,15694``), mapped under ``p``'s rule; or bare hex
    taken as read, which is right only while the school has no card identity rule."""
    kind = text.partition(":")[0].strip().lower()
    if kind in READ_KINDS:
        read = parse_read(text)
        return p.card(read.raw, read.technology)
    if p.rule is not None:
        raise ValueError(f"under the school's card identity rule ({p.rule.describe()}) a card number needs its kind: "
                         "KIND:VALUE with KIND one of " + ", ".join(READ_KINDS))
    return p(normalise_uid(text))
