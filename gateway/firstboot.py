"""First boot from a bundle on the SD card's boot partition (issue 19, "flash a tray of gateways").

IT staff copy one bundle of ``edugate provision batch`` onto each card's boot partition as ``edugate/``
(the FAT partition any laptop can write: ``/boot/firmware/edugate/`` on the running Pi). On start,
``edugate firstboot CONFIG`` (run as root before the gateway: the unit's ``ExecStartPre=+``):

1. checks the bundle: its ``edugate.yaml`` validates; ``gateway.pem`` is issued by ``ca.pem`` for this
   config's ``school/gateway`` and matches ``gateway.key``; ``school.key`` and ``web-users.json`` (optional)
   are readable; ``school.key.card-rule`` (the card identity rule recorded with the school key) belongs to
   that key and agrees with the config's ``privacy.card_identity``. Any problem: nothing is installed, the
   bundle stays, the message says what and where;
2. installs each file where the config says (``uplink.tls.*``, ``privacy.secret_file`` and the rule record
   next to it, the pages' users file), written atomically: keys 0600, certificates 0644, the config 0640,
   owned by the service user;
   the config last, so an interrupted first boot is simply done again;
3. records what it did (``firstboot.json`` next to the outbox: no secrets; the bundle's SHA-256, so that a
   bundle which could not be removed is not applied again over later changes) and removes the bundle from
   the boot partition, where anyone holding the card could read the key.

A school key already on the gateway that differs from the bundle's is never overwritten (every pseudonym
would change): the first boot stops and says so. Users already in the users file are kept (the bundle's are
added or replaced).
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import os
import pwd
from dataclasses import dataclass, field
from pathlib import Path

from edugate.common.privacy import rule_record_path
from edugate.gateway.config import ConfigError, GatewayConfigBase, load_config

DEFAULT_BOOT_DIR = Path("/boot/firmware/edugate")
SERVICE_USER = "edugate"
CONFIG_NAME = "edugate.yaml"
BUNDLE_FILES = ("edugate.yaml", "gateway.key", "gateway.pem", "ca.pem", "school.key", "school.key.card-rule",
                "web-users.json", "acl.lines", "gateway.csr")
MARKER = "firstboot.json"


class FirstBootError(Exception):
    """The bundle cannot be applied; the message says what and where. Nothing was installed."""


@dataclass
class Applied:
    school: str
    gateway: str
    installed: list[str] = field(default_factory=list)
    removed: bool = False
    warning: str | None = None


@dataclass(frozen=True)
class _Owner:
    uid: int
    gid: int


def _owner(name: str | None) -> _Owner | None:
    if name is None or os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        return None
    return _Owner(entry.pw_uid, entry.pw_gid)


def _install(data: bytes, target: Path, mode: int, owner: _Owner | None) -> None:
    """Write ``data`` to ``target`` atomically with ``mode`` (and ``owner``), fsynced."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.firstboot")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
        os.fchmod(fd, mode)
        if owner is not None:
            os.fchown(fd, owner.uid, owner.gid)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, target)
    _fsync_dir(target.parent)


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _read(bundle: Path, name: str) -> bytes:
    try:
        return (bundle / name).read_bytes()
    except FileNotFoundError:
        if name == "gateway.pem" and (bundle / "gateway.csr").exists():
            raise FirstBootError(f"{bundle}: the bundle holds a certificate request (gateway.csr), not a "
                                 "certificate: sign it on central ('edugate provision sign') and add gateway.pem"
                                 ) from None
        raise FirstBootError(f"{bundle / name}: missing from the bundle (make it with 'edugate provision "
                             "batch')") from None
    except OSError as exc:
        raise FirstBootError(f"{bundle / name}: cannot read ({exc.strerror or exc})") from None


