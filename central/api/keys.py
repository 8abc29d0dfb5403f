"""API keys per consumer, kept hashed in one JSON file (``api.keys_file``), edited with ``edugate api-key``.

A key is ``eg_`` + 32 random bytes (URL-safe base64), shown once when added; the file keeps only its SHA-256
(a random 256-bit key needs no slow hash) and the consumer's name. Files are written atomically, mode 0600.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import os
import re
import secrets
import tempfile
from pathlib import Path
from typing import Any

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class KeyFileError(ValueError):
    """The keys file cannot be read or a name is wrong; the message says which file and why."""


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def load(path: Path) -> dict[str, dict[str, Any]]:
    """Consumer name -> {sha256, created}; no file: no consumers."""
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise KeyFileError(f"{path}: not a keys file: {exc}") from None
    keys = doc.get("keys") if isinstance(doc, dict) else None
    if not isinstance(keys, dict) or not all(isinstance(v, dict) and isinstance(v.get("sha256"), str)
                                             for v in keys.values()):
        raise KeyFileError(f"{path}: expected {{\"keys\": {{name: {{\"sha256\": ...}}}}}}")
    return keys


def _save(path: Path, keys: dict[str, dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".api-keys-")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump({"keys": keys}, f, indent=2, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def add(path: Path, name: str) -> str:
    """A new key for consumer ``name`` (replacing its old one); returns the key, which is stored only hashed."""
    if not NAME_RE.fullmatch(name):
        raise KeyFileError(f"consumer name {name!r}: 1-64 letters, digits, '.', '_', '-'")
    keys = load(path)
    key = "eg_" + secrets.token_urlsafe(32)
    keys[name] = {"sha256": digest(key), "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}
    _save(path, keys)
    return key


def remove(path: Path, name: str) -> bool:
    keys = load(path)
    if keys.pop(name, None) is None:
        return False
    _save(path, keys)
    return True


def consumer(keys: dict[str, dict[str, Any]], key: str) -> str | None:
    """The consumer a presented key belongs to (constant-time comparison), or None."""
    presented = digest(key)
    found = None
    for name, entry in keys.items():
        if hmac.compare_digest(entry["sha256"], presented):
            found = name
    return found
