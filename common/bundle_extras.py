"""What a first-boot bundle holds beyond the identity (issue 19): the school's key and the pages' first admin.

``edugate provision batch --school-keys DIR --admin NAME`` adds, per gateway bundle:

* ``school.key``: the school's pseudonymisation key (the same for every gateway of a school, so a card gives one
  pseudonym everywhere), taken from ``DIR/<school>.key``, made there on first use (0600);
* ``school.key.card-rule``: the card identity rule the school's pseudonyms are made under, recorded next to the
  key in ``DIR`` (``DIR/<school>.key.card-rule``, as a gateway records it next to its key: docs/privacy.md): the
  rule of the bundle's ``edugate.yaml`` (``privacy.card_identity``; none: cards as read). A school key already in
  ``DIR`` under another rule is refused, as a gateway would refuse it. ``edugate firstboot`` installs the record
  next to the key, so the gateway starts under the rule without ``replaces``;
* ``web-users.json``: one admin user ``NAME`` with a random password (only its scrypt hash is in the bundle);
  the passwords are listed in ``<out>/admin-passwords.csv`` (0600) for IT staff to hand over, then delete.
"""

from __future__ import annotations

import csv
import io
import os
import secrets
from pathlib import Path

import yaml

from edugate.common.card_identity import CardIdentityRule
from edugate.common.privacy import open_school_key, rule_record_path
from edugate.common.web.auth import UserStore

PASSWORDS_FILE = "admin-passwords.csv"


def add_school_key(bundle: Path, school: str, keys_dir: Path) -> Path:
    """Copy the school's key (``keys_dir/<school>.key``, created if missing) into the bundle as ``school.key``, and
    the card identity rule recorded with it as ``school.key.card-rule``. The rule is the bundle config's: a new key
    is recorded under it; a key recorded under another rule raises :class:`edugate.common.privacy.CardRuleError`
    (unless the rule's ``replaces`` names the recorded version: then the record changes, as on a gateway)."""
    source = keys_dir / f"{school}.key"
    open_school_key(source, bundle_rule(bundle / "edugate.yaml"))  # records a new key's rule, checks an old one's
    key = _write_private(bundle / "school.key", source.read_text(encoding="utf-8"))
    _write_private(rule_record_path(key), rule_record_path(source).read_text(encoding="utf-8"))
    return key


def bundle_rule(config: Path) -> CardIdentityRule | None:
    """The ``privacy.card_identity`` of a bundle's config (None: cards as read)."""
    doc = yaml.safe_load(config.read_text(encoding="utf-8")) or {}
    rule = (doc.get("privacy") or {}).get("card_identity") if isinstance(doc, dict) else None
    return None if rule is None else CardIdentityRule.model_validate(rule)


def add_admin(bundle: Path, name: str) -> str:
    """Add an admin ``name`` with a new random password to the bundle's ``web-users.json``; return the password."""
    password = secrets.token_urlsafe(12)  # 16 characters, 96 bits
    UserStore(bundle / "web-users.json").add(name, "admin", password, replace=True)
    config = bundle / "edugate.yaml"
    text = config.read_text(encoding="utf-8")
    if "\nweb:" not in text:
        config.write_text(text + "web:\n  enabled: true  # the pages; set host: to the gateway's LAN address\n",
                          encoding="utf-8")
    return password


def write_passwords(out: Path, rows: list[tuple[str, str, str, str]]) -> Path:
    """``<out>/admin-passwords.csv`` (0600): school, gateway, user, password; one row per bundle."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["school", "gateway", "user", "password"])
    writer.writerows(rows)
    return _write_private(out / PASSWORDS_FILE, buffer.getvalue())


def _write_private(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.chmod(path, 0o600)
    return path
