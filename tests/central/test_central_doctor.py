"""``edugate central-doctor`` without a running broker (issue 23): the descriptor limit systemd WILL give
Mosquitto, read from the unit files of a temporary tree (``--root``), and the gateways provisioned by the CA
(``--ca``), connected or not. The running-broker checks are in ``test_broker_city.py``."""

from __future__ import annotations

import datetime
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edugate.central.cli import app
from edugate.central.ingest.doctor import needed_descriptors
from edugate.central.ingest.unit_limits import NofileLimit, UnitFileError, parse_nofile, unit_nofile_limit
from edugate.common.provisioning import CertificateAuthority, gateway_identity, new_key, provisioned_gateways
from edugate.simulators.servers import SHIPPED_CONF, Mosquitto, free_port
from tests.central import Publisher

DEBIAN_UNIT = Path("/lib/systemd/system/mosquitto.service")
# Debian 12's mosquitto.service (no LimitNOFILE), for machines without the package
DEBIAN_UNIT_TEXT = """[Unit]
Description=Mosquitto MQTT Broker
After=network.target

[Service]
Type=notify
ExecStart=/usr/sbin/mosquitto -c /etc/mosquitto/mosquitto.conf
ExecReload=/bin/kill -HUP $MAINPID
Restart=on-failure

[Install]
WantedBy=multi-user.target
"""
DROP_IN = SHIPPED_CONF.parents[1] / "mosquitto.service.d" / "edugate.conf"
UNITS = "lib/systemd/system"
ETC_DROP_INS = "etc/systemd/system/mosquitto.service.d"


def debian_tree(root: Path, *, drop_in: bool = False) -> Path:
    """A machine's systemd files as the Debian package leaves them (and with the shipped drop-in installed)."""
    (root / UNITS).mkdir(parents=True)
    unit = root / UNITS / "mosquitto.service"
    if DEBIAN_UNIT.exists():
        shutil.copy(DEBIAN_UNIT, unit)
    else:
        unit.write_text(DEBIAN_UNIT_TEXT)
    assert "LimitNOFILE" not in unit.read_text()
    if drop_in:
        (root / ETC_DROP_INS).mkdir(parents=True)
        shutil.copy(DROP_IN, root / ETC_DROP_INS / "edugate.conf")
    return root


def doctor(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["central-doctor", *args])
    return result.exit_code, result.output


def drop_in_line() -> int:
    return next(n for n, line in enumerate(DROP_IN.read_text().splitlines(), 1) if line.startswith("LimitNOFILE="))


def test_debian_default_unit_gives_1024_and_the_doctor_says_so(tmp_path: Path) -> None:
    root = debian_tree(tmp_path / "root")
    code, out = doctor("--root", str(root), "--gateways", "1100")
    assert code == 1, out
    assert ("at its next start: LimitNOFILE=1024:524288, systemd's built-in default (1024:524288): "
            "/lib/systemd/system/mosquitto.service sets none and it has no drop-in") in out
    assert "WARNING: the broker may open only 1024 files, but 1100 provisioned gateways need about 1384" in out
    assert "LimitNOFILE=65536" in out  # the fix it names
    assert "broker process" not in out  # --root: no running broker looked for
    code, out = doctor("--root", str(root), "--gateways", "800")  # 800 × 1.2 + 64 = 1024: just enough
    assert code == 0 and "OK: the broker may open 1024 files; 800 gateways need about 1024" in out


def test_the_shipped_drop_in_gives_65536_and_the_doctor_names_it(tmp_path: Path) -> None:
    root = debian_tree(tmp_path / "root", drop_in=True)
    code, out = doctor("--root", str(root), "--gateways", "1100")
    assert code == 0, out
    assert (f"LimitNOFILE=65536, set by /etc/systemd/system/mosquitto.service.d/edugate.conf:{drop_in_line()}; "
            "Mosquitto gets the soft limit: OK: the broker may open 65536 files; 1100 gateways need about 1384") in out
    code, out = doctor("--root", str(root), "--gateways", "60000")
    assert code == 1 and f"only 65536 files, but 60000 provisioned gateways need about {needed_descriptors(60000)}" \
        in out


def test_drop_ins_apply_in_file_name_order_across_folders(tmp_path: Path) -> None:
    root = debian_tree(tmp_path / "root", drop_in=True)
    vendor = root / UNITS / "mosquitto.service.d"
    vendor.mkdir()
    (vendor / "zz-vendor.conf").write_text("[Service]\nLimitNOFILE=2048:4096\n")
    got = unit_nofile_limit(root=root)  # "zz-vendor" sorts after "edugate", though /lib is read after /etc
    assert got.limit == NofileLimit(2048, 4096)
    assert got.set_by == "/lib/systemd/system/mosquitto.service.d/zz-vendor.conf:2"
    assert got.drop_ins == ("/etc/systemd/system/mosquitto.service.d/edugate.conf",
                            "/lib/systemd/system/mosquitto.service.d/zz-vendor.conf")
    (root / ETC_DROP_INS / "zz-vendor.conf").write_text("# hides the vendor's\n[Service]\nLimitNOFILE=infinity\n")
    got = unit_nofile_limit(root=root)
    assert got.limit == NofileLimit(None, None) and got.set_by == f"/{ETC_DROP_INS}/zz-vendor.conf:3"
    (root / ETC_DROP_INS / "zz-vendor.conf").write_text("[Service]\nLimitNOFILE=\n")  # empty: back to the default
    (root / "etc/systemd/system.conf").write_text("[Manager]\nDefaultLimitNOFILE=4096:8192\n")
    got = unit_nofile_limit(root=root)
    assert got.limit == NofileLimit(4096, 8192) and got.set_by is None
    assert "the manager's default, set by /etc/systemd/system.conf:2" in got.explain()
    (root / "etc/systemd/system/mosquitto.service").write_text("[Service]\nLimitNOFILE=100\n")  # the admin's unit
    got = unit_nofile_limit(root=root)
    assert got.unit_file == "/etc/systemd/system/mosquitto.service" and got.limit.soft == 4096  # drop-ins still win


