"""``edugate provision`` and edugate.common.provisioning: the CA, bundles (one and a CSV batch), key modes,
CSR signing and renewal, central identities, the broker's files, the ACL from the records, clear errors."""

from __future__ import annotations

import datetime
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID
from typer.testing import CliRunner

from edugate.cli.main import app
from edugate.common.provisioning import (
    ACL_TEMPLATE,
    TLS_CONF_TEMPLATE,
    CertificateAuthority,
    ProvisioningError,
    common_name,
    expiring,
    load_certificate,
    make_csr,
    new_key,
    read_records,
)
from edugate.gateway.config import load_config
from tests.helpers import REPO

runner = CliRunner()


def run(*args: str | Path, code: int = 0) -> str:
    result = runner.invoke(app, ["provision", *map(str, args)])
    assert result.exit_code == code, result.output
    return result.output


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def ca_dir(tmp_path: Path) -> Path:
    run("ca", "--out", tmp_path / "ca", "--name", "District 7 schools CA")
    return tmp_path / "ca"


def test_the_shipped_templates_are_the_ones_rendered() -> None:
    assert (REPO / "config/mosquitto/acl.template").read_text() == ACL_TEMPLATE
    assert (REPO / "config/mosquitto/tls.conf.template").read_text() == TLS_CONF_TEMPLATE


def test_ca_and_a_gateway_bundle(ca_dir: Path, tmp_path: Path) -> None:
    assert mode(ca_dir / "ca.key") == 0o600
    run("ca", "--out", ca_dir, "--name", "again", code=2)  # never overwrites a CA
    out = tmp_path / "sd"
    text = run("gateway", "thpt-lqd", "gw-1", "--ca", ca_dir, "--out", out, "--broker", "mqtt.hcm.edu.vn:8883")
    assert "gateway.key (0600)" in text
    assert mode(out / "gateway.key") == 0o600
    ca = CertificateAuthority(ca_dir)
    cert = load_certificate(out / "gateway.pem")
    ca.verify(cert)
    assert common_name(cert.subject) == "thpt-lqd/gw-1"
    assert cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value == \
        x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH])
    assert (out / "ca.pem").read_bytes() == (ca_dir / "ca.pem").read_bytes()
    # the skeleton is a valid gateway config using the bundle's files
    cfg = load_config(out / "edugate.yaml")
    assert (cfg.school, cfg.gateway, cfg.uplink.broker_list) == ("thpt-lqd", "gw-1", ["mqtt.hcm.edu.vn:8883"])
    assert cfg.uplink.tls is not None and cfg.uplink.tls.key_file == Path("/etc/edugate/gateway.key")
    assert "user thpt-lqd/gw-1\ntopic write edu/v1/thpt-lqd/gw-1/telemetry\n" in (out / "acl.lines").read_text()
    [record] = ca.records()
    assert (record.identity, record.role, record.school, record.gateway) == ("thpt-lqd/gw-1", "gateway", "thpt-lqd",
                                                                             "gw-1")
    # provisioning the same folder twice would replace a key in use: refused
    assert "already provisioned" in run("gateway", "thpt-lqd", "gw-1", "--ca", ca_dir, "--out", out, code=2)


def test_bad_ids_are_refused_with_what_and_where(ca_dir: Path, tmp_path: Path) -> None:
    assert "school id 'THPT LQD' must match" in run("gateway", "THPT LQD", "gw-1", "--ca", ca_dir, "--out",
                                                    tmp_path / "x", code=2)
    assert not (tmp_path / "x" / "gateway.key").exists()
    assert "not a readable PEM certificate" in run("acl", "--ca", tmp_path, code=2)