def _check_identity(bundle: Path, cfg: GatewayConfigBase, cert_pem: bytes, key_pem: bytes, ca_pem: bytes) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    from edugate.common.provisioning import common_name, gateway_identity

    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
        key = serialization.load_pem_private_key(key_pem, password=None)
        ca = x509.load_pem_x509_certificate(ca_pem)
    except ValueError as exc:
        raise FirstBootError(f"{bundle}: gateway.pem, gateway.key or ca.pem is not PEM ({exc})") from None
    wanted = gateway_identity(cfg.school, cfg.gateway)
    if common_name(cert.subject) != wanted:
        raise FirstBootError(f"{bundle / 'gateway.pem'}: issued for {common_name(cert.subject)!r}, but the "
                             f"bundle's edugate.yaml is {wanted!r}: the files of two bundles were mixed")
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    if cert.public_key().public_bytes(serialization.Encoding.DER, public) != \
            key.public_key().public_bytes(serialization.Encoding.DER, public):
        raise FirstBootError(f"{bundle / 'gateway.key'}: not the key of gateway.pem: the files of two bundles "
                             "were mixed")
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError) as exc:
        raise FirstBootError(f"{bundle / 'gateway.pem'}: not issued by the bundle's ca.pem ({exc})") from None
    now = datetime.datetime.now(datetime.UTC)
    if cert.not_valid_after_utc < now:
        raise FirstBootError(f"{bundle / 'gateway.pem'}: expired on {cert.not_valid_after_utc:%Y-%m-%d}: "
                             "issue a new bundle")


def _school_key(bundle: Path, target: Path) -> bytes | None:
    if not (bundle / "school.key").exists():
        return None
    data = _read(bundle, "school.key")
    try:
        key = bytes.fromhex(data.decode("ascii").strip())
    except (UnicodeDecodeError, ValueError):
        raise FirstBootError(f"{bundle / 'school.key'}: not a hex-encoded key") from None
    if len(key) < 16:
        raise FirstBootError(f"{bundle / 'school.key'}: key too short ({len(key)} bytes; at least 16)")
    if target.exists():
        try:
            existing = bytes.fromhex(target.read_text(encoding="ascii").strip())
        except (OSError, UnicodeDecodeError, ValueError):
            existing = None
        if existing != key:
            raise FirstBootError(f"{target}: this gateway already has a different school key; installing the "
                                 "bundle's would give every card a new pseudonym. Keep the gateway's (delete "
                                 f"{bundle / 'school.key'}) or move {target} aside by hand, then start again")
    return data


def _rule_record(bundle: Path, school_key: bytes, cfg: GatewayConfigBase) -> bytes | None:
    """The bundle's ``school.key.card-rule``, once it is the record of the bundle's key and the config's rule
    may start under it (the same rule, or one that ``replaces`` it); None if the bundle has none (older
    bundles: the gateway then counts the key as from before rules, version 0)."""
    from edugate.common.card_identity import describe, rule_text, rule_version
    from edugate.common.privacy import KeyFileError, key_id, read_rule_record

    path = rule_record_path(bundle / "school.key")
    if not path.exists():
        return None
    data = _read(bundle, path.name)
    try:
        recorded = read_rule_record(bundle / "school.key")
        doc = json.loads(data)
    except (KeyFileError, ValueError) as exc:
        raise FirstBootError(str(exc)) from None
    assert recorded is not None
    if doc.get("key_id") != key_id(bytes.fromhex(school_key.decode("ascii").strip())):
        raise FirstBootError(f"{path}: the record of another school key (key id {doc.get('key_id')}): the files of "
                             "two bundles were mixed")
    rule = cfg.privacy.card_identity
    if recorded != (rule_version(rule), rule_text(rule)) and (rule is None or rule.replaces != recorded[0]):
        raise FirstBootError(f"{path}: the school's pseudonyms are made under card identity rule version "
                             f"{recorded[0]} ({recorded[1]}), but the bundle's {CONFIG_NAME} gives {describe(rule)}: "
                             "make the bundle again with the school's rule (edugate provision batch "
                             "--card-identity), or see docs/privacy.md before changing the rule")
    return data


def _users(bundle: Path, target: Path) -> bytes | None:
    from edugate.common.web.auth import UsersFileError, UserStore

    if not (bundle / "web-users.json").exists():
        return None
    try:
        users = UserStore(bundle / "web-users.json").users()
        existing = UserStore(target).users()
    except UsersFileError as exc:
        raise FirstBootError(str(exc)) from None
    merged = {**existing, **users}
    doc = {"version": 1, "users": {u.name: {"role": u.role, "password": u.password_hash}
                                   for u in sorted(merged.values(), key=lambda u: u.name)}}
    return (json.dumps(doc, indent=1) + "\n").encode()


