"""A central broker for a city's connections (issue 23): Mosquitto with the shipped configuration takes more than
1,024 gateways when its descriptor limit allows (the shipped systemd drop-in), refuses the rest at Debian's
default limit of 1,024, and ``edugate central-doctor`` says so before the gateways find out.

Loopback only; the clients are raw sockets sending an MQTT CONNECT each (no thread per client); bounded waits.
"""

from __future__ import annotations

import configparser
import contextlib
import os
import resource
import selectors
import shutil
import socket
import struct
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edugate.central.cli import app
from edugate.central.ingest.doctor import SHIPPED_LIMIT, check_fd_limit, needed_descriptors, process_fd_limit
from edugate.simulators.servers import SHIPPED_CONF, Mosquitto, find_binary
from tests.central import Publisher
from tests.helpers import fd_limit

CLIENTS = 1100
DEBIAN_DEFAULT = 1024
DROP_IN = SHIPPED_CONF.parents[1] / "mosquitto.service.d" / "edugate.conf"


def shipped_limit() -> int:
    """``LimitNOFILE`` of the shipped systemd drop-in for Debian's mosquitto.service."""
    parser = configparser.ConfigParser(strict=True)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # systemd keys are case-sensitive
    parser.read_string(DROP_IN.read_text())
    return int(parser["Service"]["LimitNOFILE"])


def connect_packet(client_id: str) -> bytes:
    cid = client_id.encode()
    variable = b"\x00\x04MQTT\x04\x02" + struct.pack("!H", 60)  # MQTT 3.1.1, clean session, keepalive 60 s
    payload = struct.pack("!H", len(cid)) + cid
    body = variable + payload
    return bytes([0x10, len(body)]) + body


