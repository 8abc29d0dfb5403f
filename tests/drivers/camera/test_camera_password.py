"""An RTSP camera's password in ``password_file`` (HSMALL 1): read at start, put into the stream address in memory
only; it reaches the camera (a fake RTSP server over real TCP that asks for Basic authentication) and never the
log, OpenCV/FFmpeg's own output, the device's health or a real gateway's ``/api/status``, which show it as ***."""

from __future__ import annotations

import base64
import re
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from edugate.common.web.auth import UserStore
from edugate.drivers.base import DeviceState
from edugate.drivers.camera.driver import CameraConfig, CameraDriver
from edugate.gateway.config import ConfigError, parse_config
from edugate.simulators.servers import free_port
from tests.drivers.camera.test_camera_driver import Running
from tests.helpers import GatewayProcess, wait_for, wait_for_async

pytestmark = pytest.mark.timeout(60)
PASSWORD = "Cam-s3cret@/x:y"  # '@', '/' and ':' must be URL-encoded into the address


class FakeRtspCamera:
    """Answers every RTSP request with 401 and a Basic challenge; keeps the Authorization headers it got."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.authorizations: list[str] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        buffer = b""
        with conn:
            while data := conn.recv(4096):
                buffer += data
                while b"\r\n\r\n" in buffer:
                    head, buffer = buffer.split(b"\r\n\r\n", 1)
                    text = head.decode("latin-1")
                    if found := re.search(r"^Authorization: Basic (\S+)", text, re.M):
                        self.authorizations.append(base64.b64decode(found.group(1)).decode())
                    cseq = re.search(r"CSeq:\s*(\d+)", text)
                    conn.sendall(f"RTSP/1.0 401 Unauthorized\r\nCSeq: {cseq.group(1) if cseq else 0}\r\n"
                                 'WWW-Authenticate: Basic realm="camera"\r\n\r\n'.encode())

    def close(self) -> None:
        self.server.close()


@pytest.fixture
def camera() -> Iterator[FakeRtspCamera]:
    fake = FakeRtspCamera()
    yield fake
    fake.close()


def password_file(tmp_path: Path) -> Path:
    path = tmp_path / "camera.pass"
    path.write_text(PASSWORD + "\n")
    path.chmod(0o600)
    return path


def assert_no_password(text: str, where: str) -> None:
    for spelling in (PASSWORD, "Cam-s3cret", "Cam-s3cret%40%2Fx%3Ay"):
        assert spelling not in text, f"the password shows in {where}: {text}"


async def test_the_password_reaches_the_camera_and_shows_nowhere(tmp_path: Path, camera: FakeRtspCamera,
                                                                  caplog: pytest.LogCaptureFixture,
                                                                  capfd: pytest.CaptureFixture[str]) -> None:
    caplog.set_level("DEBUG")
    cfg = CameraConfig.model_validate({"id": "hall-cam", "driver": "camera", "reopen_max_s": 0.2,
                                       "source": f"rtsp://counter@127.0.0.1:{camera.port}/stream2",
                                       "password_file": str(password_file(tmp_path))})
    assert_no_password(cfg.model_dump_json(), "the config")
    driver = CameraDriver(cfg)
    async with Running(driver):
        await wait_for_async(lambda: driver.health.error_count >= 2, 30, "the camera refused twice")
        assert driver.health.state == DeviceState.OFFLINE
    assert f"counter:{PASSWORD}" in camera.authorizations, "FFmpeg sent the file's password to the camera"
    masked = f"hall-cam (camera rtsp://counter:***@127.0.0.1:{camera.port}/stream2)"
    assert (driver.health.last_error or "").startswith(masked), driver.health.last_error
    assert masked in caplog.text
    out, err = capfd.readouterr()
    for text, where in ((str(driver.health.as_dict()), "the health record"), (caplog.text, "the log"),
                        (out + err, "OpenCV's and FFmpeg's output")):
        assert_no_password(text, where)


async def test_a_password_file_that_cannot_be_read_is_an_outage_naming_it(tmp_path: Path) -> None:
    cfg = CameraConfig.model_validate({"id": "hall-cam", "driver": "camera", "reopen_max_s": 0.2,
                                       "source": "rtsp://counter@127.0.0.1:9/stream2",
                                       "password_file": str(tmp_path / "missing.pass")})
    driver = CameraDriver(cfg)
    async with Running(driver):
        await wait_for_async(lambda: driver.health.last_error, 30, "the outage")
    assert f"hall-cam: password_file: cannot read {tmp_path / 'missing.pass'}: No such file or directory" in \
        (driver.health.last_error or "")


@pytest.mark.parametrize(("source", "problem"), [
    ("rtsp://counter:old@cam/stream", "the source holds a password and password_file is given"),
    ("rtsp://cam/stream", "the source names no user"),
    ("/dev/video0", "password_file is for a network stream"),
])
def test_the_config_says_what_is_wrong(tmp_path: Path, source: str, problem: str) -> None:
    text = (f"school: s\ngateway: g\ndevices:\n  - id: cam\n    driver: camera\n    source: {source}\n"
            f"    password_file: {tmp_path}/p\n")
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "gw.yaml")
    assert any(problem in str(p) and "devices[0]" in str(p) for p in caught.value.problems), caught.value.problems


def test_a_real_gateway_shows_the_password_masked_on_api_status(tmp_path: Path, camera: FakeRtspCamera) -> None:
    users = tmp_path / "users.json"
    UserStore(users).add("alice", "admin", "alice-admin-pw-1")
    port = free_port()
    gw = GatewayProcess(tmp_path / "gw", {
        "school": "s", "gateway": "g", "uplink": {"host": "127.0.0.1", "port": free_port()},
        "web": {"enabled": True, "port": port, "users_file": str(users)},
        "devices": [{"id": "hall-cam", "driver": "camera", "reopen_max_s": 0.5,
                     "source": f"rtsp://counter@127.0.0.1:{camera.port}/stream2",
                     "password_file": str(password_file(tmp_path))}]})
    gw.start()
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
            wait_for(lambda: _answers(client), 20, "the pages")
            client.post("/login", data={"username": "alice", "password": "alice-admin-pw-1", "next": "/status"})

            def camera_error() -> str:
                return client.get("/api/status").json()["devices"]["hall-cam"].get("last_error") or ""

            error = wait_for(camera_error, 30, "the camera's outage on /api/status")
            status = client.get("/api/status").text
    finally:
        assert gw.stop() == 0
    assert f"rtsp://counter:***@127.0.0.1:{camera.port}/stream2" in error, error
    assert f"counter:{PASSWORD}" in camera.authorizations
    assert_no_password(status, "/api/status")
    assert_no_password(gw.log(), "the gateway's log (with OpenCV's and FFmpeg's output)")
    assert_no_password(yaml.safe_dump(gw.config), "the config")


def _answers(client: httpx.Client) -> bool:
    try:
        return client.get("/healthz").status_code == 200
    except httpx.HTTPError:
        return False
