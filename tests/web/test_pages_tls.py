"""The gateway's pages over HTTPS (issue 18: "the pages: TLS ... as an option"), served by a real ``edugate run``:
a certificate for 127.0.0.1 made by ``edugate provision web`` from a CA the client trusts; the login's session cookie is
marked Secure; plain HTTP on that port gets no page. Certificate files that do not load are named in the log and
the gateway runs on."""

from __future__ import annotations

import ssl
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from edugate.common.provisioning import CertificateAuthority, write_pem
from edugate.simulators.servers import Mosquitto, free_port, wait_for_port
from tests.helpers import GatewayProcess, wait_for
from tests.web.conftest import PASSWORDS, add_users

pytestmark = pytest.mark.timeout(120)


def _gateway(tmp_path: Path, broker: Mosquitto, port: int, cert: Path, key: Path) -> GatewayProcess:
    return GatewayProcess(tmp_path / "gw", {
        "school": "s1", "gateway": "gw-1", "uplink": {"port": broker.port},
        "web": {"enabled": True, "port": port, "tls": {"cert_file": str(cert), "key_file": str(key)}}})


def test_the_pages_over_https(tmp_path: Path, mosquitto: Mosquitto) -> None:
    ca = CertificateAuthority.create(tmp_path / "ca", "School CA")
    made = subprocess.run([sys.executable, "-m", "edugate.cli.main", "provision", "web", "127.0.0.1", "--ca",
                           str(ca.folder), "-o", str(tmp_path / "web")], capture_output=True, text=True, timeout=120)
    assert made.returncode == 0, made.stderr
    assert (tmp_path / "web" / "web.key").stat().st_mode & 0o077 == 0
    port = free_port()
    gw = _gateway(tmp_path, mosquitto, port, tmp_path / "web" / "web.pem", tmp_path / "web" / "web.key")
    add_users("--config", gw.config_path, tmp_path)
    gw.start()
    try:
        wait_for_port("127.0.0.1", port, timeout=20)
        trusted = ssl.create_default_context(cafile=str(ca.folder / "ca.pem"))
        with httpx.Client(base_url=f"https://127.0.0.1:{port}", verify=trusted) as client:
            assert client.get("/login").status_code == 200
            answer = client.post("/login", data={"username": "alice", "password": PASSWORDS["alice"],
                                                 "next": "/status"})
            assert answer.status_code == 303
            cookie = answer.headers["set-cookie"]
            assert "secure" in cookie.lower() and "httponly" in cookie.lower()
            assert client.get("/status").status_code == 200
        with pytest.raises(httpx.HTTPError):  # the same port in plain HTTP: no page
            httpx.get(f"http://127.0.0.1:{port}/login", timeout=5)
        assert "gateway pages on https://127.0.0.1:" in gw.log()
    finally:
        assert gw.stop() == 0


def test_a_key_that_does_not_load_is_named_and_the_gateway_runs_on(tmp_path: Path, mosquitto: Mosquitto) -> None:
    ca = CertificateAuthority.create(tmp_path / "ca", "School CA")
    cert, _ = ca.issue_server(["127.0.0.1"])
    gw = _gateway(tmp_path, mosquitto, free_port(), write_pem(cert, tmp_path / "web.pem"), tmp_path / "missing.key")
    gw.start()
    try:
        wait_for(lambda: "missing.key: No such file or directory; retrying" in gw.log(), 60, "the TLS error in the log")
        assert gw.proc is not None and gw.proc.poll() is None
    finally:
        assert gw.stop() == 0