def connect_many(port: int, count: int, timeout: float = 20.0) -> tuple[int, int]:
    """Open ``count`` MQTT connections at once; return (accepted with CONNACK 0, refused or unanswered)."""
    sel = selectors.DefaultSelector()
    socks: list[socket.socket] = []
    accepted = 0
    try:
        for i in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.settimeout(5)
            socks.append(sock)
            try:
                sock.connect(("127.0.0.1", port))
                sock.sendall(connect_packet(f"city-gw-{i:05d}"))
            except OSError:
                continue
            sock.setblocking(False)
            sel.register(sock, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout
        pending = len(sel.get_map())
        while pending and time.monotonic() < deadline:
            for key, _ in sel.select(timeout=0.5):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                try:
                    data = sock.recv(4)
                except OSError:
                    data = b""
                if data == b"\x20\x02\x00\x00":
                    accepted += 1
                sel.unregister(sock)
                pending -= 1
        return accepted, count - accepted
    finally:
        sel.close()
        for sock in socks:
            with contextlib.suppress(OSError):
                sock.close()


@pytest.fixture
def room_for_clients() -> Iterator[None]:
    with fd_limit(4096):  # this test process holds one socket per client too
        yield


DEBIAN_MAIN_CONF = Path("/etc/mosquitto/mosquitto.conf")


@dataclass
class InstalledMosquitto(Mosquitto):
    """Mosquitto set up as docs/central.md section 2 installs it: Debian's own main file (its pid file,
    persistence and log paths moved into ``workdir``), whose ``include_dir`` holds the shipped
    ``edugate-central.conf`` and a listener file of the operator's."""

    def _argv(self) -> list[str]:
        confd = self.workdir / "conf.d"
        confd.mkdir(exist_ok=True)
        (self.workdir / "lib").mkdir(exist_ok=True)
        shutil.copy(SHIPPED_CONF, confd / SHIPPED_CONF.name)
        (confd / "listener.conf").write_text(f"listener {self.port} {self.host}\nallow_anonymous true\n"
                                             + ("user root\n" if os.geteuid() == 0 else ""))
        main = DEBIAN_MAIN_CONF.read_text()
        for debian, ours in [("/run/mosquitto/mosquitto.pid", self.workdir / "mosquitto.pid"),
                             ("/var/lib/mosquitto/", f"{self.workdir / 'lib'}/"), ("/var/log/mosquitto/mosquitto.log",
                             self.log_path), ("/etc/mosquitto/conf.d", confd)]:
            assert debian in main, f"{DEBIAN_MAIN_CONF} no longer says {debian}"
            main = main.replace(debian, str(ours))
        (self.workdir / "mosquitto.conf").write_text(main)
        return [find_binary("mosquitto"), "-c", str(self.workdir / "mosquitto.conf")]


def start_broker(workdir: Path, limit: int, installed: bool = False) -> Mosquitto:
    with fd_limit(limit):
        if installed:
            if not DEBIAN_MAIN_CONF.exists():
                pytest.skip(f"{DEBIAN_MAIN_CONF} is not here (Debian's mosquitto package)")
            broker: Mosquitto = InstalledMosquitto(workdir)
        else:
            broker = Mosquitto(workdir, conf_file=SHIPPED_CONF)
        broker.start()
    assert broker.proc is not None and process_fd_limit(broker.proc.pid) == limit
    return broker


def doctor(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["central-doctor", *args])
    return result.exit_code, result.output


def test_the_drop_in_sizes_the_limit_for_a_city_with_margin() -> None:
    limit = shipped_limit()
    assert limit == SHIPPED_LIMIT  # what central-doctor tells operators to install
    assert check_fd_limit(limit, 2500 * 10).ok  # 2,500 schools with ten gateways each still fit


def test_systemd_reads_the_drop_in_beside_debians_unit(tmp_path: Path) -> None:
    """``systemd-analyze verify`` (offline) loads Debian's mosquitto.service with the drop-in beside it and finds
    nothing wrong in it (it names the drop-in's line for an unknown key, so the drop-in is read)."""
    unit = Path("/lib/systemd/system/mosquitto.service")
    analyze = shutil.which("systemd-analyze")
    if analyze is None or not unit.exists():
        pytest.skip("systemd-analyze or Debian's mosquitto.service is not here")
    shutil.copy(unit, tmp_path / unit.name)
    shutil.copytree(DROP_IN.parent, tmp_path / "mosquitto.service.d")

    def verify() -> str:
        done = subprocess.run([analyze, "verify", "--man=no", str(tmp_path / unit.name)], capture_output=True,
                              text=True, timeout=30, env={**os.environ, "SYSTEMD_UNIT_PATH": f"{tmp_path}:"})
        return done.stdout + done.stderr

    assert "edugate.conf" not in verify()
    with (tmp_path / "mosquitto.service.d" / "edugate.conf").open("a") as f:
        f.write("LimitNOFILLE=5\n")  # the control: a typo is reported, so the file above was read
    assert "edugate.conf:" in verify()


def test_shipped_config_takes_more_than_1024_gateways(tmp_path: Path, room_for_clients: None) -> None:
    # the shipped drop-in's limit, or the most this machine's hard limit allows (20,000 here); both far above 1,100
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    limit = shipped_limit() if hard == resource.RLIM_INFINITY else min(shipped_limit(), hard)
    assert limit >= needed_descriptors(CLIENTS)
    broker = start_broker(tmp_path / "broker", limit, installed=True)
    try:
        accepted, refused = connect_many(broker.port, CLIENTS)
        assert (accepted, refused) == (CLIENTS, 0)
        code, out = doctor("--broker-pid", str(broker.proc.pid), "--gateways", str(CLIENTS))  # type: ignore[union-attr]
        assert code == 0 and f"OK: the broker may open {limit} files" in out
    finally:
        broker.stop()
    log = broker.log_path.read_text()
    assert "Loading config file" in log and "edugate-central.conf" in log  # the shipped file, from conf.d
    assert "denied access" not in log


def test_debian_default_limit_refuses_gateways_and_the_doctor_warns(tmp_path: Path, room_for_clients: None) -> None:
    broker = start_broker(tmp_path / "broker", DEBIAN_DEFAULT)
    try:
        code, out = doctor("--broker-pid", str(broker.proc.pid), "--gateways", str(CLIENTS))  # type: ignore[union-attr]
        assert code == 1
        assert "WARNING: the broker may open only 1024 files, but 1100 provisioned gateways" in out
        assert "LimitNOFILE=65536" in out
        accepted, refused = connect_many(broker.port, CLIENTS, timeout=10)
        assert 900 < accepted < DEBIAN_DEFAULT and refused > CLIENTS - DEBIAN_DEFAULT
    finally:
        broker.stop()


def test_doctor_counts_the_gateways_with_a_retained_state(tmp_path: Path) -> None:
    broker = Mosquitto(tmp_path / "broker", conf_file=SHIPPED_CONF)
    broker.start()
    try:
        pub = Publisher(broker.host, broker.port)
        for n in range(3):
            pub.publish(f"edu/v1/school-{n}/gw-1/state", {"status": "online"}, retain=True)
        pub.close()
        code, out = doctor("--broker-pid", str(broker.proc.pid), "--broker", broker.url, "--wait", "1")  # type: ignore[union-attr]
        assert code == 0, out
        assert "3 gateways have a retained state" in out
    finally:
        broker.stop()


def test_fd_check_margin() -> None:
    assert needed_descriptors(2500) == 3064
    assert check_fd_limit(1024, 1100).ok is False
    assert check_fd_limit(65536, 2500).ok and check_fd_limit(None, 10**6).ok
    assert check_fd_limit(1024, 800).ok  # 800 gateways fit in Debian's default, just