def apply_bundle(config: Path, boot_dir: Path = DEFAULT_BOOT_DIR, user: str | None = SERVICE_USER) -> Applied | None:
    """Apply the bundle in ``boot_dir`` (None: there is none); :class:`FirstBootError` leaves everything as it was."""
    if not (boot_dir / CONFIG_NAME).exists():
        return None
    owner = _owner(user)
    config_text = _read(boot_dir, CONFIG_NAME)
    staged = config.with_name(f".{config.name}.firstboot-check")
    config.parent.mkdir(parents=True, exist_ok=True)
    try:
        staged.write_bytes(config_text)
        cfg = load_config(staged)  # validated, relative paths resolved as they will be at CONFIG's place
    except ConfigError as exc:
        problems = "\n".join(str(p).replace(str(staged), str(boot_dir / CONFIG_NAME)) for p in exc.problems)
        raise FirstBootError(f"{boot_dir / CONFIG_NAME}: not a valid gateway config:\n{problems}") from None
    finally:
        staged.unlink(missing_ok=True)
    tls = cfg.uplink.tls
    if tls is None or tls.cert_file is None or tls.key_file is None or tls.ca_file is None:
        raise FirstBootError(f"{boot_dir / CONFIG_NAME}: uplink.tls needs ca_file, cert_file and key_file (the "
                             "bundle's skeleton has them): where should the bundle's certificate go?")
    key, cert, ca = _read(boot_dir, "gateway.key"), _read(boot_dir, "gateway.pem"), _read(boot_dir, "ca.pem")
    _check_identity(boot_dir, cfg, cert, key, ca)
    data_dir = Path(cfg.storage.path).parent
    digest = _digest(boot_dir)
    if _applied_digest(data_dir / MARKER) == digest:  # applied before, but the bundle could not be removed
        result = Applied(cfg.school, cfg.gateway)
        result.removed, result.warning = _remove(boot_dir)
        return result
    secret_file = Path(cfg.privacy.secret_file)
    fresh_key = not secret_file.exists()  # a key already there keeps its own record (or none: version 0)
    school_key = _school_key(boot_dir, secret_file)
    rule_record = _rule_record(boot_dir, school_key, cfg) if school_key is not None else None
    users_path = cfg.web.users_path(data_dir)
    users = _users(boot_dir, users_path)

    plan: list[tuple[bytes, Path, int]] = [(key, Path(tls.key_file), 0o600), (cert, Path(tls.cert_file), 0o644),
                                           (ca, Path(tls.ca_file), 0o644)]
    if rule_record is not None and fresh_key:  # before the key: a key never lands without its record
        plan.append((rule_record, rule_record_path(secret_file), 0o640))
    if school_key is not None:
        plan.append((school_key, secret_file, 0o600))
    if users is not None:
        plan.append((users, users_path, 0o600))
    plan.append((config_text, config, 0o640))  # last: a config in place means the rest is there
    result = Applied(cfg.school, cfg.gateway)
    try:
        for data, target, mode in plan:
            _install(data, target, mode, owner)
            result.installed.append(str(target))
        marker = {"applied_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
                  "school": cfg.school, "gateway": cfg.gateway, "from": str(boot_dir), "installed": result.installed,
                  "bundle_sha256": digest}
        _install((json.dumps(marker, indent=1) + "\n").encode(), data_dir / MARKER, 0o640, owner)
    except OSError as exc:
        raise FirstBootError(f"cannot install the bundle: {exc.filename or ''}: {exc.strerror or exc} "
                             "(run 'edugate firstboot' as root); the bundle is left in place") from None
    result.removed, result.warning = _remove(boot_dir)
    return result


def _digest(boot_dir: Path) -> str:
    """SHA-256 over the bundle's files (names and contents): the same bundle seen again is not re-applied."""
    sha = hashlib.sha256()
    for name in BUNDLE_FILES:
        with contextlib.suppress(FileNotFoundError):
            data = (boot_dir / name).read_bytes()
            sha.update(f"{name}:{len(data)}:".encode() + data)
    return sha.hexdigest()


def _applied_digest(marker: Path) -> str | None:
    try:
        doc = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return doc.get("bundle_sha256") if isinstance(doc, dict) else None


def _remove(boot_dir: Path) -> tuple[bool, str | None]:
    """Delete the bundle from the boot partition (every file we know, then the folder if empty)."""
    try:
        for name in BUNDLE_FILES:
            (boot_dir / name).unlink(missing_ok=True)
        left = sorted(p.name for p in boot_dir.iterdir())
        if left:
            return False, f"{boot_dir}: left in place (unknown files: {', '.join(left)}); the key is removed"
        boot_dir.rmdir()
        _fsync_dir(boot_dir.parent)
    except OSError as exc:
        return False, (f"{boot_dir}: cannot remove the bundle ({exc.strerror or exc}): remove it by hand, it holds "
                       "the gateway's key")
    return True, None
