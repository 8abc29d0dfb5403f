"""The gateway speaks systemd's notify protocol (``Type=notify``, ``WatchdogSec=``): a real datagram socket, as
systemd binds it, receives READY=1 once the gateway runs, WATCHDOG=1 every half ``WATCHDOG_USEC`` while its
event loop runs (and none while the process is frozen), and STOPPING=1 when it is told to stop."""

from __future__ import annotations

import os
import signal
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from edugate.gateway.runtime import systemd
from tests.helpers import GatewayProcess

WATCHDOG_USEC = 200_000  # pings every 0.1 s


@pytest.fixture
def notify_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = tmp_path / "notify.sock"
    sock.bind(str(path))
    sock.settimeout(20)
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    monkeypatch.setenv("WATCHDOG_USEC", str(WATCHDOG_USEC))
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    yield sock
    sock.close()


def receive_until(sock: socket.socket, wanted: str) -> list[str]:
    """Datagrams up to and including the first that starts with ``wanted`` (the socket's timeout bounds it)."""
    got: list[str] = []
    while not got or not got[-1].startswith(wanted):
        got.append(sock.recv(4096).decode())
    return got


def test_the_gateway_notifies_ready_pings_the_watchdog_and_says_stopping(tmp_path: Path,
                                                                          notify_socket: socket.socket) -> None:
    gw = GatewayProcess(tmp_path / "gw", {"school": "test-school", "gateway": "gw-1", "clock": {"synced": "always"},
                                          "uplink": {"host": "127.0.0.1", "port": 1},
                                          "devices": [{"id": "sim", "driver": "synthetic", "interval_s": 0.5}]})
    gw.start()
    try:
        before_ready = receive_until(notify_socket, "READY=1")
        assert before_ready[-1] == "READY=1\nSTATUS=gateway test-school/gw-1 running"
        pings = [receive_until(notify_socket, "WATCHDOG=1") for _ in range(3)]
        assert all(p == ["WATCHDOG=1"] for p in pings), pings

        assert gw.proc is not None
        os.kill(gw.proc.pid, signal.SIGSTOP)  # a stuck gateway: no pings, so systemd would restart it
        try:
            notify_socket.settimeout(0.05)
            with pytest.raises(TimeoutError):  # drain what was sent before the stop
                while True:
                    notify_socket.recv(4096)
            notify_socket.settimeout(5 * WATCHDOG_USEC / 1e6)  # 2.5 watchdog periods: a live loop pings 5 times
            with pytest.raises(TimeoutError):
                notify_socket.recv(4096)
        finally:
            os.kill(gw.proc.pid, signal.SIGCONT)
        notify_socket.settimeout(20)
        assert receive_until(notify_socket, "WATCHDOG=1")[-1] == "WATCHDOG=1"  # back when it runs again
    finally:
        code = gw.stop()
    rest = []
    notify_socket.settimeout(0.5)
    with pytest.raises(TimeoutError):
        while True:
            rest.append(notify_socket.recv(4096).decode())
    assert "STOPPING=1" in rest
    assert code == 0, gw.log()


def test_an_abstract_notify_socket_and_no_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"edugate-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(5)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert systemd.notify("READY=1")
        assert sock.recv(100) == b"READY=1"
    monkeypatch.delenv("NOTIFY_SOCKET")
    assert not systemd.notify("READY=1")  # not under systemd: nothing sent, nothing fails
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    monkeypatch.setenv("WATCHDOG_PID", "1")  # the watchdog is another process's
    assert systemd.watchdog_interval_s() is None
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert systemd.watchdog_interval_s() == 15.0