def test_bad_unit_files_are_named(tmp_path: Path) -> None:
    root = debian_tree(tmp_path / "root", drop_in=True)
    (root / ETC_DROP_INS / "edugate.conf").write_text("[Service]\nLimitNOFILE=lots\n")
    with pytest.raises(UnitFileError, match=r"/etc/systemd/system/mosquitto.service.d/edugate.conf:2: LimitNOFILE "
                       "value 'lots'"):
        unit_nofile_limit(root=root)
    with pytest.raises(UnitFileError, match="soft limit is above the hard one"):
        parse_nofile("4096:1024", "x")
    with pytest.raises(UnitFileError, match=r"no mosquitto\.service under"):
        unit_nofile_limit(root=tmp_path / "empty")
    code, out = doctor("--root", str(tmp_path), "--gateways", "10")
    assert code == 2 and "no broker runs here and no mosquitto.service is installed" in out


def make_ca(folder: Path, gateways: int) -> CertificateAuthority:
    """A CA that issued ``gateways`` gateway certificates (schools of ten) and one for the ingest worker."""
    ca = CertificateAuthority.create(folder, "District test CA")
    key = new_key().public_key()
    for n in range(gateways):
        ca.issue(gateway_identity(f"school-{n // 10:03d}", f"gw-{n % 10}"), key)
    ca.issue("ingest-1", key, role="ingest")
    return ca


def test_the_doctor_counts_the_cas_gateways_connected_or_not(tmp_path: Path) -> None:
    ca = make_ca(tmp_path / "ca", 802)
    past = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=30)
    ca.issue(gateway_identity("school-old", "gw-0"), new_key().public_key(), days=1, not_before=past)
    root = debian_tree(tmp_path / "root")
    ca.revoke(gateway_identity("school-000", "gw-0"))
    # 801 valid: 801 × 1.2 + 64 = 1025 > 1024
    code, out = doctor("--root", str(root), "--ca", str(ca.folder), "--no-retained")
    assert code == 1, out
    assert f"801 gateways hold a valid certificate of the CA in {ca.folder} (left out: 1 revoked, 1 expired)" in out
    assert "only 1024 files, but 801 provisioned gateways need about 1025" in out
    ca.revoke(gateway_identity("school-000", "gw-1"))  # retired: 800 left, exactly enough
    code, out = doctor("--root", str(root), "--ca", str(ca.folder), "--no-retained")
    assert code == 0 and "800 gateways hold a valid certificate" in out and "OK: the broker may open 1024" in out
    assert provisioned_gateways(ca.folder).revoked == {"school-000/gw-0", "school-000/gw-1"}


def test_the_cas_gateways_and_the_retained_states_are_counted_once(tmp_path: Path) -> None:
    ca = make_ca(tmp_path / "ca", 3)
    root = debian_tree(tmp_path / "root")
    broker = Mosquitto(tmp_path / "broker", conf_file=SHIPPED_CONF)
    broker.start()
    try:
        pub = Publisher(broker.host, broker.port)
        for school, gw in [("school-000", "gw-1"), ("school-009", "gw-x")]:  # one provisioned, one not in the CA
            pub.publish(f"edu/v1/{school}/{gw}/state", {"status": "online"}, retain=True)
        pub.close()
        code, out = doctor("--root", str(root), "--ca", str(ca.folder), "--broker", broker.url, "--wait", "1")
    finally:
        broker.stop()
    assert code == 0, out
    assert "3 gateways hold a valid certificate" in out and "2 gateways have a retained state" in out
    assert "4 provisioned gateways in all" in out and "4 gateways need about 68" in out


def test_an_unreachable_broker_is_said_not_counted_as_zero(tmp_path: Path) -> None:
    root = debian_tree(tmp_path / "root")
    closed = f"mqtt://127.0.0.1:{free_port()}"
    code, out = doctor("--root", str(root), "--broker", closed, "--wait", "0.5")
    assert code == 2 and "did not accept a connection within 0.5 s" in out and "give --gateways N or --ca" in out
    ca = make_ca(tmp_path / "ca", 5)
    code, out = doctor("--root", str(root), "--ca", str(ca.folder), "--broker", closed, "--wait", "0.5")
    assert code == 0, out
    assert "counted the CA's gateways only" in out and "5 gateways need about 70" in out
    code, out = doctor("--root", str(root), "--ca", str(tmp_path / "root"), "--no-retained")
    assert code == 2 and "no records.jsonl here" in out
