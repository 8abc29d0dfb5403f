"""Renewing the gateway's own TLS certificate over the downlink (issue 18), its key never leaving the gateway.

Two signed commands, which central's ``edugate provision renew`` sends one after the other:

- ``cert.csr``: a certificate request for this gateway's identity (``{school}/{gateway}``), signed with the key
  the gateway already has (``uplink.tls.key_file``); answered with the request (PEM) and the current
  certificate's expiry. The key is not replaced: renewal keeps it, as ``edugate provision csr`` does by hand.
- ``cert.install``: a certificate (PEM) central's CA issued from that request. It is installed only if it is for
  this gateway's identity and key, was issued by the CA in ``uplink.tls.ca_file`` (the CA the broker trusts),
  is valid now, and lasts longer than the one it replaces. The file is replaced atomically (the previous one
  kept as ``<cert_file>.previous``); the next connection to the broker uses it (the TLS context is built per
  connection), and an open connection stays up on the old one, which is still valid.

Anything else is refused with the reason in the ``cmd-result``, and the certificate file is left as it was.
"""

from __future__ import annotations

import datetime
import logging
import os
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from pydantic import Field

from edugate.common.mqtt import MqttTls
from edugate.common.provisioning import (
    ProvisioningError,
    common_name,
    gateway_identity,
    load_certificate,
    load_private_key,
    make_csr,
)
from edugate.drivers.base import CommandError
from edugate.gateway.downlink.registry import CommandArgs, CommandRegistry

log = logging.getLogger(__name__)

MAX_PEM = 16_384  # a leaf certificate is about 1 kB; more is not a certificate


class CsrArgs(CommandArgs):
    """``cert.csr`` takes no arguments."""


class InstallArgs(CommandArgs):
    cert: str = Field(min_length=64, max_length=MAX_PEM, description="The new certificate, PEM.")


def _utc(moment: datetime.datetime) -> str:
    return moment.astimezone(datetime.UTC).isoformat(timespec="seconds")


class CertificateRenewal:
    """The gateway's side of renewal: ``tls`` is the uplink's TLS section (ca_file, cert_file, key_file)."""

    def __init__(self, tls: MqttTls, school: str, gateway: str) -> None:
        if tls.cert_file is None or tls.ca_file is None:
            raise ValueError("certificate renewal needs uplink.tls.cert_file and uplink.tls.ca_file")
        self.cert_file: Path = tls.cert_file
        self.key_file: Path = tls.key_file or tls.cert_file  # a key kept in the certificate's file
        self.ca_file: Path = tls.ca_file
        self.identity = gateway_identity(school, gateway)

    def register(self, registry: CommandRegistry) -> None:
        registry.register("cert.csr", CsrArgs, self.csr, description="A certificate request for this gateway's "
                          "identity from its existing key (renewal; the key never leaves the gateway).")
        registry.register("cert.install", InstallArgs, self.install, description="Install a renewed certificate "
                          "issued by the broker's CA for this gateway's key; used from the next connection.")

    def _current(self) -> x509.Certificate:
        try:
            return load_certificate(self.cert_file)
        except ProvisioningError as exc:
            raise CommandError(str(exc)) from None

    async def csr(self, _: CsrArgs) -> dict[str, Any]:
        try:
            key = load_private_key(self.key_file)
        except ProvisioningError as exc:
            raise CommandError(str(exc)) from None
        request = make_csr(key, self.identity)
        current = self._current()
        return {"identity": self.identity, "csr": request.public_bytes(serialization.Encoding.PEM).decode(),
                "not_after": _utc(current.not_valid_after_utc)}

    async def install(self, args: InstallArgs) -> dict[str, Any]:
        try:
            new = x509.load_pem_x509_certificate(args.cert.encode())
        except ValueError as exc:
            raise CommandError(f"not a PEM certificate: {exc}") from None
        self._check(new)
        current = self._current()
        if new.not_valid_after_utc <= current.not_valid_after_utc:
            raise CommandError(f"the new certificate ends {_utc(new.not_valid_after_utc)}, not later than the one "
                               f"installed ({_utc(current.not_valid_after_utc)}): nothing changed")
        previous = self.cert_file.with_name(self.cert_file.name + ".previous")
        staged = self.cert_file.with_name(self.cert_file.name + ".new")
        staged.write_bytes(new.public_bytes(serialization.Encoding.PEM))
        os.chmod(staged, 0o644)
        with open(staged, "rb") as f:  # noqa: ASYNC230 - 1 kB; on disk before it replaces the old one
            os.fsync(f.fileno())
        if self.cert_file.exists():
            os.replace(self.cert_file, previous)
        os.replace(staged, self.cert_file)
        log.warning("installed a renewed certificate for %s (serial %x, valid until %s); the previous one is %s",
                    self.identity, new.serial_number, _utc(new.not_valid_after_utc), previous)
        return {"identity": self.identity, "serial": f"{new.serial_number:x}",
                "not_after": _utc(new.not_valid_after_utc), "previous_not_after": _utc(current.not_valid_after_utc)}

    def _check(self, new: x509.Certificate) -> None:
        try:
            name = common_name(new.subject)
        except ProvisioningError as exc:
            raise CommandError(str(exc)) from None
        if name != self.identity:
            raise CommandError(f"the certificate is for {name!r}, not this gateway ({self.identity!r})")
        try:
            key = load_private_key(self.key_file)
        except ProvisioningError as exc:
            raise CommandError(str(exc)) from None
        if new.public_key() != key.public_key():
            raise CommandError("the certificate is not for this gateway's key (make it from this gateway's cert.csr)")
        try:
            cas = x509.load_pem_x509_certificates(self.ca_file.read_bytes())
        except (OSError, ValueError) as exc:
            raise CommandError(f"{self.ca_file}: cannot read the CA certificate(s): {exc}") from None
        if not any(_issued_by(new, ca) for ca in cas):
            raise CommandError(f"the certificate was not issued by the CA in {self.ca_file} (the broker's CA)")
        now = datetime.datetime.now(datetime.UTC)
        if not new.not_valid_before_utc <= now < new.not_valid_after_utc:
            raise CommandError(f"the certificate is not valid now (valid {_utc(new.not_valid_before_utc)} to "
                               f"{_utc(new.not_valid_after_utc)}; is the clock right?)")


def _issued_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True
