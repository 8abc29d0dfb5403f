"""A central broker for a city's connections (issue 23): Mosquitto with the shipped configuration takes more than
1,024 gateways when its descriptor limit allows (the shipped systemd drop-in), refuses the rest at Debian's
default limit of 1,024, and ``edugate central-doctor`` says so before the gateways find out.

Loopback only; the clients are raw sockets sending an MQTT CONNECT each (no thread per client); bounded waits.
"""

from __future__ import annotations

import contextlib
import resource
import selectors
import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edugate.central.cli import app
from edugate.central.ingest.doctor import check_fd_limit, needed_descriptors, process_fd_limit
from edugate.simulators.servers import SHIPPED_CONF, Mosquitto
from tests.central import Publisher

CLIENTS = 1100
DEBIAN_DEFAULT = 1024


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


@contextlib.contextmanager
def fd_limit(soft: int) -> Iterator[None]:
    """This process's soft RLIMIT_NOFILE set to ``soft`` (a broker started meanwhile inherits it)."""
    old_soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft > hard:
        pytest.skip(f"the hard descriptor limit here is {hard}, below {soft}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (old_soft, hard))


@pytest.fixture
def room_for_clients() -> Iterator[None]:
    with fd_limit(4096):  # this test process holds one socket per client too
        yield


def start_broker(workdir: Path, limit: int) -> Mosquitto:
    with fd_limit(limit):
        broker = Mosquitto(workdir, conf_file=SHIPPED_CONF)
        broker.start()
    assert broker.proc is not None and process_fd_limit(broker.proc.pid) == limit
    return broker


def doctor(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["central-doctor", *args])
    return result.exit_code, result.output


def test_shipped_config_takes_more_than_1024_gateways(tmp_path: Path, room_for_clients: None) -> None:
    broker = start_broker(tmp_path / "broker", 4096)  # what the systemd drop-in gives it (65536), bounded here
    try:
        accepted, refused = connect_many(broker.port, CLIENTS)
        assert (accepted, refused) == (CLIENTS, 0)
        code, out = doctor("--broker-pid", str(broker.proc.pid), "--gateways", str(CLIENTS))  # type: ignore[union-attr]
        assert code == 0 and "OK: the broker may open 4096 files" in out
    finally:
        broker.stop()
    assert "denied access" not in broker.log_path.read_text()


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
