"""A lab kit end to end: the reference node on a pty -> the real gateway (``edugate run``) -> Mosquitto ->
ingest -> VictoriaMetrics; a signed downlink command to its LED and a signed firmware update, with results
on cmd-result and the new firmware version in the kit's ``kit_hello`` event."""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
import sys
from pathlib import Path

import aiomqtt
import pytest

from edugate.central.eventstore import EventStore
from edugate.contract.commands import load_private_key as load_command_key
from edugate.contract.commands import sign_command
from edugate.firmware_bridge.update.manifest import load_private_key, manifest_path, sign_image
from edugate.simulators.kit_node import KitNodeProcess
from tests.e2e.conftest import central_key, ingest  # noqa: F401 - fixtures
from tests.helpers import REPO, Collector, GatewayProcess, send_command, wait_for_async
from tests.vmquery import export

pytestmark = pytest.mark.timeout(60)


def _send_refused(broker_url: str, key: Path, args: dict) -> tuple[int, dict]:
    """``edugate send`` for a command the gateway refuses: (exit code, cmd-result)."""
    result = subprocess.run(
        [sys.executable, "-m", "edugate.central.command_tools", "send", "--key", f"{key}.pem", "--broker", broker_url,
         "--school", "kit-school", "--gateway", "gw-lab", "--name", "device.command", "--args", json.dumps(args),
         "--ttl", "120", "--timeout", "15"], capture_output=True, text=True, cwd=REPO)
    return result.returncode, json.loads(result.stdout.strip().splitlines()[-1])


async def _command(port: int, key: Path, name: str = "ping", args: dict | None = None) -> dict:
    """Sign a command for gw-lab, publish it and return its cmd-result (in process: fast)."""
    env = sign_command(load_command_key(Path(f"{key}.pem")), school="kit-school", gateway="gw-lab", name=name,
                       args=args, ttl_s=120)
    async with aiomqtt.Client("127.0.0.1", port) as client:
        await client.subscribe("edu/v1/kit-school/gw-lab/cmd-result", qos=1)
        await client.publish(f"edu/v1/kit-school/gw-lab/cmd/{name}", json.dumps(env), qos=1)
        async with asyncio.timeout(10):
            async for message in client.messages:
                doc = json.loads(message.payload if isinstance(message.payload, bytes) else b"{}")
                if doc.get("id") == env["id"]:
                    return doc
    raise AssertionError(f"no cmd-result for {name}")


def _update_rig(tmp_path: Path, key_base: Path, broker_port: int, version: str, size: int, seed: int,
                **downlink: object) -> tuple[bytes, KitNodeProcess, Collector, dict]:
    """A signed image ``kit-<version>.bin`` of ``size`` random bytes, the reference node on a pty (started), a
    collector at the broker (started) and the gateway config of a downlink-enabled gateway with the kit."""
    firmware = tmp_path / "firmware"
    firmware.mkdir()
    image = random.Random(seed).randbytes(size)
    key = load_private_key(Path(f"{key_base}.pem"))
    (firmware / f"kit-{version}.bin").write_bytes(image)
    manifest_path(firmware / f"kit-{version}.bin").write_text(
        sign_image(image, "microbit-v2", version, key).to_json())
    kit = KitNodeProcess(tmp_path / "ttyKIT", tmp_path / "kit-state", interval_ms=1000,
                         pubkey=f"{key_base}.pub.pem")
    kit.start()
    collector = Collector(broker_port).start()
    cfg = {
        "school": "kit-school", "gateway": "gw-lab",
        "uplink": {"port": broker_port, "health_interval_s": 3600},
        "downlink": {"enabled": True, "public_keys": [f"{key_base}.pub.pem"], **downlink},
        "devices": [{"id": "lab-kit", "driver": "kit", "port": str(kit.link), "firmware_dir": str(firmware),
                     "firmware_key": f"{key_base}.pub.pem"}],
    }
    return image, kit, collector, cfg


