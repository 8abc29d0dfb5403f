"""The kit driver with the reference node on a pty: readings, commands, resets, garbage, unplugging, a refused
protocol version, and a firmware update through ``device.command``."""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import random
import time
import tty
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from fastapi.testclient import TestClient

from edugate.common.web.auth import SessionSigner, UserStore
from edugate.common.web.site import SiteAuth
from edugate.contract.records import Event, Reading
from edugate.drivers.base import CommandError, DeviceState
from edugate.drivers.kit.config import KitConfig
from edugate.drivers.kit.driver import KitDriver
from edugate.drivers.registry import driver_class
from edugate.firmware_bridge.protocol import (
    Ack,
    Capability,
    CapabilityKind,
    Frame,
    FrameSplitter,
    Hello,
    HelloRequest,
    Message,
    Nack,
    Readings,
    Reason,
    encode,
)
from edugate.firmware_bridge.update.manifest import manifest_path, sign_image
from edugate.gateway.web.app import GatewaySite, create_gateway_app
from edugate.gateway.web.live import LiveData
from edugate.simulators.kit_node import KitNodeProcess
from tests.drivers.fakes import FakeEmit, until
from tests.web.fakes import fake_status, users_file

pytestmark = pytest.mark.timeout(30)


@contextlib.asynccontextmanager
async def running(kit: KitNodeProcess, **options: Any) -> AsyncIterator[tuple[KitDriver, FakeEmit]]:
    cfg = KitConfig(id="lab-kit-1", driver="kit", port=str(kit.link), reopen_max_s=0.2, hello_timeout_s=2,
                    answer_timeout_s=1, **options)
    driver = KitDriver(cfg)
    emit = FakeEmit()
    task = asyncio.create_task(driver.run(emit))
    try:
        yield driver, emit
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await driver.close()


async def next_of(emit: FakeEmit, kind: type, within_s: float = 5.0) -> Any:
    while True:
        item = await emit.next(within_s)
        if isinstance(item, kind):
            return item


def test_registered_as_kit() -> None:
    assert driver_class("kit") is KitDriver


async def test_readings_enter_the_pipeline_and_commands_are_acknowledged(tmp_path: Path) -> None:
    kit = KitNodeProcess(tmp_path / "ttyKIT", tmp_path / "state", interval_ms=100, firmware="1.4.0")
    kit.start()
    try:
        async with running(kit) as (driver, emit):
            hello = await next_of(emit, Event)
            assert (hello.device, hello.type) == ("lab-kit-1", "kit_hello")
            assert hello.data == {"node_id": "sim-kit-1", "board": "microbit-v2", "firmware": "1.4.0", "slot": 0,
                                  "sensors": ["temperature", "light"], "actuators": ["led"]}
            reading = await next_of(emit, Reading)
            assert set(reading.values) == {"temperature", "light"}
            assert driver.health.state == DeviceState.ONLINE
            await until(lambda: driver.health.counters.get("readings", 0) >= 3, "three readings")

            assert await driver.command("led", {"value": "on"}) == {"actuator": "led", "value": "on", "done": "led on"}
            with pytest.raises(CommandError, match="refused led=blink: bad-value: led takes on or off, not blink"):
                await driver.command("led", {"value": "blink"})
            with pytest.raises(CommandError, match=r"has no actuator 'fan' \(it has: led; or 'firmware-update'\)"):
                await driver.command("fan", {"value": "on"})
            with pytest.raises(CommandError, match="no firmware_dir and firmware_key configured"):
                await driver.command("firmware-update", {"image": "x.bin"})
    finally:
        kit.close()


