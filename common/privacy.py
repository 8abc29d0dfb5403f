"""Pseudonyms for personal identifiers (card UIDs, patron barcodes).

A raw identifier never leaves the driver that read it: it becomes
``HMAC-SHA256(school key, identifier)``, truncated to 128 bits and written as
``p1-<32 hex>``. The key is a per-school secret in a file readable only by the
gateway (mode 0600), generated on first run. Whoever holds the key can
re-identify a pseudonym by computing the pseudonyms of a known roster
(``edugate pseudonym``); nobody else can. See docs/privacy.md for rotation.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
import stat
from pathlib import Path

log = logging.getLogger(__name__)

KEY_BYTES = 32
PREFIX = "p1-"  # version of the scheme: a future change of algorithm gets a new prefix


class KeyFileError(OSError):
    pass


def load_or_create_key(path: Path) -> bytes:
    """Read the school key, creating it (0600, random 256 bits) if the file does not exist."""
    path = Path(path)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        key = secrets.token_bytes(KEY_BYTES)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(key.hex() + "\n")
        log.warning("created a new pseudonymisation key %s (id %s): back it up; without it pseudonyms "
                    "cannot be re-identified", path, key_id(key))
        return key
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise KeyFileError(f"{path}: the pseudonymisation key must be readable by its owner only "
                           f"(mode is {mode:04o}; run: chmod 600 {path})")
    text = path.read_text().strip()
    try:
        key = bytes.fromhex(text)
    except ValueError:
        raise KeyFileError(f"{path}: not a hex-encoded key") from None
    if len(key) < 16:
        raise KeyFileError(f"{path}: key too short ({len(key)} bytes; at least 16)")
    return key


def key_id(key: bytes) -> str:
    """A short public fingerprint of the key, so central can tell key generations apart."""
    return hashlib.sha256(b"edugate-key-id" + key).hexdigest()[:8]


class Pseudonymizer:
    def __init__(self, key: bytes) -> None:
        self._key = key
        self.key_id = key_id(key)

    def __call__(self, raw: bytes) -> str:
        return PREFIX + hmac.new(self._key, raw, hashlib.sha256).hexdigest()[:32]

    def __repr__(self) -> str:  # never show the key
        return f"Pseudonymizer(key_id={self.key_id})"


def normalise_uid(text: str) -> bytes:
    """A UID as people write it ('04:A2:2B:1C', '04a22b1c', '0x04A22B1C') -> bytes."""
    cleaned = text.strip().lower().removeprefix("0x").replace(":", "").replace("-", "").replace(" ", "")
    try:
        return bytes.fromhex(cleaned)
    except ValueError:
        raise ValueError(f"not a card UID in hex: {text!r}") from None
