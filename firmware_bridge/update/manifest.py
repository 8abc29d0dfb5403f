"""The firmware manifest: which board, which version, how big, which SHA-256, and whether it may downgrade.

Central signs the manifest's exact bytes with its Ed25519 key; the gateway checks the signature, the image's
size and SHA-256, the board and the version *before it sends anything*, and the node checks again before it
switches slots. A signed manifest is stored beside its image as ``<image>.manifest.json``::

    {"manifest": "<the signed JSON text>", "signature": "<128 hex digits>"}
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key, load_pem_public_key

FORMAT = 1
_VERSION = re.compile(r"^\d{1,9}(\.\d{1,9}){0,3}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")

RefusalReason = Literal["bad-manifest", "bad-signature", "bad-hash", "truncated", "wrong-board", "downgrade",
                        "too-large"]


class UpdateRefused(Exception):
    """An update that must not be sent: ``reason`` is a short code for ``cmd-result``, the message says why."""

    def __init__(self, reason: RefusalReason, message: str) -> None:
        super().__init__(message)
        self.reason: RefusalReason = reason


def parse_version(text: str) -> tuple[int, ...]:
    if not _VERSION.match(text):
        raise UpdateRefused("bad-manifest", f"version {text!r} is not dotted numbers like 1.4.2")
    return tuple(int(p) for p in text.split("."))


@dataclass(frozen=True, slots=True)
class Manifest:
    board: str
    version: str
    size: int
    sha256: str
    allow_downgrade: bool = False

    def to_bytes(self) -> bytes:
        doc = {"format": FORMAT, "board": self.board, "version": self.version, "size": self.size,
               "sha256": self.sha256, "allow_downgrade": self.allow_downgrade}
        return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode("utf-8")

    @classmethod
    def from_bytes(cls, raw: bytes) -> Manifest:
        try:
            doc: Any = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise UpdateRefused("bad-manifest", f"manifest is not JSON: {exc}") from None
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise UpdateRefused("bad-manifest", f"manifest is not a format-{FORMAT} object")
        board, version, size, sha = doc.get("board"), doc.get("version"), doc.get("size"), doc.get("sha256")
        allow = doc.get("allow_downgrade", False)
        if not isinstance(board, str) or not board:
            raise UpdateRefused("bad-manifest", "manifest names no board")
        if not isinstance(version, str):
            raise UpdateRefused("bad-manifest", "manifest has no version")
        parse_version(version)
        if not isinstance(size, int) or isinstance(size, bool) or not 0 < size < 1 << 32:
            raise UpdateRefused("bad-manifest", f"manifest size {size!r} is not a positive byte count")
        if not isinstance(sha, str) or not _SHA256.match(sha):
            raise UpdateRefused("bad-manifest", "manifest sha256 is not 64 lower-case hex digits")
        if not isinstance(allow, bool):
            raise UpdateRefused("bad-manifest", "manifest allow_downgrade is not true or false")
        return cls(board, version, size, sha, allow)


@dataclass(frozen=True, slots=True)
class SignedManifest:
    manifest_bytes: bytes
    signature: bytes

    @property
    def manifest(self) -> Manifest:
        return Manifest.from_bytes(self.manifest_bytes)

    def to_json(self) -> str:
        return json.dumps({"manifest": self.manifest_bytes.decode("utf-8"), "signature": self.signature.hex()},
                          indent=1) + "\n"

    @classmethod
    def from_json(cls, text: str) -> SignedManifest:
        try:
            doc = json.loads(text)
            return cls(doc["manifest"].encode("utf-8"), bytes.fromhex(doc["signature"]))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise UpdateRefused("bad-manifest", f"not a signed manifest file: {exc}") from None


def manifest_path(image: Path) -> Path:
    return image.with_name(image.name + ".manifest.json")


def sign_image(image: bytes, board: str, version: str, key: Ed25519PrivateKey, *,
               allow_downgrade: bool = False) -> SignedManifest:
    """Central: the signed manifest of ``image``."""
    parse_version(version)
    manifest = Manifest(board, version, len(image), hashlib.sha256(image).hexdigest(), allow_downgrade)
    raw = manifest.to_bytes()
    return SignedManifest(raw, key.sign(raw))


def load_private_key(path: Path) -> Ed25519PrivateKey:
    key = load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path} is not an Ed25519 private key")
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    key = load_pem_public_key(path.read_bytes())
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError(f"{path} is not an Ed25519 public key")
    return key


def check_update(signed: SignedManifest, image: bytes, key: Ed25519PublicKey, *, board: str,
                 running: str) -> Manifest:
    """Gateway, before sending anything: the manifest if ``image`` may go to a ``board`` running ``running``.

    Raises :class:`UpdateRefused` for a bad signature, a tampered or truncated image, a wrong board, or a
    downgrade the signed manifest does not allow."""
    try:
        key.verify(signed.signature, signed.manifest_bytes)
    except InvalidSignature:
        raise UpdateRefused("bad-signature", "the manifest's signature does not verify with central's key "
                                             "(tampered manifest, or signed by another key)") from None
    m = signed.manifest
    if len(image) < m.size:
        raise UpdateRefused("truncated", f"image is {len(image)} bytes, the manifest says {m.size} (truncated)")
    if len(image) > m.size:
        raise UpdateRefused("bad-hash", f"image is {len(image)} bytes, the manifest says {m.size}")
    if hashlib.sha256(image).hexdigest() != m.sha256:
        raise UpdateRefused("bad-hash", "the image's SHA-256 does not match the signed manifest (tampered image)")
    if m.board != board:
        raise UpdateRefused("wrong-board", f"image is for board {m.board!r}, the kit is a {board!r}")
    try:
        running_v: tuple[int, ...] | None = parse_version(running)
    except UpdateRefused:
        running_v = None
    if running_v is not None and parse_version(m.version) <= running_v and not m.allow_downgrade:
        raise UpdateRefused("downgrade", f"image version {m.version} is not newer than the running {running} "
                                         "(a downgrade needs allow_downgrade in the signed manifest)")
    return m
