"""The gateway's configuration against the security baseline of the yearly review.

Each check gives a verdict (ok, warn, fail), the finding and the fix, as the doctor's checks do; where the
doctor checks the same thing (key file modes, the users file, certificate dates) its code is reused.
The baseline: the uplink uses TLS; a client certificate is there and not expiring soon; key files are 0600;
no web user has a weak or default password; commands are accepted only signed by keys nobody else may
replace; lab-kit firmware updates are signed; security events go to syslog.
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from edugate.common.audit.passwords import weak_users
from edugate.common.web.auth import SCRYPT_N, UsersFileError, UserStore
from edugate.gateway.config import GatewayConfigBase
from edugate.gateway.doctor.checks import (
    Account,
    Result,
    Verdict,
    _cert_result,
    _worst,
    check_keys,
    check_web_users,
)

LONG_COMMANDS_S = 7 * 86_400  # a command that may stay valid longer than this is a long replay window
LOCAL = {"127.0.0.1", "localhost", "::1"}


@dataclass
class BaselineOptions:
    account: Account | None = None  # whose access to judge (None: the doctor's default, the service user)
    now: Callable[[], float] = time.time
    min_hash_n: int = SCRYPT_N  # a web user's hash cheaper than this is reported


def check_tls_on(cfg: GatewayConfigBase) -> Result:
    if cfg.uplink.tls is not None:
        return Result("tls", Verdict.OK, f"the uplink to {', '.join(cfg.uplink.broker_list)} uses TLS")
    if all(b.rsplit(":", 1)[0].strip("[]") in LOCAL for b in cfg.uplink.broker_list):
        return Result("tls", Verdict.WARN, "no TLS, but the broker is on this machine",
                      "if the broker moves off this machine, add uplink.tls (docs/security.md)")
    return Result("tls", Verdict.FAIL, f"the uplink to {', '.join(cfg.uplink.broker_list)} is not encrypted: "
                  "records cross the network in clear and the broker cannot tell this gateway from another",
                  "add uplink.tls with ca_file, cert_file and key_file from 'edugate provision' (docs/security.md)")


def check_client_certificate(cfg: GatewayConfigBase, now: float) -> Result:
    from cryptography import x509

    tls = cfg.uplink.tls
    if tls is None or tls.cert_file is None:
        return Result("client-certificate", Verdict.FAIL, "no client certificate (uplink.tls.cert_file): the "
                      "broker cannot hold this gateway to its own topics (mTLS)",
                      "provision one: 'edugate provision gateway SCHOOL GATEWAY' on central, install it, set "
                      "uplink.tls.cert_file and key_file")
    try:
        cert = x509.load_pem_x509_certificate(Path(tls.cert_file).read_bytes())
    except (OSError, ValueError) as exc:
        return Result("client-certificate", Verdict.FAIL, f"{tls.cert_file} cannot be read as a certificate: "
                      f"{exc}", "install the certificate central issued for this gateway at that path")
    found = _cert_result(f"the gateway's certificate {tls.cert_file}", cert.not_valid_after_utc, now)
    return Result("client-certificate", found.verdict, found.message, found.fix)


def check_key_files(cfg: GatewayConfigBase, account: Account) -> Result:
    found = check_keys(cfg, account)
    return Result("key-files", found.verdict, found.message, found.fix)


def check_web_passwords(cfg: GatewayConfigBase, min_hash_n: int = SCRYPT_N) -> Result:
    found = check_web_users(cfg)
    if not cfg.web.enabled or found.verdict is Verdict.FAIL:
        return Result("web-users", found.verdict, found.message, found.fix)
    path = cfg.web.users_path(Path(cfg.storage.path).parent)
    try:
        users = UserStore(path).users()
    except UsersFileError as exc:
        return Result("web-users", Verdict.FAIL, str(exc), "move the file aside and add the users again")
    weak = weak_users(users.values(), extra=[cfg.school, cfg.gateway], min_n=min_hash_n)
    if weak:
        listed = "; ".join(f"{name}: {why}" for name, why in sorted(weak.items()))
        return Result("web-users", Verdict.FAIL, f"{len(weak)} of {len(users)} users are easy to log in as "
                      f"({listed})", "give each a new password of at least 12 characters: 'edugate web-user add "
                      "--config CONFIG NAME --role ROLE --replace'")
    return Result("web-users", found.verdict, f"{found.message}; none has a common or guessable password",
                  found.fix)


def _replaceable(path: Path, account: Account) -> str | None:
    """Why someone other than root or ``account`` could replace the file, or None."""
    try:
        st = path.stat()
    except OSError as exc:
        return f"{path} cannot be read ({exc.strerror or exc})"
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"{path} can be changed by others (mode {stat.filemode(st.st_mode)})"
    if st.st_uid not in {0, account.uid, os.geteuid()}:
        return f"{path} belongs to another user (uid {st.st_uid})"
    folder = path.parent.stat()
    if folder.st_mode & stat.S_IWOTH and not folder.st_mode & stat.S_ISVTX:
        return f"its folder {path.parent} can be written by anyone"
    return None


def check_signed_commands(cfg: GatewayConfigBase, account: Account) -> Result:
    down = cfg.downlink
    if not down.enabled:
        return Result("signed-commands", Verdict.OK, "the gateway accepts no commands (downlink.enabled: false)")
    problems = [why for key in down.public_keys if (why := _replaceable(Path(key), account))]
    if problems:
        return Result("signed-commands", Verdict.FAIL, "a command signing key could be swapped for another: "
                      + "; ".join(problems), "'sudo chown root:root KEY' and 'sudo chmod 644 KEY' for each "
                      "downlink.public_keys file (the folder too)")
    if down.max_lifetime_s > LONG_COMMANDS_S:
        return Result("signed-commands", Verdict.WARN, f"signed commands may stay valid up to "
                      f"{down.max_lifetime_s / 86400:.0f} days (downlink.max_lifetime_s)",
                      "lower downlink.max_lifetime_s to a day (86400) or less")
    return Result("signed-commands", Verdict.OK, f"commands are accepted only signed by {len(down.public_keys)} "
                  f"central key(s) that only root may replace, valid at most {down.max_lifetime_s} s")


def check_firmware_signing(cfg: GatewayConfigBase, account: Account) -> Result:
    kits = [d for d in cfg.devices if d.driver == "kit"]
    if not kits:
        return Result("firmware-signing", Verdict.OK, "no lab kits: no firmware is sent from this gateway")
    parts: list[Result] = []
    for dev in kits:
        folder, key = getattr(dev, "firmware_dir", None), getattr(dev, "firmware_key", None)
        if key is None:
            verdict = Verdict.FAIL if folder else Verdict.OK
            parts.append(Result("firmware-signing", verdict, f"{dev.id}: no firmware_key: firmware signing is off"
                                + (f", so the images in {folder} are never sent" if folder else
                                   " (no firmware_dir either: no updates)"),
                                f"set devices[{dev.id}].firmware_key to central's firmware public key" if folder
                                else None))
        elif why := _replaceable(Path(key), account):
            parts.append(Result("firmware-signing", Verdict.FAIL, f"{dev.id}: the firmware signing key could be "
                                f"swapped for another: {why}", f"'sudo chown root:root {key}' and "
                                f"'sudo chmod 644 {key}'"))
        else:
            parts.append(Result("firmware-signing", Verdict.OK, f"{dev.id}: firmware must be signed by {key}"))
    verdict = _worst(parts)
    shown = [p for p in parts if p.verdict is verdict]
    return Result("firmware-signing", verdict, "; ".join(p.message for p in shown),
                  "; ".join(p.fix for p in shown if p.fix) or None)


def check_syslog(cfg: GatewayConfigBase) -> Result:
    if cfg.syslog is None:
        return Result("syslog", Verdict.WARN, "security events stay in the gateway's own log: the sector's "
                      "monitoring does not see them", "add a syslog: section (target: udp://COLLECTOR:514; "
                      "docs/security.md)")
    return Result("syslog", Verdict.OK, f"security events go to {cfg.syslog.target} (RFC 5424)")


def run_baseline(cfg: GatewayConfigBase, opts: BaselineOptions | None = None) -> list[Result]:
    opts = opts or BaselineOptions()
    account = opts.account or Account.default()
    return [check_tls_on(cfg), check_client_certificate(cfg, opts.now()), check_key_files(cfg, account),
            check_web_passwords(cfg, opts.min_hash_n), check_signed_commands(cfg, account),
            check_firmware_signing(cfg, account), check_syslog(cfg)]
