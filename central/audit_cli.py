"""``edugate central-audit``: central's evidence for the December security review, as ``edugate audit`` writes
a gateway's (docs/security.md): versions, SBOM, central's config against its baseline, listening ports, the
security events of its pages and processes."""

from __future__ import annotations

import datetime
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from edugate.central.cli_common import CentralConfigOpt, central_config_or_exit
from edugate.central.config import CentralConfig
from edugate.common.audit import checks
from edugate.common.audit.evidence import Sources, build_report, write_and_summarise
from edugate.common.web.audit_log import AUDIT_FILE
from edugate.common.web.auth import SCRYPT_N

UNITS = ["edugate-central.service", "edugate-ingest@*.service", "edugate-api.service"]  # packaging/systemd/central
RENEW_WITHIN_DAYS = 30
LOCAL = {"127.0.0.1", "localhost", "::1"}


def central_baseline(cfg: CentralConfig, ca: Path | None = None, now: float | None = None,
                     min_hash_n: int = SCRYPT_N) -> list[dict[str, Any]]:
    """TLS and a client certificate to the broker; private key files (broker key, signing key, secrets, the
    CA's key); no weak password on the pages; with ``ca``: the CA's certificate and the gateways' due for
    renewal."""
    now = time.time() if now is None else now
    broker, tls = cfg.broker, cfg.broker.tls
    result: list[dict[str, Any]] = []
    if tls is not None:
        result.append(checks.check("tls", "ok", f"the broker connection ({', '.join(broker.brokers)}) uses TLS"))
    elif all(a.host in LOCAL for a in broker.addresses):
        result.append(checks.check("tls", "warn", "no TLS, but the broker is on this machine",
                                   "if the broker moves off this machine, add broker.tls"))
    else:
        result.append(checks.check("tls", "fail", f"the broker connection ({', '.join(broker.brokers)}) is not "
                                   "encrypted", "add broker.tls with ca_file, cert_file and key_file "
                                   "('edugate provision central', docs/security.md)"))
    result.append(checks.certificate("client-certificate", tls.cert_file if tls else None, now,
                                     "client certificate (broker.tls.cert_file)"))
    files: list[tuple[str, Path, bool]] = []
    if tls is not None and tls.key_file is not None:
        files.append(("the broker client key (broker.tls.key_file)", Path(tls.key_file), True))
    for what, path in (("the MQTT password (broker.password_file)", broker.password_file),
                       ("the command signing key (signing.private_key)", cfg.signing.private_key),
                       ("the store token (store.token_file)", cfg.store.token_file),
                       ("the push secret (push.secret_file)", cfg.push.secret_file)):
        if path is not None:
            files.append((what, Path(path), True))
    files += [("the API keys (api.keys_file)", Path(cfg.api.keys_file), False),
              ("the pages' session secret", cfg.pages.data_dir / "web-session.key", False)]
    if ca is not None:
        files.append(("the CA's key", ca / "ca.key", False))
    result.append(checks.private_files("key-files", files))
    result.append(checks.web_users(cfg.pages.users_path(), min_hash_n=min_hash_n))
    if ca is not None:
        result.append(_ca(ca, now))
    return result


def _ca(ca: Path, now: float) -> dict[str, Any]:
    from edugate.common.provisioning import CertificateAuthority, ProvisioningError, expiring

    cert = checks.certificate("ca", ca / "ca.pem", now, "the CA certificate")
    if cert["verdict"] == "fail":
        return cert
    try:
        records = CertificateAuthority(ca).records()
    except (ProvisioningError, OSError) as exc:
        return checks.check("ca", "fail", f"{ca}: {exc}", None)
    due = expiring(records, RENEW_WITHIN_DAYS, datetime.datetime.fromtimestamp(now, datetime.UTC))
    if due:
        return checks.check("ca", "warn", f"{cert['message']}; {len(due)} certificate(s) lapse within "
                            f"{RENEW_WITHIN_DAYS} days: {', '.join(r.identity for r in due[:10])}",
                            f"renew them: 'edugate provision expiring --ca {ca}' lists them (docs/security.md)")
    return checks.check("ca", cert["verdict"], f"{cert['message']}; {len({r.identity for r in records})} "
                        f"identities, none lapsing within {RENEW_WITHIN_DAYS} days", cert["fix"])


def central_audit(
    config: CentralConfigOpt = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the report (.md, .json) and the SBOM.")]
    = Path("."),
    ca: Annotated[Path | None, typer.Option("--ca", help="The CA folder, on the machine that holds it: its "
                                            "key's mode and the certificates due for renewal.")] = None,
    days: Annotated[int, typer.Option("--days", min=1, max=3660, help="Security events of this many past "
                                      "days.")] = 365,
    log: Annotated[list[Path] | None, typer.Option("--log", help="A text log to search for security events "
                                                   "(repeatable).")] = None,
    journal: Annotated[bool, typer.Option("--journal/--no-journal", help="Search the journal of central's "
                                          "units (edugate-central, edugate-ingest@*).")] = True,
    sbom: Annotated[bool, typer.Option("--sbom/--no-sbom", help="Write the CycloneDX SBOM (needs the [audit] "
                                       "extra).")] = True,
) -> None:
    """Central's evidence for the yearly security review. Exit code: 0 baseline ok, 1 a warning, 2 a failure."""
    cfg = central_config_or_exit(config)
    subject = {"title": f"central ({config or 'default settings'})", "side": "central",
               "config": str(config) if config else None}
    sources = Sources(days=days, audit_logs=[cfg.pages.data_dir / AUDIT_FILE], log_files=list(log or []),
                      journal_units=UNITS if journal else [], sbom=sbom)
    report = build_report(subject, central_baseline(cfg, ca), out, sources)
    text, code = write_and_summarise(report, out, f"audit-central-{datetime.date.today()}")
    typer.echo(text)
    raise typer.Exit(code=code)


def register(app: typer.Typer) -> None:
    app.command(name="central-audit")(central_audit)
