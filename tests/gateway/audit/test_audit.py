"""``edugate audit`` (issue 18, the yearly review): a gateway provisioned as docs/security.md says passes the
baseline; each baseline check is then failed on purpose once; the command writes the report (Markdown and
JSON), a real CycloneDX SBOM and the year's security events from the audit log and a text log."""

from __future__ import annotations

import datetime
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from typer.testing import CliRunner

from edugate.cli.main import app as cli
from edugate.common.provisioning import CertificateAuthority, gateway_bundle
from edugate.common.web.audit_log import AuditLog
from edugate.common.web.auth import hash_password
from edugate.gateway.audit.baseline import BaselineOptions, run_baseline
from edugate.gateway.config import GatewayConfigBase, load_config
from edugate.gateway.doctor.checks import Account

FAST_N = 2**10  # test hashes: the audit is told this is the minimum (the real one costs 16 MiB and ~50 ms)


@dataclass
class Gateway:
    """A provisioned gateway in a temp folder: its config as a dict, written by :meth:`load`."""

    root: Path
    doc: dict[str, object]

    @property
    def etc(self) -> Path:
        return self.root / "etc"

    def load(self) -> GatewayConfigBase:
        path = self.root / "edugate.yaml"
        path.write_text(yaml.safe_dump(self.doc))
        return load_config(path)

    def baseline(self, now: float | None = None) -> dict[str, tuple[str, str]]:
        opts = BaselineOptions(account=Account.current(), min_hash_n=FAST_N)
        if now is not None:
            opts.now = lambda: now
        return {r.check: (str(r.verdict), r.message) for r in run_baseline(self.load(), opts)}


