"""``edugate doctor``: every check passes against working parts and fails when a part is broken on purpose, with
real parts: a real Mosquitto (plain and TLS with certificates made here), real ptys for serial ports, the Modbus
simulator on TCP and over a pty (RTU), real TCP listeners, a real outbox written by the gateway's Outbox. Only the
Bluetooth adapter list is a folder made here (this machine has no radio): the kernel's /sys/class/bluetooth is
one entry per adapter, and the doctor reads nothing else."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import os
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from edugate.common.web.auth import UserStore
from edugate.contract.records import Kind
from edugate.gateway.doctor.checks import Account, DoctorOptions, Result, Verdict, run_doctor
from edugate.gateway.runtime.outbox import Outbox
from edugate.simulators.modbus import Fault, ModbusSimulator
from edugate.simulators.servers import Mosquitto, free_port
from tests.helpers import REPO

NOBODY = Account("nobody", 65534, frozenset({65534}))


# ---------------------------------------------------------------- helpers


def write_config(folder: Path, **sections: Any) -> Path:
    """A gateway config in ``folder`` with its outbox and key there; ``sections`` replace or add top-level keys."""
    doc: dict[str, Any] = {"school": "test-school", "gateway": "gw-1",
                           "storage": {"path": str(folder / "data" / "outbox.sqlite"), "budget_mb": 16},
                           "privacy": {"secret_file": str(folder / "data" / "school.key")},
                           "clock": {"synced": "always"}, "devices": []}
    doc.update(sections)
    path = folder / "gateway.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def doctor(path: Path, **options: Any) -> dict[str, Result]:
    options.setdefault("timeout_s", 2.0)
    results = asyncio.run(run_doctor(path, DoctorOptions(**options)))
    return {r.check: r for r in results}


async def adoctor(path: Path, **options: Any) -> dict[str, Result]:
    options.setdefault("timeout_s", 2.0)
    return {r.check: r for r in await run_doctor(path, DoctorOptions(**options))}


@pytest.fixture
def pty_path() -> Iterator[str]:
    """A real pseudo-terminal: the path a serial driver would open."""
    master, slave = os.openpty()
    path = os.ttyname(slave)
    yield path
    os.close(slave)
    os.close(master)


# ---------------------------------------------------------------- config


def test_a_broken_config_fails_and_stops_there(tmp_path: Path) -> None:
    path = write_config(tmp_path, devices=[{"id": "x", "driver": "modbus", "host": "10.0.0.1", "port": 99999}])
    results = doctor(path)
    assert list(results) == ["config"]
    assert results["config"].verdict is Verdict.FAIL
    assert "devices[0].port" in results["config"].message and "65535" in results["config"].message
    assert "edugate check" in (results["config"].fix or "")


def test_the_cli_exit_code_is_the_worst_verdict_and_json_says_the_same(tmp_path: Path, mosquitto: Mosquitto) -> None:
    path = write_config(tmp_path, uplink={"host": mosquitto.host, "port": mosquitto.port})
    (tmp_path / "data").mkdir()
    key = tmp_path / "data" / "school.key"
    key.write_bytes(os.urandom(32))
    key.chmod(0o600)
    edugate = [sys.executable, "-m", "edugate.cli.main"]
    ok = subprocess.run([*edugate, "doctor", str(path)], capture_output=True, text=True, cwd=REPO)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert ok.stdout.splitlines()[-1].startswith("OK: ")
    key.chmod(0o644)  # a warning would be 1; a key readable by others is a failure: 2
    bad = subprocess.run([*edugate, "doctor", "--json", str(path)], capture_output=True, text=True, cwd=REPO)
    assert bad.returncode == 2, bad.stdout + bad.stderr
    doc = json.loads(bad.stdout)
    assert doc["verdict"] == "fail"
    keys = next(c for c in doc["checks"] if c["check"] == "keys")
    assert keys["verdict"] == "fail" and "chmod 600" in keys["fix"]
    assert {c["check"] for c in doc["checks"]} >= {"config", "broker", "tls", "clock", "disk", "outbox", "keys",
                                                  "web-users"}
    path.write_text(path.read_text().replace("synced: always", "synced: never"))
    key.chmod(0o600)
    warn = subprocess.run([*edugate, "doctor", str(path)], capture_output=True, text=True, cwd=REPO)
    assert warn.returncode == 1, warn.stdout + warn.stderr
    assert "WARN  clock:" in warn.stdout


# ---------------------------------------------------------------- devices


def _station(port: str) -> dict[str, Any]:
    return {"id": "reader-1", "driver": "pn532", "port": port}


def test_a_serial_port_that_is_present_passes(tmp_path: Path, pty_path: str) -> None:
    result = doctor(write_config(tmp_path, devices=[_station(pty_path)]))["device:reader-1"]
    assert result.verdict is Verdict.OK, result.message
    assert f"{pty_path} is present and opens" in result.message


def test_a_missing_serial_port_fails(tmp_path: Path) -> None:
    result = doctor(write_config(tmp_path, devices=[_station("/dev/serial/by-id/usb-not-plugged-in")]))
    assert result["device:reader-1"].verdict is Verdict.FAIL
    assert "is not there" in result["device:reader-1"].message
    assert "/dev/serial/by-id" in (result["device:reader-1"].fix or "")


def test_a_serial_port_the_gateway_user_may_not_open_fails(tmp_path: Path, pty_path: str) -> None:
    os.chmod(pty_path, 0o600)  # owned by root here: 'nobody' may not open it
    result = doctor(write_config(tmp_path, devices=[_station(pty_path)]), account=NOBODY)["device:reader-1"]
    assert result.verdict is Verdict.FAIL
    assert "user nobody may not open" in result.message and "usermod -aG" in (result.fix or "")


class Talker:
    """A device that sends on its own, at the far end of a real pty: ``payload`` every 50 ms until stopped."""

    def __init__(self, payload: bytes) -> None:
        self.master, self.slave = os.openpty()
        self.path = os.ttyname(self.slave)
        self.payload = payload
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._talk, daemon=True)

    def _talk(self) -> None:
        while not self.stop.wait(0.05):
            with contextlib.suppress(OSError):
                os.write(self.master, self.payload)

    def __enter__(self) -> Talker:
        if self.payload:
            self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        if self.thread.is_alive():
            self.thread.join()
        os.close(self.slave)
        os.close(self.master)


def _gps(path: str) -> dict[str, Any]:
    return {"id": "bus-gps", "driver": "gps-nmea", "port": path, "baudrate": 9600}


def test_a_device_that_sends_on_its_own_is_heard(tmp_path: Path) -> None:
    line = b"$GPGGA,120000.00,1046.5000,N,10641.0000,E,1,08,0.9,10.0,M,0.0,M,,*5B\r\n"
    with Talker(line) as gps:
        result = doctor(write_config(tmp_path, devices=[_gps(gps.path)]))["device:bus-gps"]
    assert result.verdict is Verdict.OK, result.message
    assert f"{gps.path} sends (" in result.message and "GPGGA" not in str(result.as_dict())  # counts, not bytes


def test_a_silent_device_fails_and_one_at_the_wrong_baudrate_too(tmp_path: Path) -> None:
    with Talker(b"") as gps:
        result = doctor(write_config(tmp_path, devices=[_gps(gps.path)]), timeout_s=1.0)["device:bus-gps"]
    assert result.verdict is Verdict.FAIL and "nothing received in 1 s" in result.message
    with Talker(bytes(range(0x80, 0x90))) as gps:  # bytes at the wrong speed: never a line end
        result = doctor(write_config(tmp_path, devices=[_gps(gps.path)]), timeout_s=1.0)["device:bus-gps"]
    assert result.verdict is Verdict.FAIL and "no line end" in result.message and "baudrate" in (result.fix or "")


def test_the_driver_says_which_devices_are_listened_to(tmp_path: Path) -> None:
    """No driver names in the doctor: a config model with ``streams_on`` is listened to, one without is not."""
    from edugate.drivers.registry import driver_class
    from edugate.gateway.doctor import checks

    source = Path(checks.__file__).read_text()
    assert '"gps-nmea"' not in source and '"thermometer"' not in source
    assert {name for name in ("gps-nmea", "thermometer", "em4100", "pn532", "modbus")
            if getattr(driver_class(name).config_model, "streams_on", None)} == {"gps-nmea", "thermometer"}
    with Talker(b"T=21.50\r\n") as probe, Talker(b"T=21.50\r\n") as other:  # two devices, two ports
        thermo = {"id": "lab-probe", "driver": "thermometer", "port": probe.path}
        em4100 = {"id": "door-reader", "driver": "em4100", "port": other.path}
        results = doctor(write_config(tmp_path, devices=[thermo, em4100]))
    heard = results["device:lab-probe"]
    assert heard.verdict is Verdict.OK and f"{probe.path} sends (" in heard.message
    assert "sends" not in results["device:door-reader"].message  # a card reader speaks when a card comes


def test_a_port_held_by_the_running_gateway_is_not_listened_to(tmp_path: Path) -> None:
    import serial

    with Talker(b"$GPGGA\r\n") as gps, serial.Serial(gps.path, 9600, exclusive=True):  # as the driver holds it
        result = doctor(write_config(tmp_path, devices=[_gps(gps.path)]))["device:bus-gps"]
    assert result.verdict is Verdict.WARN and "in use (by the running gateway?)" in result.message


def test_an_ordinary_file_is_not_a_serial_port(tmp_path: Path) -> None:
    fake = tmp_path / "ttyUSB0"
    fake.write_text("")
    result = doctor(write_config(tmp_path, devices=[_station(str(fake))]))["device:reader-1"]
    assert result.verdict is Verdict.FAIL and "is not a device" in result.message


def test_a_tcp_device_that_listens_passes_and_one_that_does_not_fails(tmp_path: Path) -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        up = doctor(write_config(tmp_path, devices=[{"id": "proj-1", "driver": "pjlink", "host": "127.0.0.1",
                                                     "port": port}]))["device:proj-1"]
    assert up.verdict is Verdict.OK, up.message
    down = doctor(write_config(tmp_path, devices=[{"id": "proj-1", "driver": "pjlink", "host": "127.0.0.1",
                                                   "port": port}]))["device:proj-1"]
    assert down.verdict is Verdict.FAIL
    assert f"127.0.0.1:{port}" in down.message and "refused" in down.message.lower()


def _modbus(sim: ModbusSimulator, unit: int) -> dict[str, Any]:
    dev: dict[str, Any] = {"id": "lab-th", "driver": "modbus", "unit": unit, "profile": "lab-th", "timeout_s": 0.3}
    if sim.transport == "tcp":
        return dev | {"host": sim.host, "port": sim.port}
    return dev | {"transport": "rtu", "serial_port": sim.device_path}


@pytest.mark.parametrize("transport", ["tcp", "rtu"])
async def test_a_modbus_unit_that_answers_passes_and_a_silent_one_fails(tmp_path: Path, transport: str) -> None:
    async with ModbusSimulator({1: "lab-th"}, transport=transport, drift=False) as sim:  # type: ignore[arg-type]
        path = write_config(tmp_path, devices=[_modbus(sim, 1)])
        ok = (await adoctor(path))["device:lab-th"]
        assert ok.verdict is Verdict.OK, ok.message
        assert "unit 1 answers" in ok.message
        sim.inject(1, Fault.SILENCE)
        silent = (await adoctor(path))["device:lab-th"]
    assert silent.verdict is Verdict.FAIL
    assert "unit 1" in silent.message and "unit id" in (silent.fix or "")


async def test_a_modbus_device_whose_server_is_down_fails_on_the_connection(tmp_path: Path) -> None:
    async with ModbusSimulator({1: "lab-th"}, drift=False) as sim:
        path = write_config(tmp_path, devices=[_modbus(sim, 1)])
        await sim.stop()
        result = (await adoctor(path))["device:lab-th"]
    assert result.verdict is Verdict.FAIL
    assert f"{sim.host}:{sim.port}" in result.message
    assert [p["check"] for p in result.details["parts"]] == [f"tcp {sim.host}:{sim.port}"]  # no poll attempted


def test_a_ble_probe_needs_its_adapter(tmp_path: Path) -> None:
    sysfs = tmp_path / "sys-class-bluetooth"
    (sysfs / "hci0").mkdir(parents=True)
    probe = {"id": "fridge", "driver": "ble", "address": "A4:C1:38:00:11:22", "format": "atc1441"}
    path = write_config(tmp_path, devices=[probe])
    assert doctor(path, bluetooth_root=sysfs)["device:fridge"].verdict is Verdict.OK
    path = write_config(tmp_path, devices=[probe | {"adapter": "hci1"}])
    result = doctor(path, bluetooth_root=sysfs)["device:fridge"]
    assert result.verdict is Verdict.FAIL
    assert "no Bluetooth adapter hci1 (present: hci0)" in result.message


def test_a_disabled_device_is_not_checked(tmp_path: Path) -> None:
    result = doctor(write_config(tmp_path, devices=[_station("/dev/nothing") | {"enabled": False}]))
    assert result["device:reader-1"].verdict is Verdict.OK and "disabled" in result["device:reader-1"].message


# ---------------------------------------------------------------- broker and TLS


def test_a_running_broker_passes_and_a_stopped_one_fails(tmp_path: Path, mosquitto: Mosquitto) -> None:
    path = write_config(tmp_path, uplink={"host": mosquitto.host, "port": mosquitto.port})
    assert doctor(path)["broker"].verdict is Verdict.OK
    mosquitto.stop()
    result = doctor(path)["broker"]
    assert result.verdict is Verdict.FAIL
    assert f"cannot connect to {mosquitto.host}:{mosquitto.port}" in result.message


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cert(subject: str, key: ec.EllipticCurvePrivateKey, issuer: tuple[x509.Certificate, Any] | None,
          days: float, san: str | None = None) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    signer_name, signer_key = (issuer[0].subject, issuer[1]) if issuer else (_name(subject), key)
    builder = (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(signer_name)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(days=400))
               .not_valid_after(now + datetime.timedelta(days=days))
               .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True))
    if san:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(san)]), critical=False)
    return builder.sign(signer_key, hashes.SHA256())


def _pem(folder: Path, name: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey | None = None) -> Path:
    (folder / f"{name}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    if key is not None:
        (folder / f"{name}.key").write_bytes(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
        (folder / f"{name}.key").chmod(0o600)
    return folder / f"{name}.pem"


def tls_setup(tmp_path: Path, *, server_days: float, client_days: float) -> tuple[Mosquitto, Path]:
    pki = tmp_path / "pki"
    pki.mkdir()
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _cert("test CA", ca_key, None, 3650)
    _pem(pki, "ca", ca)
    server_key, client_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    _pem(pki, "server", _cert("localhost", server_key, (ca, ca_key), server_days, san="localhost"), server_key)
    _pem(pki, "gw-1", _cert("test-school/gw-1", client_key, (ca, ca_key), client_days), client_key)
    tls_port = free_port()
    broker = Mosquitto(tmp_path / "mosquitto", extra_conf="\n".join([
        f"listener {tls_port} 127.0.0.1", f"cafile {pki / 'ca.pem'}", f"certfile {pki / 'server.pem'}",
        f"keyfile {pki / 'server.key'}", "require_certificate true", "use_identity_as_username true"]))
    broker.start()
    config = write_config(tmp_path, uplink={"host": "localhost", "port": tls_port, "tls": {
        "ca_file": str(pki / "ca.pem"), "cert_file": str(pki / "gw-1.pem"), "key_file": str(pki / "gw-1.key")}})
    return broker, config


def test_tls_certificates_in_date_pass(tmp_path: Path) -> None:
    broker, path = tls_setup(tmp_path, server_days=365, client_days=365)
    try:
        results = doctor(path)
    finally:
        broker.stop()
    assert results["broker"].verdict is Verdict.OK, results["broker"].message
    assert results["tls"].verdict is Verdict.OK, results["tls"].message
    assert "the broker's certificate at localhost" in results["tls"].message


def test_a_broker_certificate_near_expiry_warns(tmp_path: Path) -> None:
    broker, path = tls_setup(tmp_path, server_days=10, client_days=365)
    try:
        result = doctor(path)["tls"]
    finally:
        broker.stop()
    assert result.verdict is Verdict.WARN
    assert "the broker's certificate at localhost" in result.message and "expires in 10 days" in result.message


def test_an_expired_gateway_certificate_fails(tmp_path: Path) -> None:
    broker, path = tls_setup(tmp_path, server_days=365, client_days=-1)
    try:
        results = doctor(path)
    finally:
        broker.stop()
    assert results["tls"].verdict is Verdict.FAIL
    assert "the gateway's certificate" in results["tls"].message and "expired on" in results["tls"].message
    assert results["broker"].verdict is Verdict.FAIL  # the broker refuses it too


def test_an_expired_broker_certificate_fails(tmp_path: Path) -> None:
    broker, path = tls_setup(tmp_path, server_days=-1, client_days=365)
    try:
        result = doctor(path)["tls"]
    finally:
        broker.stop()
    assert result.verdict is Verdict.FAIL
    assert "refused" in result.message and "expired" in result.message


def test_an_unencrypted_uplink_to_another_machine_warns(tmp_path: Path) -> None:
    result = doctor(write_config(tmp_path, uplink={"host": "192.0.2.10", "port": 1883}), timeout_s=0.5)["tls"]
    assert result.verdict is Verdict.WARN and "not encrypted" in result.message


# ---------------------------------------------------------------- clock, disk, outbox


def test_a_clock_declared_unsynchronised_warns(tmp_path: Path) -> None:
    assert doctor(write_config(tmp_path))["clock"].verdict is Verdict.OK
    result = doctor(write_config(tmp_path, clock={"synced": "never"}))["clock"]
    assert result.verdict is Verdict.WARN and "timedatectl" in (result.fix or "")


def test_a_budget_larger_than_the_free_disk_fails(tmp_path: Path) -> None:
    assert doctor(write_config(tmp_path))["disk"].verdict is Verdict.OK
    path = write_config(tmp_path, storage={"path": str(tmp_path / "data" / "outbox.sqlite"), "budget_mb": 1e9})
    result = doctor(path)["disk"]
    assert result.verdict is Verdict.FAIL
    assert "would fill the disk" in result.message and "budget_mb" in (result.fix or "")


def test_a_data_folder_the_gateway_user_may_not_write_fails(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir(mode=0o755)
    result = doctor(write_config(tmp_path), account=NOBODY)["disk"]
    assert result.verdict is Verdict.FAIL and "may not write" in result.message


async def _fill_outbox(path: Path, readings: int, period_ms: int, *, start_ms: int | None = None,
                       events: int = 0) -> None:
    box = await Outbox.open(path, budget_bytes=64 * 1024 * 1024)
    start = start_ms if start_ms is not None else int(time.time() * 1000) - readings * period_ms
    await asyncio.gather(*(box.put(Kind.TELEMETRY, {
        "kind": "telemetry", "device": "lab-th", "ts": start + i * period_ms, "synced": True,
        "values": {"temperature": 21.5 + i % 7, "humidity": 40 + i % 5}}) for i in range(readings)))
    for i in range(events):
        await box.put(Kind.EVENT, {"kind": "event", "device": "door", "ts": start + i, "synced": True,
                                   "type": "access", "data": {"card": "p-0123456789abcdef"}})
    await box.close()


def test_outbox_health_says_how_many_hours_the_budget_holds(tmp_path: Path) -> None:
    path = write_config(tmp_path, devices=[{"id": "lab-th", "driver": "synthetic", "interval_s": 10}])
    fresh = doctor(path)["outbox"]
    assert fresh.verdict is Verdict.OK, fresh.message
    # 360 readings/hour from the device + 120 health records: 16 MB * 7/8 / (480 * 176 bytes) = 174 hours
    assert fresh.details["readings_per_hour"] == 480 and fresh.details["rate_from"] == "the config's polling periods"
    assert 170 < fresh.details["budget_hours"] < 178
    # a backlog of an hour at one reading a second: the rate is measured from it
    asyncio.run(_fill_outbox(tmp_path / "data" / "outbox.sqlite", 3600, 1000, start_ms=int(time.time() * 1000)
                             - 3_600_000 + 600_000))
    measured = doctor(path)["outbox"]
    assert measured.details["rate_from"] == "the readings queued in the outbox"
    assert 3500 < measured.details["readings_per_hour"] < 3700
    assert measured.verdict is Verdict.WARN  # 16 MB hold ~25 hours at this rate: less than a long weekend
    assert 20 < measured.details["budget_hours"] < 35
    assert "less than 72 hours" in measured.message and "budget_mb" in (measured.fix or "")


def test_an_outbox_that_does_not_drain_warns(tmp_path: Path) -> None:
    path = write_config(tmp_path, storage={"path": str(tmp_path / "data" / "outbox.sqlite"), "budget_mb": 512})
    (tmp_path / "data").mkdir()
    asyncio.run(_fill_outbox(tmp_path / "data" / "outbox.sqlite", 10, 1000,
                             start_ms=int(time.time() * 1000) - 3 * 3_600_000))
    result = doctor(path)["outbox"]
    assert result.verdict is Verdict.WARN
    assert "10 readings and 0 events queued, the oldest waiting 3.0 hours" in result.message


def test_a_damaged_outbox_fails(tmp_path: Path) -> None:
    path = write_config(tmp_path)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "outbox.sqlite").write_bytes(b"this is not a database" * 100)
    result = doctor(path)["outbox"]
    assert result.verdict is Verdict.FAIL and "cannot be read as an outbox" in result.message
    assert "move the file aside" in (result.fix or "")


def test_an_outbox_from_a_newer_edugate_fails(tmp_path: Path) -> None:
    path = write_config(tmp_path)
    (tmp_path / "data").mkdir()
    box = tmp_path / "data" / "outbox.sqlite"
    asyncio.run(_fill_outbox(box, 5, 1000))
    with sqlite3.connect(box) as conn:
        conn.execute("UPDATE meta SET value=7 WHERE key='schema_version'")
    result = doctor(path)["outbox"]
    assert result.verdict is Verdict.FAIL and "schema version 7" in result.message


# ---------------------------------------------------------------- keys and web users


def test_key_file_permissions(tmp_path: Path) -> None:
    path = write_config(tmp_path)
    assert doctor(path)["keys"].verdict is Verdict.WARN  # not made yet: the first run makes it; back it up
    (tmp_path / "data").mkdir()
    key = tmp_path / "data" / "school.key"
    key.write_bytes(os.urandom(32))
    key.chmod(0o600)
    assert doctor(path)["keys"].verdict is Verdict.OK
    key.chmod(0o640)
    result = doctor(path)["keys"]
    assert result.verdict is Verdict.FAIL and "can be read by others" in result.message
    key.chmod(0o600)  # private, but root's: the service user cannot read it
    result = doctor(path, account=NOBODY)["keys"]
    assert result.verdict is Verdict.FAIL and "user nobody may not read" in result.message


def test_the_web_user_list(tmp_path: Path) -> None:
    path = write_config(tmp_path, web={"enabled": True})
    result = doctor(path)["web-users"]
    assert result.verdict is Verdict.FAIL and "nobody can log in" in result.message
    assert "edugate web-user add" in (result.fix or "")
    users = tmp_path / "data" / "web-users.json"
    UserStore(users).add("it-staff", "admin", "a long enough password")
    result = doctor(path)["web-users"]
    assert result.verdict is Verdict.OK and "it-staff" in result.message
    users.chmod(0o644)
    assert doctor(path)["web-users"].verdict is Verdict.FAIL
    users.chmod(0o600)
    users.write_text("{not json")
    result = doctor(path)["web-users"]
    assert result.verdict is Verdict.FAIL and "not JSON" in result.message