async def test_kit_readings_commands_and_a_signed_update_through_gateway_broker_and_store(
        mosquitto, victoria, ingest, central_key, tmp_path: Path) -> None:  # noqa: F811
    firmware = tmp_path / "firmware"
    firmware.mkdir()
    image = random.Random(5).randbytes(8000)
    key = load_private_key(Path(f"{central_key}.pem"))  # central's key signs firmware too (in the sample: its own)
    (firmware / "kit-1.1.0.bin").write_bytes(image)
    manifest_path(firmware / "kit-1.1.0.bin").write_text(sign_image(image, "microbit-v2", "1.1.0", key).to_json())
    (firmware / "esp-2.0.0.bin").write_bytes(image)
    manifest_path(firmware / "esp-2.0.0.bin").write_text(sign_image(image, "esp32", "2.0.0", key).to_json())

    kit = KitNodeProcess(tmp_path / "ttyKIT", tmp_path / "kit-state", node_id="lab-kit-7", interval_ms=200,
                         pubkey=f"{central_key}.pub.pem")
    kit.start()
    collector = Collector(mosquitto.port).start()
    cfg = {
        "school": "kit-school", "gateway": "gw-lab",
        "uplink": {"port": mosquitto.port, "health_interval_s": 3600},
        "downlink": {"enabled": True, "public_keys": [f"{central_key}.pub.pem"]},
        "devices": [{"id": "lab-kit", "driver": "kit", "room": "stem-lab", "port": str(kit.link),
                     "firmware_dir": str(firmware), "firmware_key": f"{central_key}.pub.pem"}],
        "assets": {},  # the asset registry: the kit is an asset with its board and firmware version
    }
    gw = GatewayProcess(tmp_path / "gw", cfg).start()
    try:
        def hellos() -> list[dict]:
            return [e for e in collector.records["event"] if e["type"] == "kit_hello"]

        [first] = await wait_for_async(hellos, 20, "the kit's HELLO as an event")
        assert first["device"] == "lab-kit" and first["room"] == "stem-lab"
        assert {k: first["data"][k] for k in ("node_id", "board", "firmware", "slot")} == {
            "node_id": "lab-kit-7", "board": "microbit-v2", "firmware": "1.0.0", "slot": 0}
        await wait_for_async(lambda: [r for r in collector.records["telemetry"] if r["device"] == "lab-kit"
                                      and "temperature" in r["values"]], 20, "kit readings at the broker")

        answer = await asyncio.to_thread(send_command, mosquitto.url, central_key, "kit-school", "gw-lab",
                                         "device.command",
                                         {"device": "lab-kit", "name": "led", "args": {"value": "on"}})
        assert answer["status"] == "ok", answer
        assert answer["result"]["result"] == {"actuator": "led", "value": "on", "done": "led on"}
        code, answer = await asyncio.to_thread(_send_refused, mosquitto.url, central_key,
                                               {"device": "lab-kit", "name": "led", "args": {"value": "dim"}})
        assert code == 1 and answer["status"] == "failed", answer
        assert answer["reason"] == "kit 'lab-kit' refused led=dim: bad-value: led takes on or off, not dim"

        refused = await _command(mosquitto.port, central_key, "device.command", {
            "device": "lab-kit", "name": "firmware-update", "args": {"image": "esp-2.0.0.bin"}})
        assert refused["status"] == "failed", refused
        assert refused["reason"] == "wrong-board: image is for board 'esp32', the kit is a 'microbit-v2'"
        answer = await asyncio.to_thread(send_command, mosquitto.url, central_key, "kit-school", "gw-lab",
                                         "device.command", {"device": "lab-kit", "name": "firmware-update",
                                                            "args": {"image": "kit-1.1.0.bin"}})
        assert answer["status"] == "ok", answer
        assert answer["result"]["result"] == {"result": "ok", "firmware": "1.1.0", "resumed_from": 0,
                                              "bytes_sent": 8000}
        await wait_for_async(lambda: [e for e in hellos() if e["data"]["firmware"] == "1.1.0"], 20,
                             "a kit_hello with the new firmware")

        def assets(firmware: str) -> list[dict]:
            return [e for e in collector.records["event"] if e["type"] == "asset" and e["device"] == "lab-kit"
                    and e["data"].get("firmware") == firmware]

        [old] = await wait_for_async(lambda: assets("1.0.0"), 20, "the kit in the asset list with 1.0.0")
        assert (old["data"]["model"], old["data"]["serial"], old["data"]["room"]) == ("microbit-v2", "lab-kit-7",
                                                                                     "stem-lab")
        await wait_for_async(lambda: assets("1.1.0"), 20, "the kit's asset with its new firmware version")

        def stored() -> list | None:
            return export(victoria.url, '{__name__="edugate_temperature",device="lab-kit"}') or None

        [series] = await wait_for_async(stored, 20, "kit temperatures in VictoriaMetrics")
        assert series["metric"]["room"] == "stem-lab" and series["metric"]["school"] == "kit-school"
        assert all(15 <= v <= 25 for v in series["values"])

        events = EventStore(tmp_path / "events.sqlite")  # central's event log, kept by the ingest worker
        try:
            def stored(kind: str) -> list[dict]:
                return [e for e in events.query(type_=kind, school="kit-school", limit=1000)
                        if e["device"] == "lab-kit" and e["data"].get("firmware") == "1.1.0"]

            await wait_for_async(lambda: stored("kit_hello") and stored("asset"), 20,
                                 "the new firmware version in central's event log (kit_hello and asset)")
        finally:
            events.close()
    finally:
        assert gw.stop() == 0, gw.log()[-3000:]
        collector.stop()
        kit.close()


