"""``edugate central-audit`` (issue 18, the yearly review): central set up as docs/security.md says passes its
baseline; each check is failed on purpose once; the command writes the report and exits with the verdict."""

from __future__ import annotations

import datetime
import json
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from edugate.central.audit_cli import central_baseline
from edugate.central.config import load_central_config
from edugate.cli.main import app as cli
from edugate.common.provisioning import CertificateAuthority, new_key
from edugate.common.web.audit_log import AuditLog
from edugate.common.web.auth import hash_password
from tests.pki import central_identity

FAST_N = 2**10


class Central:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.ca = CertificateAuthority.create(root / "ca", "Test schools CA")
        ident = central_identity(self.ca, root / "etc", "ingest-1", "ingest")
        self.data = root / "data"
        self.data.mkdir()
        signing = root / "etc" / "signing.key"
        signing.write_text("-----BEGIN PRIVATE KEY-----\n")
        signing.chmod(0o600)
        self.users({"ops": "a long and unusual passphrase"})
        self.doc: dict[str, object] = {
            "broker": {"brokers": ["mqtt.hcm.edu.vn:8883"],
                       "tls": {"ca_file": str(self.ca.folder / "ca.pem"), "cert_file": str(ident.cert),
                               "key_file": str(ident.key)}},
            "signing": {"private_key": str(signing)},
            "pages": {"data_dir": str(self.data)},
            "api": {"keys_file": str(self.data / "api-keys.json")},
        }

    def users(self, users: dict[str, str]) -> None:
        (self.data / "web-users.json").write_text(json.dumps({"version": 1, "users": {
            name: {"role": "admin", "password": hash_password(pw, n=FAST_N)} for name, pw in users.items()}}))
        (self.data / "web-users.json").chmod(0o600)

    @property
    def config(self) -> Path:
        path = self.root / "central.yaml"
        path.write_text(yaml.safe_dump(self.doc))
        return path

    def baseline(self) -> dict[str, tuple[str, str]]:
        found = central_baseline(load_central_config(self.config), self.ca.folder, min_hash_n=FAST_N)
        return {c["check"]: (c["verdict"], c["message"]) for c in found}


@pytest.fixture
def central(tmp_path: Path) -> Central:
    return Central(tmp_path)


def test_central_set_up_as_documented_passes(central: Central) -> None:
    assert {k: v for k, (v, _) in central.baseline().items()} == {
        "tls": "ok", "client-certificate": "ok", "key-files": "ok", "web-users": "ok", "ca": "ok"}


def _no_tls(c: Central) -> None:
    c.doc["broker"] = {"brokers": ["mqtt.hcm.edu.vn:1883"]}


def _signing_key_readable(c: Central) -> None:
    (c.root / "etc" / "signing.key").chmod(0o644)


def _weak_user(c: Central) -> None:
    c.users({"ops": "a long and unusual passphrase", "admin": "12345678"})


def _gateway_lapsing(c: Central) -> None:
    c.ca.issue("thpt-lqd/gw-1", new_key().public_key(), days=5)


@pytest.mark.parametrize(("spoil", "check", "verdict", "says"), [
    (_no_tls, "tls", "fail", "is not encrypted"),
    (_signing_key_readable, "key-files", "fail", "signing.private_key"),
    (_weak_user, "web-users", "fail", "admin: a common default password"),
    (_gateway_lapsing, "ca", "warn", "1 certificate(s) lapse within 30 days: thpt-lqd/gw-1"),
], ids=["no-tls", "signing-key-readable", "weak-user", "gateway-lapsing"])
def test_each_central_check_fails_on_purpose(central: Central, spoil: Callable[[Central], None], check: str,
                                             verdict: str, says: str) -> None:
    spoil(central)
    found = central.baseline()
    assert found[check][0] == verdict and says in found[check][1], found[check]
    also = {"client-certificate"} if check == "tls" else set()
    assert all(v == "ok" for name, (v, _) in found.items() if name not in {check, *also}), found


def test_edugate_central_audit_writes_the_report(central: Central, tmp_path: Path) -> None:
    AuditLog(central.data / "web-audit.jsonl", "central").record("login-failed", user="root",
                                                                    **{"from": "10.9.9.9"})
    out = tmp_path / "review"
    result = CliRunner().invoke(cli, ["central-audit", "--config", str(central.config), "--ca", str(central.ca.folder),
                                      "--out", str(out), "--no-sbom", "--no-journal"])
    assert result.exit_code == 2, result.output  # the test user's hash is cheap (fast tests): reported
    report = json.loads((out / f"audit-central-{datetime.date.today()}.json").read_text())
    assert report["subject"]["side"] == "central"
    assert [c["check"] for c in report["baseline"] if c["verdict"] != "ok"] == ["web-users"]
    assert report["security_events"]["counts"] == {"web-login-failed": 1}
    assert "| ca | OK |" in (out / f"audit-central-{datetime.date.today()}.md").read_text()
