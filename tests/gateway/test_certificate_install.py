"""``cert.install`` refuses every certificate that is not a renewal of this gateway's own (issue 18): another
identity, another key, another CA, not valid now, not lasting longer, not a certificate; the file is untouched."""

from __future__ import annotations

import asyncio
import datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from edugate.common.mqtt import MqttTls
from edugate.common.provisioning import CertificateAuthority, load_private_key, new_key, write_pem, write_private_key
from edugate.drivers.base import CommandError
from edugate.gateway.downlink.certificate import CertificateRenewal, CsrArgs, InstallArgs


@pytest.fixture
def gateway(tmp_path: Path) -> tuple[CertificateRenewal, CertificateAuthority]:
    ca = CertificateAuthority.create(tmp_path / "ca", "Test CA")
    key = write_private_key(new_key(), tmp_path / "gw.key")
    cert = write_pem(ca.issue("s1/gw-a", load_private_key(key).public_key(), days=10), tmp_path / "gw.pem")
    tls = MqttTls(ca_file=ca.folder / "ca.pem", cert_file=cert, key_file=key)
    return CertificateRenewal(tls, "s1", "gw-a"), ca


def _pem(cert: object) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()  # type: ignore[attr-defined]


def _refused(renewal: CertificateRenewal, pem: str) -> str:
    before = renewal.cert_file.read_bytes()
    with pytest.raises(CommandError) as err:
        asyncio.run(renewal.install(InstallArgs(cert=pem)))
    assert renewal.cert_file.read_bytes() == before
    assert not renewal.cert_file.with_name(renewal.cert_file.name + ".previous").exists()
    return str(err.value)


def test_the_request_is_for_this_gateway_and_its_key(gateway: tuple[CertificateRenewal, CertificateAuthority]) -> None:
    renewal, ca = gateway
    answer = asyncio.run(renewal.csr(CsrArgs()))
    from cryptography import x509
    csr = x509.load_pem_x509_csr(answer["csr"].encode())
    assert answer["identity"] == "s1/gw-a" and csr.is_signature_valid
    assert csr.public_key() == load_private_key(renewal.key_file).public_key()
    renewed = ca.sign_csr(csr, expect="s1/gw-a")
    result = asyncio.run(renewal.install(InstallArgs(cert=_pem(renewed))))
    assert result["serial"] == f"{renewed.serial_number:x}"


def test_what_is_refused(gateway: tuple[CertificateRenewal, CertificateAuthority], tmp_path: Path) -> None:
    renewal, ca = gateway
    own = load_private_key(renewal.key_file).public_key()
    other_ca = CertificateAuthority.create(tmp_path / "other", "Another district")
    assert "is for 's1/gw-b', not this gateway" in _refused(renewal, _pem(ca.issue("s1/gw-b", own)))
    assert "not for this gateway's key" in _refused(renewal, _pem(ca.issue("s1/gw-a", new_key().public_key())))
    assert "not issued by the CA" in _refused(renewal, _pem(other_ca.issue("s1/gw-a", own)))
    late = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=30)
    assert "not valid now" in _refused(renewal, _pem(ca.issue("s1/gw-a", own, days=20, not_before=late)))
    assert "not later than the one installed" in _refused(renewal, _pem(ca.issue("s1/gw-a", own, days=5)))
    assert "not a PEM certificate" in _refused(renewal, "-----BEGIN CERTIFICATE-----\n" + "A" * 80 + "\n")