async def test_gateway_kill_9_during_an_update_leaves_the_kit_on_its_old_image_and_the_next_attempt_resumes(
        mosquitto, central_key, tmp_path: Path) -> None:  # noqa: F811
    image, kit, collector, cfg = _update_rig(tmp_path, central_key, mosquitto.port, "2.0.0", 240_000, 9)
    update = {"device": "lab-kit", "name": "firmware-update", "args": {"image": "kit-2.0.0.bin"}}
    slot = kit.state_dir / "slot1.bin"
    gw = GatewayProcess(tmp_path / "gw", cfg).start()
    sender: asyncio.subprocess.Process | None = None

    def hellos() -> int:
        return len([e for e in collector.records["event"] if e["type"] == "kit_hello"])

    try:
        await wait_for_async(hellos, 20, "the kit linked")
        sender = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "edugate.central.command_tools", "send", "--key", f"{central_key}.pem",
            "--broker", mosquitto.url, "--school", "kit-school", "--gateway", "gw-lab", "--name",
            "device.command", "--args", json.dumps(update), "--ttl", "120", "--timeout", "30",
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL, cwd=REPO)
        await wait_for_async(lambda: slot.exists() and slot.stat().st_size >= 20_000, 20, "the transfer under way",
                             interval=0.01)
        # the update runs in a task of its own: another command is answered meanwhile, not after it
        pong = await _command(mosquitto.port, central_key)
        assert pong["status"] == "ok", pong
        assert slot.stat().st_size < len(image), "the ping must be answered while the update is still running"
        gw.kill()  # kill -9 in the middle of the transfer
        sender.kill()
        await sender.wait()
        kept = slot.stat().st_size
        assert 20_000 <= kept < len(image)
        assert json.loads((kit.state_dir / "boot.json").read_text())["active"] == 0

        before = hellos()
        gw = GatewayProcess(tmp_path / "gw", cfg).start()
        await wait_for_async(lambda: hellos() > before, 20, "the restarted gateway linked to the kit (and online)")
        answer = await asyncio.to_thread(send_command, mosquitto.url, central_key, "kit-school", "gw-lab",
                                         "device.command", update)
        assert answer["status"] == "ok", answer
        result = answer["result"]["result"]
        assert (result["result"], result["firmware"]) == ("ok", "2.0.0")
        assert result["resumed_from"] >= kept, "the second attempt resumes where the first one stopped"
        assert result["bytes_sent"] == len(image) - result["resumed_from"]
        assert (kit.state_dir / "slot1.bin").read_bytes() == image
    finally:
        if sender is not None and sender.returncode is None:
            sender.kill()
            await sender.wait()
        if gw.proc is not None:
            assert gw.stop() == 0, gw.log()[-3000:]
        collector.stop()
        kit.close()