async def test_reset_garbage_and_unplug_are_counted_and_recovered_from(tmp_path: Path) -> None:
    kit = KitNodeProcess(tmp_path / "ttyKIT", tmp_path / "state", interval_ms=100)
    kit.start()
    try:
        async with running(kit) as (driver, emit):
            await next_of(emit, Reading)
            kit.kill()
            kit.start()
            await until(lambda: driver.health.counters.get("kit_restarts") == 1, "the restart to be counted")

            bad = bytearray(encode(Readings(1, ((0, 20.0),)), 3))
            bad[7] ^= 0x01
            kit.inject(bytes(bad) + b"\x07garbage\x00")
            await until(lambda: driver.health.counters.get("bad_frames", 0) >= 2, "bad frames to be counted")
            assert driver.health.counters["bad_frames_crc"] >= 1
            assert "CRC mismatch" in (driver.health.last_error or "") or "COBS" in (driver.health.last_error or "")
            emit.fresh()
            await next_of(emit, Reading)  # still reading

            kit.unplug()
            await until(lambda: driver.health.state == DeviceState.OFFLINE, "offline after the unplug")
            assert "kit disconnected" in (driver.health.last_error or "")
            with pytest.raises(CommandError, match=r"is not linked: .*kit disconnected"):
                await driver.command("led", {"value": "on"})
            kit.start()
            await until(lambda: driver.health.state == DeviceState.ONLINE, "online after plugging in again", 10)
            emit.fresh()
            await next_of(emit, Reading)
            assert driver.health.counters["disconnects"] >= 1
    finally:
        kit.close()


async def test_a_kit_speaking_an_unknown_protocol_version_is_refused_by_name(tmp_path: Path) -> None:
    kit = KitNodeProcess(tmp_path / "ttyKIT", tmp_path / "state", protocol_version=3)
    kit.start()
    try:
        async with running(kit) as (driver, emit):
            await until(lambda: driver.health.counters.get("refused_version", 0) >= 1, "the refusal")
            await until(lambda: driver.health.state == DeviceState.OFFLINE, "offline")
            assert driver.health.last_error is not None
            assert "protocol version 3 is not supported: this gateway speaks protocol version 1" in \
                driver.health.last_error
            assert emit.items == []
    finally:
        kit.close()


async def test_firmware_update_through_device_command(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    pub = tmp_path / "central-fw.pub.pem"
    pub.write_bytes(key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo))
    fw = tmp_path / "firmware"
    fw.mkdir()
    image = random.Random(3).randbytes(6000)
    (fw / "kit-1.1.0.bin").write_bytes(image)
    manifest_path(fw / "kit-1.1.0.bin").write_text(sign_image(image, "microbit-v2", "1.1.0", key).to_json())
    (fw / "esp-2.0.0.bin").write_bytes(image)
    manifest_path(fw / "esp-2.0.0.bin").write_text(sign_image(image, "esp32", "2.0.0", key).to_json())

    kit = KitNodeProcess(tmp_path / "ttyKIT", tmp_path / "state", interval_ms=200, pubkey=pub)
    kit.start()
    try:
        async with running(kit, firmware_dir=str(fw), firmware_key=str(pub)) as (driver, emit):
            await next_of(emit, Event)
            assert "microbit-v2 sim-kit-1, firmware 1.0.0 (slot A)" in _status_page(tmp_path, driver)
            with pytest.raises(CommandError, match=r"^wrong-board: image is for board 'esp32'"):
                await driver.command("firmware-update", {"image": "esp-2.0.0.bin"})
            with pytest.raises(CommandError, match="must name a file"):
                await driver.command("firmware-update", {"image": "../etc/passwd"})
            result = await driver.command("firmware-update", {"image": "kit-1.1.0.bin"})
            assert result == {"result": "ok", "firmware": "1.1.0", "resumed_from": 0, "bytes_sent": 6000}
            hello = await next_of(emit, Event)
            while hello.data["firmware"] != "1.1.0":
                hello = await next_of(emit, Event)
            assert hello.data["slot"] == 1
            assert driver.health.counters["firmware_updates"] == 1
            row = _status_page(tmp_path, driver).split('<tr data-device="lab-kit-1">')[1].split("</tr>")[0]
            assert '<small class="about">microbit-v2 sim-kit-1, firmware 1.1.0 (slot B)</small>' in row
            emit.fresh()
            await next_of(emit, Reading)  # readings go on after the switch
    finally:
        kit.close()


