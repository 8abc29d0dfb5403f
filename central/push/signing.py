"""How a delivery is signed, and how a receiver checks it (docs/operations-centre.md, push adapter).

Header ``X-EduGate-Signature: t=<unix seconds>,sha256=<hex>`` where ``hex`` is HMAC-SHA256 with the shared
secret over ``<t>.`` followed by the exact body bytes. The timestamp lets a receiver refuse old replays (a
retry is signed afresh; its body and its ``Idempotency-Key`` stay the same).
"""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

SIGNATURE_HEADER = "X-EduGate-Signature"
KEY_HEADER = "Idempotency-Key"
MIN_SECRET_CHARS = 32


class SecretError(ValueError):
    """The secret file is missing, unreadable or too short; the message names the file."""


def load_secret(path: Path) -> bytes:
    try:
        secret = path.read_text().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise SecretError(f"push.secret_file {path}: cannot read it: {exc}") from None
    if len(secret) < MIN_SECRET_CHARS:
        raise SecretError(f"push.secret_file {path}: the secret has {len(secret)} characters, at least "
                          f"{MIN_SECRET_CHARS} are needed (make one with 'openssl rand -hex 32')")
    return secret.encode()


def signature(secret: bytes, timestamp: int, body: bytes) -> str:
    """The header's value for ``body`` sent at ``timestamp``."""
    mac = hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},sha256={mac}"


def verify(secret: bytes, header: str, body: bytes, now: float, max_age_s: float = 300.0) -> bool:
    """A receiver's check: the header is well formed, fresh (within ``max_age_s`` of ``now``) and matches."""
    try:
        fields = dict(part.split("=", 1) for part in header.split(","))
        timestamp = int(fields["t"])
        presented = fields["sha256"]
    except (ValueError, KeyError):
        return False
    if abs(now - timestamp) > max_age_s:
        return False
    return hmac.compare_digest(signature(secret, timestamp, body), f"t={timestamp},sha256={presented}")
