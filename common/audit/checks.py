"""Baseline checks that do not depend on which side runs them (central's ``edugate central-audit`` uses them;
the gateway's baseline reuses ``edugate doctor``'s own). Each returns a check dict as the report expects:
``check``, ``verdict`` (ok, warn, fail), ``message``, ``fix``."""

from __future__ import annotations

import datetime
import stat
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from edugate.common.audit.passwords import weak_users
from edugate.common.audit.report import worst
from edugate.common.web.auth import SCRYPT_N, UsersFileError, UserStore

CERT_WARN_DAYS = 30


def check(name: str, verdict: str, message: str, fix: str | None = None) -> dict[str, Any]:
    return {"check": name, "verdict": verdict, "message": message, "fix": fix}


def combine(name: str, parts: list[dict[str, Any]]) -> dict[str, Any]:
    """One check from several: the worst verdict, with the messages and fixes of the parts that have it."""
    verdict = worst(parts)
    shown = [p for p in parts if p["verdict"] == verdict]
    return check(name, verdict, "; ".join(p["message"] for p in shown),
                 "; ".join(p["fix"] for p in shown if p["fix"]) or None)


def certificate(name: str, path: Path | None, now: float, what: str) -> dict[str, Any]:
    """``path`` is a PEM certificate with more than 30 days left (fewer: warn; expired, none: fail)."""
    from cryptography import x509

    if path is None:
        return check(name, "fail", f"no {what}", "provision one ('edugate provision') and set its path")
    try:
        cert = x509.load_pem_x509_certificate(Path(path).read_bytes())
    except (OSError, ValueError) as exc:
        return check(name, "fail", f"{what} {path} cannot be read as a certificate: {exc}",
                     "install the certificate issued for it at that path")
    end = cert.not_valid_after_utc
    days = (end - datetime.datetime.fromtimestamp(now, datetime.UTC)).total_seconds() / 86400
    when = end.strftime("%Y-%m-%d %H:%M UTC")
    if days < 0:
        return check(name, "fail", f"{what} {path} expired on {when}", "issue a new one and install it")
    if days < CERT_WARN_DAYS:
        return check(name, "warn", f"{what} {path} expires in {days:.0f} days ({when})", "renew it now")
    return check(name, "ok", f"{what} {path} valid until {when} ({days:.0f} days)")


def private_files(name: str, files: Iterable[tuple[str, Path, bool]]) -> dict[str, Any]:
    """Each ``(what, path, required)`` is readable by its owner only (a missing one fails only if required)."""
    parts: list[dict[str, Any]] = []
    for what, path, required in files:
        try:
            st = path.stat()
        except FileNotFoundError:
            if required:
                parts.append(check(name, "fail", f"{what} {path} is missing", "install it at that path"))
            continue
        except OSError as exc:
            parts.append(check(name, "fail", f"{what} {path} cannot be read ({exc.strerror or exc})", None))
            continue
        if st.st_mode & 0o077:
            parts.append(check(name, "fail", f"{what} {path} can be read by others (mode "
                               f"{stat.filemode(st.st_mode)})", f"'sudo chmod 600 {path}'"))
        else:
            parts.append(check(name, "ok", f"{what} {path}: private"))
    if not parts:
        return check(name, "ok", "no key files configured")
    return combine(name, parts)


def web_users(path: Path, extra: Iterable[str] = (), min_hash_n: int = SCRYPT_N) -> dict[str, Any]:
    """The pages' users file: private, and no user with a common or guessable password (tried on the hashes)."""
    try:
        users = UserStore(path).users()
    except UsersFileError as exc:
        return check("web-users", "fail", str(exc), "move the file aside and add the users again")
    if not users:
        return check("web-users", "ok", f"no users in {path}: nobody can log in to the pages")
    if path.stat().st_mode & 0o077:
        return check("web-users", "fail", f"{path} (password hashes) can be read by others",
                     f"'sudo chmod 600 {path}'")
    weak = weak_users(users.values(), extra=extra, min_n=min_hash_n)
    if weak:
        listed = "; ".join(f"{name}: {why}" for name, why in sorted(weak.items()))
        return check("web-users", "fail", f"{len(weak)} of {len(users)} users are easy to log in as ({listed})",
                     "give each a new password of at least 12 characters: 'edugate web-user add NAME --role "
                     "ROLE --replace --users-file FILE'")
    return check("web-users", "ok", f"{len(users)} users; none has a common or guessable password")
