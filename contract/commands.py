"""The command envelope: what central signs and a gateway checks (docs/mqtt-contract.md section 9).

A command is published on ``edu/v1/{school}/{gateway}/cmd/{name}`` as a JSON envelope signed with Ed25519.
The signature covers the canonical JSON of every envelope field except ``sig``::

    json.dumps(envelope_without_sig, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()

This module holds both ends' shared part: the envelope model, the canonical form, signing, key loading and
the checks that need no gateway state (decode, shape, signature). The gateway's side (lifetime, clock, replay,
registry) is ``edugate.gateway.downlink.commands``; central's tools are ``edugate.central.command_tools``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import time
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Final, NoReturn

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edugate.contract.ids import COMMAND_NAME_PATTERN, Id

NAME_PATTERN: Final = COMMAND_NAME_PATTERN
"""Command names: dotted lower-case words, e.g. ``ping``, ``device.command``, ``access.allowlist.set``."""
COMMAND_ID_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$"
"""Command ids: a UUID or ULID in practice; at most 128 characters."""
NAME_RE: Final = re.compile(NAME_PATTERN)
MAX_PAYLOAD_BYTES: Final = 64 * 1024
MAX_TIMESTAMP_MS: Final = 2**53  # stays exact in every JSON implementation
ENVELOPE_FIELDS: Final = ("id", "name", "target", "issued_at", "expires_at", "args", "sig")


# ---------------------------------------------------------------- errors


class CommandRejected(Exception):
    """A command refused before it ran: ``code`` for machines, ``reason`` for people."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class CommandKeyError(Exception):
    """A key file that cannot be used (unreadable, not PEM, not Ed25519...). The message names the file."""


# ---------------------------------------------------------------- canonical form, keys, signing


def canonical_json(obj: Mapping[str, Any]) -> bytes:
    """Sorted keys, no spaces, UTF-8: the bytes both sides sign and verify."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def signed_bytes(envelope: Mapping[str, Any]) -> bytes:
    """What ``sig`` signs: the canonical JSON of every envelope field except ``sig``."""
    return canonical_json({k: v for k, v in envelope.items() if k != "sig"})


def fingerprint(key: Ed25519PublicKey | Ed25519PrivateKey) -> str:
    """A short, stable name for a key pair (``ed25519:`` + 16 hex digits of the SHA-256 of the public key)."""
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return "ed25519:" + hashlib.sha256(raw).hexdigest()[:16]


def load_public_key(path: Path) -> Ed25519PublicKey:
    """An Ed25519 public key from a PEM file, or :class:`CommandKeyError` saying what is wrong with it."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CommandKeyError(f"{path}: cannot read the central public key: {exc.strerror}") from None
    if b"PRIVATE KEY" in data:
        raise CommandKeyError(f"{path}: this is a private key; a gateway needs only the public key (the "
                                 ".pub.pem file of 'edugate keygen'). Keep the private key on the signing host.")
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, UnsupportedAlgorithm):
        raise CommandKeyError(f"{path}: not a PEM public key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise CommandKeyError(f"{path}: {type(key).__name__.removeprefix('_')} is not Ed25519; EduGate "
                                 "commands are signed with Ed25519 keys ('edugate keygen')")
    return key


def load_public_keys(paths: Iterable[Path]) -> dict[str, Ed25519PublicKey]:
    """Fingerprint -> key for every file (the same key listed twice counts once)."""
    keys: dict[str, Ed25519PublicKey] = {}
    for path in paths:
        key = load_public_key(path)
        keys[fingerprint(key)] = key
    return keys


def load_private_key(path: Path) -> Ed25519PrivateKey:
    """Central's Ed25519 signing key from a PEM file (unencrypted, as ``edugate keygen`` writes it)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CommandKeyError(f"{path}: cannot read the signing key: {exc.strerror}") from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise CommandKeyError(f"{path}: the key is protected by a passphrase; that is not supported yet") from None
    except (ValueError, UnsupportedAlgorithm):
        hint = " (that is the public key; sign with the private .pem)" if b"PUBLIC KEY" in data else ""
        raise CommandKeyError(f"{path}: not a PEM private key{hint}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise CommandKeyError(f"{path}: not an Ed25519 key; create one with 'edugate keygen'")
    return key


def sign_command(key: Ed25519PrivateKey, *, school: str, gateway: str, name: str,
                 args: Mapping[str, Any] | None = None, ttl_s: float = 300, issued_at_ms: int | None = None,
                 command_id: str | None = None) -> dict[str, Any]:
    """A signed envelope, ready to publish on ``edu/v1/{school}/{gateway}/cmd/{name}``.

    Raises ``ValueError`` (saying which field) when the result would not pass a gateway's envelope check.
    """
    issued = time.time_ns() // 1_000_000 if issued_at_ms is None else issued_at_ms
    envelope: dict[str, Any] = {
        "id": command_id or str(uuid.uuid4()),
        "name": name,
        "target": {"school": school, "gateway": gateway},
        "issued_at": issued,
        "expires_at": issued + round(ttl_s * 1000),
        "args": dict(args or {}),
    }
    try:
        Envelope.model_validate(envelope | {"sig": ""})
        payload = signed_bytes(envelope)
    except ValidationError as exc:
        raise ValueError(format_errors(exc)) from None
    except UnicodeEncodeError:
        raise ValueError("args hold a string that is not valid Unicode") from None
    envelope["sig"] = base64.b64encode(key.sign(payload)).decode("ascii")
    return envelope


# ---------------------------------------------------------------- envelope


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class Target(_Strict):
    school: Id
    gateway: Id


class Envelope(_Strict):
    """The shape of a command; the signature, times and arguments are checked by the gateway's ``Downlink``."""

    id: str = Field(pattern=COMMAND_ID_PATTERN)
    name: str = Field(max_length=64, pattern=NAME_PATTERN)
    target: Target
    issued_at: int = Field(ge=0, le=MAX_TIMESTAMP_MS)
    expires_at: int = Field(ge=0, le=MAX_TIMESTAMP_MS)
    args: dict[str, Any]
    sig: str = Field(max_length=200)