def _status_page(tmp: Path, driver: KitDriver) -> str:
    """The gateway's status page (the real app and template) with this driver's device row, as a viewer sees it."""
    status = fake_status() | {"devices": {driver.device_id: driver.health.as_dict() | {"driver": "kit",
                                                                                       "room": "stem-lab"}}}
    site = GatewaySite(status=lambda: status, live=LiveData(window_s=60))
    auth = SiteAuth(UserStore(users_file(tmp / "users.json")), SessionSigner(b"k" * 32), "edugate_gateway_session",
                    "edugate web-user add")
    client = TestClient(create_gateway_app(site, auth), base_url="http://gw.local", follow_redirects=False)
    client.post("/login", data={"username": "victor", "password": "victor-viewer-pw-1", "next": "/status"})
    page = client.get("/status")
    assert page.status_code == 200
    return page.text


class ScriptedNode:
    """The test plays the kit byte by byte on a raw pty (the gateway codec writes its frames)."""

    def __init__(self, link: Path) -> None:
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        os.set_blocking(self.master, False)
        link.symlink_to(os.ttyname(self.slave))
        self.splitter = FrameSplitter()
        self.received: asyncio.Queue[tuple[float, Frame]] = asyncio.Queue()
        loop = asyncio.get_running_loop()
        loop.add_reader(self.master, self._readable)

    def _readable(self) -> None:
        with contextlib.suppress(BlockingIOError):
            for item in self.splitter.feed(os.read(self.master, 4096)):
                if isinstance(item, Frame):
                    self.received.put_nowait((time.monotonic(), item))

    def send(self, message: Message, seq: int) -> None:
        os.write(self.master, encode(message, seq))

    async def expect(self, kind: type, within_s: float = 5.0) -> tuple[float, Frame]:
        async with asyncio.timeout(within_s):
            while True:
                at, frame = await self.received.get()
                if isinstance(frame.message, kind):
                    return at, frame

    def close(self) -> None:
        asyncio.get_running_loop().remove_reader(self.master)
        os.close(self.master)
        os.close(self.slave)


async def test_readings_are_acknowledged_only_once_durable_and_bad_values_are_counted(tmp_path: Path) -> None:
    node = ScriptedNode(tmp_path / "ttyKIT")
    cfg = KitConfig(id="lab-kit-1", driver="kit", port=str(tmp_path / "ttyKIT"), hello_timeout_s=5)
    driver = KitDriver(cfg)
    emit = FakeEmit(delay_s=0.3)  # the outbox commit takes 300 ms
    task = asyncio.create_task(driver.run(emit))
    try:
        await node.expect(HelloRequest)
        node.send(Hello("n1", "esp32", "0.9.0", 256, 0, (Capability(CapabilityKind.SENSOR, "co2", "ppm"),
                                                         Capability(CapabilityKind.ACTUATOR, "fan", ""))), 0)
        await node.expect(Ack)
        await next_of(emit, Event)

        node.send(Readings(1000, ((0, 812.0),)), 1)
        acked_at, ack = await node.expect(Ack)
        assert ack.message == Ack(1)
        [(_, reading)] = emit.readings
        assert reading.values == {"co2": 812.0}
        assert acked_at >= emit.returned_at[-1], "the ACK must follow the durable commit"

        node.send(Readings(2000, ((1, 1.0), (7, 2.0), (0, math.nan))), 2)  # an actuator, no such channel, NaN
        _, nack = await node.expect(Nack)
        assert nack.message == Nack(2, Reason.BAD_VALUE, "no usable values")
        assert driver.health.counters["bad_frames_channel"] == 2
        assert driver.health.counters["bad_frames_value"] == 1
        assert len(emit.readings) == 1
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        node.close()
