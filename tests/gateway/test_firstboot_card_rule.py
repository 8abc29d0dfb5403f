"""A flashed gateway starts under its school's card identity rule without ``replaces`` (HSMALL 3): ``edugate
provision batch --school-keys --card-identity`` records the rule next to each school's key and puts the record in
the bundle; ``edugate firstboot`` checks it against the bundle's config and installs it next to the key; the real
``edugate run`` then starts. Without the record (the old bundles) the same gateway refuses to start."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from edugate.cli.main import app as cli
from edugate.common.card_identity import CardIdentityRule
from edugate.common.privacy import CardRuleError, key_id, open_school_key
from edugate.simulators.servers import free_port
from tests.helpers import REPO, outbox_ready, wait_for

RUN = CliRunner()
RULE = "{version: 1, prox_bits: 32}"


def make_tray(tmp: Path, *extra: str, out: str = "bundles") -> tuple[int, str]:
    if not (tmp / "ca").exists():
        assert RUN.invoke(cli, ["provision", "ca", "--out", str(tmp / "ca"), "--name", "Test CA"]).exit_code == 0
    (tmp / "tray.csv").write_text("school,gateway\nthpt-lqd,gw-1\nthpt-lqd,gw-2\n")
    result = RUN.invoke(cli, ["provision", "batch", str(tmp / "tray.csv"), "--ca", str(tmp / "ca"),
                              "--out", str(tmp / out), "--broker", f"127.0.0.1:{free_port()}",
                              "--school-keys", str(tmp / "school-keys"), *extra])
    return result.exit_code, result.output


@pytest.fixture(scope="module")
def tray(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("tray")
    code, output = make_tray(tmp, "--card-identity", RULE)
    assert code == 0, output
    return tmp / "bundles"


def boot_partition(tray: Path, tmp: Path, gateway: str = "gw-1") -> tuple[Path, Path]:
    """The bundle on a 'boot partition' folder, its paths pointed under ``tmp/site``; (boot dir, config)."""
    boot = tmp / "boot" / "edugate"
    boot.mkdir(parents=True)
    for file in (tray / "thpt-lqd" / gateway).iterdir():
        (boot / file.name).write_bytes(file.read_bytes())
    site = tmp / "site"
    doc = yaml.safe_load((boot / "edugate.yaml").read_text())
    doc["uplink"]["tls"] = {name: str(site / "etc" / file) for name, file in
                            (("ca_file", "ca.pem"), ("cert_file", "gateway.pem"), ("key_file", "gateway.key"))}
    doc["storage"] = {"path": str(site / "data" / "outbox.sqlite")}
    doc["privacy"] = {**doc.get("privacy", {}), "secret_file": str(site / "data" / "school.key")}
    doc["devices"] = [{"id": "a", "driver": "synthetic"}]
    (boot / "edugate.yaml").write_text(yaml.safe_dump(doc))
    return boot, site / "etc" / "gateway.yaml"


def firstboot(config: Path, boot: Path) -> tuple[int, str]:
    result = RUN.invoke(cli, ["firstboot", str(config), "--boot-dir", str(boot), "--user", ""])
    return result.exit_code, result.output


def test_the_bundle_carries_the_rule_of_its_config_recorded_with_the_schools_key(tray: Path) -> None:
    bundle = tray / "thpt-lqd" / "gw-1"
    config = yaml.safe_load((bundle / "edugate.yaml").read_text())
    assert config["privacy"] == {"card_identity": {"version": 1, "prox_bits": 32, "nfc_bytes": "all"}}
    record = json.loads((bundle / "school.key.card-rule").read_text())
    key = bytes.fromhex((bundle / "school.key").read_text())
    assert (record["version"], record["rule"], record["key_id"]) == (1, "prox_bits=32 nfc_bytes=all", key_id(key))
    keys = tray.parent / "school-keys"
    assert (keys / "thpt-lqd.key.card-rule").read_text() == (bundle / "school.key.card-rule").read_text()
    assert (tray / "thpt-lqd" / "gw-2" / "school.key.card-rule").read_bytes() == \
        (bundle / "school.key.card-rule").read_bytes()


def test_a_flashed_gateway_starts_under_the_rule_without_replaces(tray: Path, tmp_path: Path) -> None:
    boot, config = boot_partition(tray, tmp_path)
    code, output = firstboot(config, boot)
    assert code == 0, output
    data = tmp_path / "site" / "data"
    assert json.loads((data / "school.key.card-rule").read_text())["version"] == 1
    proc = subprocess.Popen([sys.executable, "-m", "edugate.cli", "run", str(config)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(lambda: outbox_ready(data / "outbox.sqlite") or proc.poll() is not None, 30, "the gateway")
        assert proc.poll() is None, proc.communicate()[0]
    finally:
        proc.send_signal(signal.SIGTERM)
        out = proc.communicate(timeout=30)[0]
    assert "card identity rule" not in out, out  # neither refused nor changed


def test_without_the_record_the_same_gateway_needs_replaces(tray: Path, tmp_path: Path) -> None:
    """The defect the record fixes: a key with no record counts as made as read (version 0)."""
    boot, config = boot_partition(tray, tmp_path)
    (boot / "school.key.card-rule").unlink()
    assert firstboot(config, boot)[0] == 0
    with pytest.raises(CardRuleError, match="replaces: 0"):
        open_school_key(tmp_path / "site" / "data" / "school.key", CardIdentityRule(version=1, prox_bits=32))


def _other_rule(boot: Path) -> None:
    doc = yaml.safe_load((boot / "edugate.yaml").read_text())
    doc["privacy"]["card_identity"] = {"version": 2, "prox_bits": 24}
    (boot / "edugate.yaml").write_text(yaml.safe_dump(doc))


def _other_key(boot: Path) -> None:
    (boot / "school.key").write_text("ab" * 32 + "\n")


@pytest.mark.parametrize(("spoil", "says"), [
    (_other_rule, "made under card identity rule version 1 (prox_bits=32 nfc_bytes=all), but the bundle's "
                  "edugate.yaml gives version 2: prox_bits=24"),
    (_other_key, "the record of another school key"),
])
def test_a_record_that_does_not_fit_is_refused_and_nothing_installed(tray: Path, tmp_path: Path, spoil: object,
                                                                     says: str) -> None:
    boot, config = boot_partition(tray, tmp_path)
    spoil(boot)  # type: ignore[operator]
    code, output = firstboot(config, boot)
    assert code == 2 and says in output, output
    assert not (tmp_path / "site").exists() or not any((tmp_path / "site").rglob("*.key*"))


def test_a_schools_key_recorded_under_another_rule_is_refused_by_the_batch(tray: Path) -> None:
    tmp = tray.parent
    code, output = make_tray(tmp, "--card-identity", "{version: 2, prox_bits: 24}", out="again")
    assert code == 2 and "made under card identity rule version 1" in output, output
    assert "replaces: 1" in output
    assert not (tmp / "again").exists(), "nothing is issued"


@pytest.mark.parametrize(("rule", "says"), [("[1, 2]", "give a mapping"), ("{version: 0}", "version"),
                                            ("{version: 1, prox_bits: 31}", "prox_bits")])
def test_a_bad_rule_option_says_what(tmp_path: Path, rule: str, says: str) -> None:
    code, output = make_tray(tmp_path, "--card-identity", rule)
    assert code == 2 and says in output and "--card-identity" in output, output
    assert not (tmp_path / "bundles").exists()
