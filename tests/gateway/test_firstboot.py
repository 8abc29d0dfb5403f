"""Flashing a tray (issue 19): ``edugate provision batch --school-keys --admin`` makes the first-boot bundles;
``edugate firstboot`` applies one from a (temporary) boot partition folder, installs every file where the
config says with the right modes, removes the bundle, and refuses a broken or mixed bundle without
installing anything."""

from __future__ import annotations

import csv
import json
import stat
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from edugate.cli.main import app as cli
from edugate.common.web.auth import UserStore
from edugate.gateway.config import load_config

RUN = CliRunner()


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(scope="module")
def tray(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Bundles for three gateways of two schools, made by the real command from a CSV (once: tests copy them)."""
    tmp_path = tmp_path_factory.mktemp("tray")
    assert RUN.invoke(cli, ["provision", "ca", "--out", str(tmp_path / "ca"), "--name", "Test CA"]).exit_code == 0
    (tmp_path / "tray.csv").write_text("school,gateway\nthpt-lqd,gw-1\nthpt-lqd,gw-2\nthcs-nd,gw-1\n")
    result = RUN.invoke(cli, ["provision", "batch", str(tmp_path / "tray.csv"), "--ca", str(tmp_path / "ca"),
                              "--out", str(tmp_path / "bundles"), "--broker", "mqtt.hcm.edu.vn:8883",
                              "--school-keys", str(tmp_path / "school-keys"), "--admin", "it-staff"])
    assert result.exit_code == 0, result.output
    return tmp_path / "bundles"


def passwords(tray: Path) -> dict[tuple[str, str], str]:
    with (tray / "admin-passwords.csv").open() as fh:
        return {(row["school"], row["gateway"]): row["password"] for row in csv.DictReader(fh)
                if row["user"] == "it-staff"}


def test_the_batch_gives_each_bundle_its_schools_key_and_a_first_admin(tray: Path) -> None:
    a, b, c = tray / "thpt-lqd" / "gw-1", tray / "thpt-lqd" / "gw-2", tray / "thcs-nd" / "gw-1"
    assert (a / "school.key").read_bytes() == (b / "school.key").read_bytes() != (c / "school.key").read_bytes()
    assert mode(a / "school.key") == mode(a / "gateway.key") == mode(tray / "admin-passwords.csv") == 0o600
    given = passwords(tray)
    assert len(set(given.values())) == 3 and all(len(p) >= 16 for p in given.values())
    for folder, ids in ((a, ("thpt-lqd", "gw-1")), (c, ("thcs-nd", "gw-1"))):
        store = UserStore(folder / "web-users.json")
        assert store.authenticate("it-staff", given[ids]) is not None
        assert given[ids] not in (folder / "web-users.json").read_text()  # only the hash
        assert yaml.safe_load((folder / "edugate.yaml").read_text())["web"] == {"enabled": True}


def boot_partition(tray: Path, tmp: Path, school: str = "thpt-lqd", gateway: str = "gw-1") -> tuple[Path, Path]:
    """The bundle copied onto a 'boot partition' folder; its config pointed at a site under ``tmp/site``
    (a real gateway keeps the bundle's /etc/edugate and /var/lib/edugate). Returns (boot dir, config path)."""
    boot = tmp / "boot" / "edugate"
    boot.mkdir(parents=True)
    for file in (tray / school / gateway).iterdir():
        (boot / file.name).write_bytes(file.read_bytes())
    site = tmp / "site"
    doc = yaml.safe_load((boot / "edugate.yaml").read_text())
    doc["uplink"]["tls"] = {name: str(site / "etc" / file) for name, file in
                            (("ca_file", "ca.pem"), ("cert_file", "gateway.pem"), ("key_file", "gateway.key"))}
    doc["storage"] = {"path": str(site / "data" / "outbox.sqlite")}
    doc["privacy"] = {"secret_file": str(site / "data" / "school.key")}
    (boot / "edugate.yaml").write_text(yaml.safe_dump(doc))
    return boot, site / "etc" / "gateway.yaml"


def firstboot(config: Path, boot: Path) -> tuple[int, str]:
    result = RUN.invoke(cli, ["firstboot", str(config), "--boot-dir", str(boot), "--user", ""])
    return result.exit_code, result.output


def test_first_boot_installs_the_bundle_where_the_config_says_and_removes_it(tray: Path, tmp_path: Path) -> None:
    boot, config = boot_partition(tray, tmp_path)
    code, output = firstboot(config, boot)
    assert code == 0, output
    assert "thpt-lqd/gw-1: installed" in output and not boot.exists()
    site = tmp_path / "site"
    assert {p.name: mode(p) for p in (site / "etc").iterdir()} == {
        "gateway.key": 0o600, "gateway.pem": 0o644, "ca.pem": 0o644, "gateway.yaml": 0o640}
    assert {p.name: mode(p) for p in (site / "data").iterdir()} == {
        "school.key": 0o600, "school.key.card-rule": 0o640, "web-users.json": 0o600, "firstboot.json": 0o640}
    cfg = load_config(config)
    assert (cfg.school, cfg.gateway) == ("thpt-lqd", "gw-1")
    assert (site / "data" / "school.key").read_bytes() == (tray / "thpt-lqd" / "gw-1" / "school.key").read_bytes()
    users = UserStore(cfg.web.users_path(site / "data"))
    assert users.authenticate("it-staff", passwords(tray)[("thpt-lqd", "gw-1")]) is not None
    marker = json.loads((site / "data" / "firstboot.json").read_text())
    assert marker["school"] == "thpt-lqd" and "PRIVATE KEY" not in json.dumps(marker)
    assert RUN.invoke(cli, ["check", str(config)]).exit_code == 0
    assert firstboot(config, boot) == (0, f"first boot: no bundle in {boot}: nothing to do\n")  # the next starts


def test_users_already_on_the_gateway_are_kept(tray: Path, tmp_path: Path) -> None:
    boot, config = boot_partition(tray, tmp_path)
    UserStore(tmp_path / "site" / "data" / "web-users.json").add("teacher", "viewer", "a long password 1")
    assert firstboot(config, boot)[0] == 0
    assert set(UserStore(tmp_path / "site" / "data" / "web-users.json").users()) == {"it-staff", "teacher"}


def _mix(boot: Path, tray: Path) -> None:
    (boot / "gateway.pem").write_bytes((tray / "thpt-lqd" / "gw-2" / "gateway.pem").read_bytes())


def _mix_key(boot: Path, tray: Path) -> None:
    (boot / "gateway.key").write_bytes((tray / "thpt-lqd" / "gw-2" / "gateway.key").read_bytes())


def _bad_config(boot: Path, tray: Path) -> None:
    (boot / "edugate.yaml").write_text((boot / "edugate.yaml").read_text().replace("gw-1", "GW 1!"))


def _csr_only(boot: Path, tray: Path) -> None:
    (boot / "gateway.pem").unlink()
    (boot / "gateway.csr").write_text("-----BEGIN CERTIFICATE REQUEST-----\n")


def _other_school_key(boot: Path, tray: Path) -> None:
    data = boot.parent.parent / "site" / "data"
    data.mkdir(parents=True)
    (data / "school.key").write_text("00" * 32 + "\n")


@pytest.mark.parametrize(("spoil", "says"), [
    (_mix, "issued for 'thpt-lqd/gw-2', but the bundle's edugate.yaml is 'thpt-lqd/gw-1'"),
    (_mix_key, "not the key of gateway.pem"),
    (_bad_config, "edugate.yaml:"),
    (_csr_only, "holds a certificate request (gateway.csr), not a certificate"),
    (_other_school_key, "already has a different school key"),
], ids=["mixed-certificate", "mixed-key", "invalid-config", "csr-only", "other-school-key"])
def test_a_broken_bundle_is_refused_and_nothing_is_installed(tray: Path, tmp_path: Path, spoil: object,
                                                             says: str) -> None:
    boot, config = boot_partition(tray, tmp_path)
    assert callable(spoil)
    spoil(boot, tray)
    code, output = firstboot(config, boot)
    assert code == 2 and says in output, output
    assert (boot / "gateway.key").exists() and not config.exists()
    assert not (tmp_path / "site" / "etc" / "gateway.key").exists()


def test_a_bundle_seen_again_is_not_applied_over_later_changes(tray: Path, tmp_path: Path) -> None:
    boot, config = boot_partition(tray, tmp_path)
    copy = {f.name: f.read_bytes() for f in boot.iterdir()}
    assert firstboot(config, boot)[0] == 0
    users = UserStore(tmp_path / "site" / "data" / "web-users.json")
    users.add("it-staff", "admin", "changed after the first boot", replace=True)
    boot.mkdir()  # as if the boot partition had been read-only and the bundle stayed
    for name, data in copy.items():
        (boot / name).write_bytes(data)
    code, output = firstboot(config, boot)
    assert code == 0 and "installed" not in output and not boot.exists()
    assert users.authenticate("it-staff", "changed after the first boot") is not None