def format_path(loc: Iterable[str | int]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def format_errors(exc: ValidationError, prefix: tuple[str, ...] = (), limit: int = 5) -> str:
    """``args.device: Field required; args.args: Input should be a valid dictionary`` (no input values)."""
    parts = []
    errors = exc.errors(include_input=False, include_url=False)
    for err in errors[:limit]:
        msg = "unknown field" if err["type"] == "extra_forbidden" else err["msg"].removeprefix("Value error, ")
        where = format_path((*prefix, *err["loc"]))
        parts.append(f"{where}: {msg}" if where else msg)
    if len(errors) > limit:
        parts.append(f"and {len(errors) - limit} more")
    return "; ".join(parts)


def _reject_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not JSON")


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise ValueError(f"duplicate key {key!r}")
        obj[key] = value
    return obj


def decode_envelope(data: bytes) -> dict[str, Any]:
    """Payload bytes -> the envelope as a dict, or :class:`CommandRejected` (``too_large``, ``bad_json``)."""
    if len(data) > MAX_PAYLOAD_BYTES:
        raise CommandRejected("too_large", f"payload is {len(data)} bytes; at most {MAX_PAYLOAD_BYTES}")
    try:
        obj = json.loads(data, object_pairs_hook=_no_duplicate_keys, parse_constant=_reject_constant)
    except UnicodeDecodeError:
        raise CommandRejected("bad_json", "bad JSON: the payload is not UTF-8") from None
    except RecursionError:  # "[[[[...": small enough, but deeper than the parser's recursion limit
        raise CommandRejected("bad_json", "bad JSON: arrays or objects nested too deeply") from None
    except ValueError as exc:
        raise CommandRejected("bad_json", f"bad JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise CommandRejected("bad_json", f"bad JSON: the envelope must be an object, not {type(obj).__name__}")
    try:
        signed_bytes(obj)
    except UnicodeEncodeError:
        raise CommandRejected("bad_json", "bad JSON: a string holds a lone surrogate (not valid Unicode)") from None
    return obj


def check_shape(obj: Mapping[str, Any]) -> Envelope:
    """The envelope's fields and types, or :class:`CommandRejected` (``missing_field``, ``bad_envelope``)."""
    missing = [name for name in ENVELOPE_FIELDS if name not in obj]
    if missing:
        listed = ", ".join(repr(m) for m in missing)
        raise CommandRejected("missing_field", f"missing field{'s' if len(missing) > 1 else ''} {listed}")
    try:
        return Envelope.model_validate(obj)
    except ValidationError as exc:
        unknown = [str(e["loc"][0]) for e in exc.errors() if e["type"] == "extra_forbidden" and len(e["loc"]) == 1]
        if unknown:
            raise CommandRejected("bad_envelope", f"unknown field {unknown[0]!r} (an envelope has exactly: "
                                  f"{', '.join(ENVELOPE_FIELDS)})") from None
        raise CommandRejected("bad_envelope", format_errors(exc)) from None


def check_signature(obj: Mapping[str, Any], keys: Mapping[str, Ed25519PublicKey]) -> str:
    """The fingerprint of the trusted key that signed ``obj``, or :class:`CommandRejected` (``bad_signature``)."""
    try:
        sig = base64.b64decode(obj["sig"], validate=True)
    except ValueError:
        sig = b""
    if len(sig) != 64:
        raise CommandRejected("bad_signature", "bad signature: 'sig' is not the base64 of a 64-byte Ed25519 "
                              "signature")
    payload = signed_bytes(obj)
    for name, key in keys.items():
        try:
            key.verify(sig, payload)
        except InvalidSignature:
            continue
        return name
    raise CommandRejected("bad_signature", f"bad signature: not signed by any of the {len(keys)} central key(s) "
                          "this gateway trusts (forged, altered, or signed with a key not in downlink.public_keys)")

