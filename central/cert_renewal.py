"""``edugate renew-certificate``: renew gateways' TLS certificates over the downlink (issue 18), keys staying on the
gateways.

For each gateway: send the signed ``cert.csr`` command, check the request it answers with (its signature, the
gateway's identity: :meth:`CertificateAuthority.sign_csr`), issue the certificate from central's CA (recorded in
``records.jsonl`` like every other), and send it back with ``cert.install``; the gateway checks it again and uses
it from its next connection (``gateway/downlink/certificate.py``). ``--expiring-within DAYS`` renews every gateway
whose latest certificate lapses within that many days, so the command can run from cron. The broker's ACL needs
no change: the identity stays the same.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from edugate.central.cli_common import CentralConfigOpt, central_config_or_exit
from edugate.central.command_tools import (
    EXIT_NO_ANSWER,
    EXIT_REFUSED,
    KeyOpt,
    SendError,
    _broker,
    _dumps,
    _load_key,
    send_envelope,
)
from edugate.common.mqtt import BrokerConfig
from edugate.common.provisioning import (
    RENEW_BEFORE_DAYS,
    CertificateAuthority,
    ProvisioningError,
    expiring,
    gateway_identity,
)
from edugate.contract.commands import sign_command


class RenewalError(Exception):
    """One gateway's renewal failed; the message says at which step and why."""


@dataclass(frozen=True)
class Renewed:
    school: str
    gateway: str
    result: dict[str, Any]  # the gateway's cert.install result: serial, not_after, previous_not_after


def _ask(key_path: Path, broker: BrokerConfig, school: str, gateway: str, name: str, args: dict[str, Any],
         timeout: float) -> dict[str, Any]:
    envelope = sign_command(_load_key(key_path), school=school, gateway=gateway, name=name, args=args, ttl_s=300)
    try:
        answer = send_envelope(envelope, broker, timeout)
    except SendError as exc:
        raise RenewalError(f"{name}: {exc}") from None
    if answer is None:
        raise RenewalError(f"{name}: no answer within {timeout:g} s (is the gateway online, with the downlink "
                           "enabled and TLS client certificates configured?)")
    if answer.get("status") != "ok":
        raise RenewalError(f"{name}: {answer.get('status')}: {answer.get('reason')}")
    result: dict[str, Any] = answer.get("result") or {}
    return result


def renew(ca: CertificateAuthority, key_path: Path, broker: BrokerConfig, school: str, gateway: str,
          timeout: float = 30.0) -> Renewed:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    identity = gateway_identity(school, gateway)
    answer = _ask(key_path, broker, school, gateway, "cert.csr", {}, timeout)
    try:
        csr = x509.load_pem_x509_csr(str(answer.get("csr", "")).encode())
    except ValueError as exc:
        raise RenewalError(f"cert.csr: the gateway's answer holds no PEM certificate request: {exc}") from None
    try:
        cert = ca.sign_csr(csr, role="gateway", expect=identity)
    except ProvisioningError as exc:
        raise RenewalError(f"cert.csr: {exc}") from None
    pem = cert.public_bytes(serialization.Encoding.PEM).decode()
    return Renewed(school, gateway, _ask(key_path, broker, school, gateway, "cert.install", {"cert": pem}, timeout))


def renew_certificate(
    ca_folder: Annotated[Path, typer.Option("--ca", help="Central's CA folder (ca.pem, ca.key, records.jsonl).")],
    school: Annotated[str | None, typer.Option("--school", help="The gateway's school.", show_default=False)] = None,
    gateway: Annotated[str | None, typer.Option("--gateway", help="The gateway.", show_default=False)] = None,
    within_days: Annotated[int | None, typer.Option(
        "--expiring-within", min=1, help=f"Renew every gateway whose certificate lapses within this many days "
        f"(e.g. {RENEW_BEFORE_DAYS}) instead of one.", show_default=False)] = None,
    key: KeyOpt = None,
    config: CentralConfigOpt = None,
    broker_url: Annotated[str | None, typer.Option("--broker", help="mqtt[s]://host:port (default: central.yaml's "
                                                   "broker).", show_default=False)] = None,
    ca_file: Annotated[Path | None, typer.Option("--ca-file", help="CA bundle for mqtts://.")] = None,
    tls_cert: Annotated[Path | None, typer.Option("--tls-cert", help="The sender's certificate (mTLS).")] = None,
    tls_key: Annotated[Path | None, typer.Option("--tls-key", help="The sender's key (mTLS).")] = None,
    timeout: Annotated[float, typer.Option("--timeout", min=0.1, help="Seconds to wait for each answer.")] = 30.0,
) -> None:
    """Renew gateways' TLS certificates over the downlink; their keys never leave them. Prints one JSON line per
    gateway renewed; exit 0 when all were, 1 when one refused, 3 when one did not answer."""
    cfg = central_config_or_exit(config)
    try:
        ca = CertificateAuthority(ca_folder)
    except ProvisioningError as exc:
        raise typer.BadParameter(str(exc), param_hint="--ca") from None
    if within_days is not None:
        targets = [(r.school, r.gateway) for r in expiring(ca.records(), within_days)
                   if r.role == "gateway" and r.school and r.gateway]
    elif school and gateway:
        targets = [(school, gateway)]
    else:
        raise typer.BadParameter("give --school and --gateway, or --expiring-within DAYS")
    signing_key = key or cfg.signing.private_key
    if signing_key is None:
        raise typer.BadParameter("central's command key is needed: --key, or signing.private_key in central.yaml",
                                 param_hint="--key")
    broker = _broker(cfg, broker_url, None, None, ca_file, tls_cert, tls_key)
    code = 0
    for target_school, target_gateway in targets:
        try:
            done = renew(ca, signing_key, broker, target_school, target_gateway, timeout)
        except RenewalError as exc:
            typer.echo(f"renew-certificate: {target_school}/{target_gateway}: {exc}", err=True)
            code = max(code, EXIT_NO_ANSWER if "no answer" in str(exc) or "cannot reach" in str(exc)
                       else EXIT_REFUSED)
            continue
        typer.echo(_dumps({"school": done.school, "gateway": done.gateway, **done.result}))
    if not targets:
        typer.echo(f"renew-certificate: no gateway certificate lapses within {within_days} days", err=True)
    raise typer.Exit(code)