def test_csr_made_on_the_gateway_then_signed_and_renewed(ca_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "gw"
    assert "gateway.csr" in run("gateway", "s1", "gw-9", "--out", out)  # no CA: the key stays here
    assert not (out / "gateway.pem").exists() and mode(out / "gateway.key") == 0o600
    run("sign", out / "gateway.csr", "--ca", ca_dir, "--out", out / "gateway.pem")
    first = load_certificate(out / "gateway.pem")
    # renewal: a new request from the same key, signed again; the key never moved
    run("csr", "s1", "gw-9", "--key", out / "gateway.key", "--out", out / "renew.csr")
    run("sign", out / "renew.csr", "--ca", ca_dir, "--out", out / "renewed.pem", "--days", "30")
    renewed = load_certificate(out / "renewed.pem")
    assert renewed.public_key() == first.public_key() and renewed.serial_number != first.serial_number
    records = CertificateAuthority(ca_dir).records()
    assert [r.serial for r in records] == [f"{first.serial_number:x}", f"{renewed.serial_number:x}"]
    # the latest certificate per identity counts: 30 days is within the renewal window
    assert [r.identity for r in expiring(records, 31)] == ["s1/gw-9"]
    assert expiring(records, 29) == []
    assert "s1/gw-9 (gateway): expires" in run("expiring", "--ca", ca_dir, "--within-days", "31", code=1)


def test_sign_takes_only_the_name_and_key_and_checks_the_role(ca_dir: Path) -> None:
    ca = CertificateAuthority(ca_dir)
    key = new_key()
    with pytest.raises(ProvisioningError, match="not 's1/gw-2'"):
        ca.sign_csr(make_csr(key, "s1/gw-1"), expect="s1/gw-2")
    with pytest.raises(ProvisioningError, match="does not fit role 'ingest'"):
        ca.sign_csr(make_csr(key, "s1/gw-1"), role="ingest")
    with pytest.raises(ProvisioningError, match="central identity"):
        ca.issue("Ingest One", key.public_key(), role="ingest")
    assert ca.records() == []


def test_batch_from_a_csv(ca_dir: Path, tmp_path: Path) -> None:
    csv_file = tmp_path / "tray.csv"
    csv_file.write_text("school,gateway,brokers\nthcs-a,gw-1,\nthcs-a,gw-2,10.0.0.5:8883 10.0.0.6:8883\n"
                        "thpt-b,gw-1,\n")
    assert "3 gateway bundles" in run("batch", csv_file, "--ca", ca_dir, "--out", tmp_path / "tray",
                                      "--broker", "mqtt.hcm.edu.vn:8883")
    for school, gw in (("thcs-a", "gw-1"), ("thcs-a", "gw-2"), ("thpt-b", "gw-1")):
        folder = tmp_path / "tray" / school / gw
        assert mode(folder / "gateway.key") == 0o600
        assert common_name(load_certificate(folder / "gateway.pem").subject) == f"{school}/{gw}"
    assert load_config(tmp_path / "tray/thcs-a/gw-2/edugate.yaml").uplink.broker_list == ["10.0.0.5:8883",
                                                                                          "10.0.0.6:8883"]
    acl = run("acl", "--ca", ca_dir)
    assert acl.count("\nuser ") == 3 and "topic read edu/v1/thpt-b/gw-1/cmd/#" in acl


def test_a_bad_csv_lists_every_problem_and_issues_nothing(ca_dir: Path, tmp_path: Path) -> None:
    csv_file = tmp_path / "tray.csv"
    csv_file.write_text("school,gateway\nthcs-a,gw-1\nthcs-a,GW 2\nthcs-a,gw-1\n")
    output = run("batch", csv_file, "--ca", ca_dir, "--out", tmp_path / "tray", code=2)
    assert f"{csv_file}:3: gateway id 'GW 2' must match" in output
    assert f"{csv_file}:4: thcs-a/gw-1 is also on line 2" in output
    assert not (tmp_path / "tray").exists() and CertificateAuthority(ca_dir).records() == []
    csv_file.write_text("name,id\nx,y\n")
    assert f"{csv_file}:1: the header must name the columns school,gateway" in run(
        "batch", csv_file, "--ca", ca_dir, "--out", tmp_path / "tray", code=2)


def test_central_identities_and_the_broker_files(ca_dir: Path, tmp_path: Path) -> None:
    run("central", "ingest-1", "--role", "ingest", "--ca", ca_dir, "--out", tmp_path / "central")
    run("central", "sender-1", "--role", "sender", "--ca", ca_dir, "--out", tmp_path / "central")
    assert mode(tmp_path / "central/ingest-1.key") == 0o600
    run("gateway", "s1", "gw-1", "--ca", ca_dir, "--out", tmp_path / "gw")
    out = tmp_path / "broker"
    run("broker", "mqtt.hcm.edu.vn", "10.0.0.5", "--ca", ca_dir, "--out", out, "--port", "8883")
    server = load_certificate(out / "server.pem")
    names = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["mqtt.hcm.edu.vn"]
    assert [str(a) for a in names.get_values_for_type(x509.IPAddress)] == ["10.0.0.5"]
    assert mode(out / "server.key") == 0o600
    conf = (out / "edugate-tls.conf").read_text()
    assert "require_certificate true\nuse_identity_as_username true\n" in conf
    assert "acl_file /etc/mosquitto/edugate/acl" in conf and "listener 8883\n" in conf
    acl = (out / "acl").read_text()
    ingest_block = acl.split("user ingest-1\n")[1].split("\n\n")[0]
    # ingest writes only its confirmations of what it stored (the end-to-end acknowledgement)
    assert [line for line in ingest_block.splitlines() if "write" in line] == ["topic write edu/v1/+/+/stored"]
    sender_block = acl.split("user sender-1\n")[1].split("\n\n")[0]
    assert [line for line in sender_block.splitlines() if "write" in line] == ["topic write edu/v1/+/+/cmd/#"]
    assert "user s1/gw-1\n" in acl
    assert "--role must be ingest or sender" in run("central", "x", "--role", "gateway", "--ca", ca_dir, "--out",
                                                    tmp_path, code=2)


def test_a_damaged_records_file_names_the_line(ca_dir: Path, tmp_path: Path) -> None:
    run("gateway", "s1", "gw-1", "--ca", ca_dir, "--out", tmp_path / "gw")
    with (ca_dir / "records.jsonl").open("a") as f:
        f.write('{"identity": "s1/gw-2", "role": "admin", "serial": "1", "not_after": "2030-01-01"}\n')
    with pytest.raises(ProvisioningError, match=r"records.jsonl:2: not a provisioning record \(unknown role"):
        list(read_records(ca_dir / "records.jsonl"))
    assert "records.jsonl:2" in run("acl", "--ca", ca_dir, code=2)


def test_certificates_do_not_outlive_the_ca(tmp_path: Path) -> None:
    ca = CertificateAuthority.create(tmp_path / "ca", "short CA", days=10)
    cert = ca.issue("s1/gw-1", new_key().public_key(), days=397)
    assert cert.not_valid_after_utc <= ca.cert.not_valid_after_utc
    assert cert.not_valid_after_utc - datetime.datetime.now(datetime.UTC) < datetime.timedelta(days=11)
