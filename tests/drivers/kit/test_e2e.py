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

import pytest

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


async def test_kit_readings_commands_and_a_signed_update_through_gateway_broker_and_store(
        mosquitto, victoria, ingest, central_key, tmp_path: Path) -> None:  # noqa: F811
    firmware = tmp_path / "firmware"
    firmware.mkdir()
    image = random.Random(5).randbytes(8000)
    key = load_private_key(Path(f"{central_key}.pem"))  # central's key signs firmware too (in the sample: its own)
    (firmware / "kit-1.1.0.bin").write_bytes(image)
    manifest_path(firmware / "kit-1.1.0.bin").write_text(sign_image(image, "microbit-v2", "1.1.0", key).to_json())

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

        answer = await asyncio.to_thread(send_command, mosquitto.url, central_key, "kit-school", "gw-lab",
                                         "device.command", {"device": "lab-kit", "name": "firmware-update",
                                                            "args": {"image": "kit-1.1.0.bin"}})
        assert answer["status"] == "ok", answer
        assert answer["result"]["result"] == {"result": "ok", "firmware": "1.1.0", "resumed_from": 0,
                                              "bytes_sent": 8000}
        await wait_for_async(lambda: [e for e in hellos() if e["data"]["firmware"] == "1.1.0"], 20,
                             "a kit_hello with the new firmware")

        def stored() -> list | None:
            return export(victoria.url, '{__name__="edugate_temperature",device="lab-kit"}') or None

        [series] = await wait_for_async(stored, 20, "kit temperatures in VictoriaMetrics")
        assert series["metric"]["room"] == "stem-lab" and series["metric"]["school"] == "kit-school"
        assert all(15 <= v <= 25 for v in series["values"])
    finally:
        assert gw.stop() == 0, gw.log()[-3000:]
        collector.stop()
        kit.close()


async def test_gateway_kill_9_during_an_update_leaves_the_kit_on_its_old_image_and_the_next_attempt_resumes(
        mosquitto, central_key, tmp_path: Path) -> None:  # noqa: F811
    firmware = tmp_path / "firmware"
    firmware.mkdir()
    image = random.Random(9).randbytes(240_000)
    key = load_private_key(Path(f"{central_key}.pem"))
    (firmware / "kit-2.0.0.bin").write_bytes(image)
    manifest_path(firmware / "kit-2.0.0.bin").write_text(sign_image(image, "microbit-v2", "2.0.0", key).to_json())
    kit = KitNodeProcess(tmp_path / "ttyKIT", tmp_path / "kit-state", interval_ms=1000,
                         pubkey=f"{central_key}.pub.pem")
    kit.start()
    collector = Collector(mosquitto.port).start()
    cfg = {
        "school": "kit-school", "gateway": "gw-lab",
        "uplink": {"port": mosquitto.port, "health_interval_s": 3600},
        "downlink": {"enabled": True, "public_keys": [f"{central_key}.pub.pem"]},
        "devices": [{"id": "lab-kit", "driver": "kit", "port": str(kit.link), "firmware_dir": str(firmware),
                     "firmware_key": f"{central_key}.pub.pem"}],
    }
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