def public_key_pem(path: Path) -> Path:
    key = ed25519.Ed25519PrivateKey.generate().public_key()
    path.write_bytes(key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    path.chmod(0o644)
    return path


@pytest.fixture
def gateway(tmp_path: Path) -> Gateway:
    ca = CertificateAuthority.create(tmp_path / "ca", "Test schools CA")
    etc = tmp_path / "etc"
    bundle = gateway_bundle(etc, "thpt-lqd", "gw-1", brokers=["mqtt.hcm.edu.vn:8883"], ca=ca,
                            install_folder=str(etc))
    data = tmp_path / "data"
    data.mkdir()
    school_key = data / "school.key"
    school_key.write_bytes(os.urandom(32))
    school_key.chmod(0o600)
    (data / "web-users.json").write_text(json.dumps({"version": 1, "users": {
        "it-staff": {"role": "admin", "password": hash_password("correct horse battery 7", n=FAST_N)}}}))
    (data / "web-users.json").chmod(0o600)
    (etc / "firmware").mkdir()
    doc = yaml.safe_load(bundle.config.read_text())
    doc |= {
        "storage": {"path": str(data / "outbox.db")},
        "privacy": {"secret_file": str(school_key)},
        "web": {"enabled": True},
        "downlink": {"enabled": True, "public_keys": [str(public_key_pem(etc / "central.pub.pem"))],
                     "replay_store": str(data / "seen.json")},
        "syslog": {"target": "udp://syslog.hcm.edu.vn:514"},
        "devices": [{"id": "kit-1", "driver": "kit", "port": "/dev/ttyACM0", "firmware_dir": str(etc / "firmware"),
                     "firmware_key": str(public_key_pem(etc / "firmware.pub.pem"))}],
    }
    return Gateway(tmp_path, doc)


def test_a_gateway_provisioned_as_documented_passes_the_baseline(gateway: Gateway) -> None:
    found = gateway.baseline()
    assert {check: verdict for check, (verdict, _) in found.items()} == {
        "tls": "ok", "client-certificate": "ok", "key-files": "ok", "web-users": "ok", "signed-commands": "ok",
        "firmware-signing": "ok", "syslog": "ok"}
    assert "none has a common or guessable password" in found["web-users"][1]


def _no_tls(g: Gateway) -> None:
    g.doc["uplink"] = {"brokers": ["mqtt.hcm.edu.vn:1883"]}


def _no_client_cert(g: Gateway) -> None:
    g.doc["uplink"] = {"brokers": ["mqtt.hcm.edu.vn:8883"], "tls": {"ca_file": str(g.etc / "ca.pem")}}


def _key_readable(g: Gateway) -> None:
    (g.etc / "gateway.key").chmod(0o644)


def _add_user(g: Gateway, name: str, password: str) -> None:
    path = g.root / "data" / "web-users.json"
    doc = json.loads(path.read_text())
    doc["users"][name] = {"role": "admin", "password": hash_password(password, n=FAST_N)}
    path.write_text(json.dumps(doc))


def _weak_password(g: Gateway) -> None:
    _add_user(g, "thu-vien", "thpt-lqd123")


def _default_password(g: Gateway) -> None:
    _add_user(g, "admin", "admin123")


def _command_key_replaceable(g: Gateway) -> None:
    (g.etc / "central.pub.pem").chmod(0o666)


def _firmware_unsigned(g: Gateway) -> None:
    devices = g.doc["devices"]
    assert isinstance(devices, list)
    del devices[0]["firmware_key"]


def _firmware_key_replaceable(g: Gateway) -> None:
    (g.etc / "firmware.pub.pem").chmod(0o664)


def _no_syslog(g: Gateway) -> None:
    del g.doc["syslog"]


@pytest.mark.parametrize(("spoil", "check", "verdict", "says"), [
    (_no_tls, "tls", "fail", "is not encrypted"),
    (_no_client_cert, "client-certificate", "fail", "no client certificate"),
    (_key_readable, "key-files", "fail", "can be read by others"),
    (_weak_password, "web-users", "fail", "thu-vien: a password made of its own name or the school's"),
    (_default_password, "web-users", "fail", "admin: a common default password"),
    (_command_key_replaceable, "signed-commands", "fail", "could be swapped for another"),
    (_firmware_unsigned, "firmware-signing", "fail", "firmware signing is off"),
    (_firmware_key_replaceable, "firmware-signing", "fail", "could be swapped for another"),
    (_no_syslog, "syslog", "warn", "the sector's monitoring does not see them"),
], ids=lambda v: v.__name__.strip("_") if callable(v) else None)
def test_each_baseline_check_fails_on_purpose(gateway: Gateway, spoil: Callable[[Gateway], None], check: str,
                                              verdict: str, says: str) -> None:
    spoil(gateway)
    found = gateway.baseline()
    assert found[check][0] == verdict and says in found[check][1], found[check]
    also = {"client-certificate"} if check == "tls" else set()  # no TLS: no client certificate either
    assert all(v == "ok" for name, (v, _) in found.items() if name not in {check, *also}), found


def test_a_client_certificate_near_or_past_its_end_is_reported(gateway: Gateway) -> None:
    now = datetime.datetime.now(datetime.UTC).timestamp()
    assert gateway.baseline(now + 380 * 86400)["client-certificate"][0] == "warn"  # issued for 397 days
    verdict, message = gateway.baseline(now + 400 * 86400)["client-certificate"]
    assert verdict == "fail" and "expired" in message


def test_edugate_audit_writes_the_report_the_sbom_and_the_years_security_events(gateway: Gateway,
                                                                                 tmp_path: Path) -> None:
    gateway.doc["storage"] = {"path": str(tmp_path / "data" / "outbox.db")}
    gateway.load()
    audit = AuditLog(tmp_path / "data" / "web-audit.jsonl", "gateway")
    for _ in range(3):
        audit.record("login-failed", user="admin", **{"from": "10.1.2.3"})
    audit.record("login-locked", user="admin", reason="addr:10.1.2.3 locked for 300 s", **{"from": "10.1.2.3"})
    audit.record("action", user="it-staff", role="admin", action="POST /api/actions/health-report", status=200,
                 **{"from": "10.1.2.4"})
    audit.record("action", user="victor", role="viewer", action="POST /api/actions/health-report", status=403,
                 **{"from": "10.1.2.5"})
    log = tmp_path / "gateway.log"
    log.write_text(
        "2026-11-02 09:00:00,001 INFO edugate.gateway.runtime.uplink: uplink connected to mqtt.hcm.edu.vn:8883\n"
        "2026-11-02 09:00:05,002 WARNING edugate.gateway.downlink.commands: command rejected (bad-signature) on "
        "'edu/v1/thpt-lqd/gw-1/cmd/config.apply', id 'c-9': no trusted key verifies the signature\n"
        "2026-11-03 10:00:00,000 ERROR edugate.gateway.runtime.uplink: the broker keeps closing the connection "
        "right after accepting it: it refuses what this gateway publishes (ACL). Is /etc/edugate/gateway.pem ...\n"
        "2020-01-01 10:00:00,000 WARNING edugate.gateway.downlink.commands: command rejected (expired) on 'x', "
        "id 'old': too old for the review period\n")
    out = tmp_path / "review"
    result = CliRunner().invoke(cli, ["audit", str(tmp_path / "edugate.yaml"), "--out", str(out), "--log", str(log),
                                      "--journal-unit", ""])
    assert result.exit_code == 2, result.output  # the test user's hash is cheap (fast tests): the audit says so
    stem = f"audit-thpt-lqd-gw-1-{datetime.date.today().isoformat()}"
    report = json.loads((out / f"{stem}.json").read_text())
    assert report["verdict"] == "fail" and report["subject"]["school"] == "thpt-lqd"
    assert [(c["check"], c["verdict"]) for c in report["baseline"] if c["verdict"] != "ok"] == [("web-users", "fail")]
    assert "it-staff: a password hash cheaper to guess" in report["baseline"][3]["message"]
    assert report["versions"]["edugate"] and report["versions"]["cryptography"] != "not installed"
    events = report["security_events"]
    assert events["counts"] == {"acl-refused": 1, "command-refused": 1, "web-action-refused": 1,
                                "web-login-failed": 3, "web-login-locked": 1}
    assert events["admin_actions"] == 2
    sbom = json.loads((out / "sbom.cdx.json").read_text())
    assert sbom["bomFormat"] == "CycloneDX" and report["sbom"]["components"] == len(sbom["components"])
    assert {"cryptography", "fastapi", "pydantic"} <= {c["name"] for c in sbom["components"]}
    assert all(isinstance(p["port"], int) for p in report["ports"])
    text = (out / f"{stem}.md").read_text()
    assert "| signed-commands | OK |" in text and "| command-refused | 1 |" in text and "bad-signature" in text
    assert "correct horse" not in text and "correct horse" not in json.dumps(report)


def test_edugate_audit_exits_2_on_a_failed_baseline(gateway: Gateway, tmp_path: Path) -> None:
    _key_readable(gateway)
    gateway.load()
    result = CliRunner().invoke(cli, ["audit", str(tmp_path / "edugate.yaml"), "--out", str(tmp_path / "r"),
                                      "--no-sbom", "--journal-unit", ""])
    assert result.exit_code == 2 and "key-files fail" in result.output