@pytest.mark.slow
@pytest.mark.timeout(600)
async def test_gateway_kill_9_loop_at_random_points_of_an_update(mosquitto, central_key,  # noqa: F811
                                                                 tmp_path: Path) -> None:
    """``edugate run`` killed with SIGKILL again and again, each time at a random point of the same update: the kit
    stays on its old image each time, the copy in its inactive slot only grows, and the last attempt finishes."""
    rng = random.Random(1717)
    image, kit, collector, cfg = _update_rig(tmp_path, central_key, mosquitto.port, "3.0.0", 200_000, 11)
    update = {"device": "lab-kit", "name": "firmware-update", "args": {"image": "kit-3.0.0.bin"}}
    slot = kit.state_dir / "slot1.bin"
    gw: GatewayProcess | None = None
    kept = 0

    def hellos() -> int:
        return len([e for e in collector.records["event"] if e["type"] == "kit_hello"])

    try:
        for _ in range(8):
            before = hellos()
            gw = GatewayProcess(tmp_path / "gw", cfg).start()
            await wait_for_async(lambda: hellos() > before, 20, "the gateway linked to the kit")  # noqa: B023
            sender = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "edugate.central.command_tools", "send", "--key", f"{central_key}.pem",
                "--broker", mosquitto.url, "--school", "kit-school", "--gateway", "gw-lab", "--name",
                "device.command", "--args", json.dumps(update), "--ttl", "120", "--timeout", "30",
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL, cwd=REPO)
            target = min(len(image) - 1, kept + rng.randrange(1, 60_000))
            await wait_for_async(lambda: slot.exists() and slot.stat().st_size >= target, 20,  # noqa: B023
                                 "the transfer past the random point", interval=0.005)
            gw.kill()
            gw = None
            sender.kill()
            await sender.wait()
            assert json.loads((kit.state_dir / "boot.json").read_text())["active"] == 0, "still the old image"
            assert kept <= slot.stat().st_size < len(image), "the copy resumes, it never starts over"
            kept = slot.stat().st_size
        before = hellos()
        gw = GatewayProcess(tmp_path / "gw", cfg).start()
        await wait_for_async(lambda: hellos() > before, 20, "the gateway linked to the kit")
        answer = await asyncio.to_thread(send_command, mosquitto.url, central_key, "kit-school", "gw-lab",
                                         "device.command", update)
        assert answer["status"] == "ok", answer
        assert answer["result"]["result"]["resumed_from"] >= kept  # (a chunk in flight at the kill may land after it)
        assert slot.read_bytes() == image
    finally:
        if gw is not None and gw.proc is not None:
            assert gw.stop() == 0, gw.log()[-3000:]
        collector.stop()
        kit.close()


async def test_a_result_that_finishes_while_the_broker_is_away_is_published_at_the_reconnection(
        mosquitto, central_key, tmp_path: Path) -> None:  # noqa: F811
    """A firmware update outlives the broker: the broker stops mid-transfer, the update finishes meanwhile, and its
    cmd-result is published when the gateway is connected again (it used to be logged and dropped)."""
    image, kit, collector, cfg = _update_rig(tmp_path, central_key, mosquitto.port, "4.0.0", 600_000, 13,
                                             handler_timeout_s=120)
    env = sign_command(load_command_key(Path(f"{central_key}.pem")), school="kit-school", gateway="gw-lab",
                       name="device.command", ttl_s=300,
                       args={"device": "lab-kit", "name": "firmware-update", "args": {"image": "kit-4.0.0.bin"}})
    slot = kit.state_dir / "slot1.bin"
    central = {"hostname": "127.0.0.1", "port": mosquitto.port, "identifier": "central-results",
               "clean_session": False}  # a persistent session: the broker keeps its QoS 1 messages across its restart
    gw = GatewayProcess(tmp_path / "gw", cfg).start()
    try:
        await wait_for_async(lambda: [e for e in collector.records["event"] if e["type"] == "kit_hello"], 20,
                             "the kit linked")
        async with aiomqtt.Client(**central) as client:
            await client.subscribe("edu/v1/kit-school/gw-lab/cmd-result", qos=1)
            await client.publish("edu/v1/kit-school/gw-lab/cmd/device.command", json.dumps(env), qos=1)
        await wait_for_async(lambda: slot.exists() and slot.stat().st_size >= 20_000, 20, "the transfer under way",
                             interval=0.01)
        mosquitto.stop()  # SIGTERM: the broker saves the persistent session
        assert slot.stat().st_size < len(image), "the broker must go before the update ends"
        await wait_for_async(lambda: "a command result waits for the broker" in gw.log(), 60,
                             "the update finished while the broker was away")
        assert json.loads((kit.state_dir / "boot.json").read_text())["active"] == 1, "the kit runs the new image"
        mosquitto.start()
        async with aiomqtt.Client(**central) as client, asyncio.timeout(30):
            async for message in client.messages:
                doc = json.loads(message.payload if isinstance(message.payload, bytes) else b"{}")
                if doc.get("id") == env["id"]:
                    break
        assert doc["status"] == "ok", doc
        assert doc["result"]["result"]["firmware"] == "4.0.0"
    finally:
        assert gw.stop() == 0, gw.log()[-3000:]
        collector.stop()
        kit.close()
