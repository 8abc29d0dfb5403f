"""A projector end to end: the simulated PJLink device over real TCP -> the real gateway (``edugate run``) ->
Mosquitto -> ingest -> VictoriaMetrics, and signed power/input commands back. A wrong password, a garbled
answer and a vanished device: each clear in the gateway's state document and log, and recovered from."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest

from edugate.simulators.pjlink import PJLinkSimulator
from tests.e2e.conftest import central_key, ingest  # noqa: F401 - fixtures
from tests.helpers import REPO, Collector, GatewayProcess, send_command, wait_for_async
from tests.vmquery import export

pytestmark = pytest.mark.timeout(90)


def _send(broker_url: str, key: Path, args: dict) -> tuple[int, dict]:
    result = subprocess.run(
        [sys.executable, "-m", "edugate.central.command_tools", "send", "--key", f"{key}.pem", "--broker", broker_url,
         "--school", "class-school", "--gateway", "gw-a", "--name", "device.command", "--args", json.dumps(args),
         "--ttl", "120", "--timeout", "15"], capture_output=True, text=True, cwd=REPO)
    return result.returncode, json.loads(result.stdout.strip().splitlines()[-1])


async def test_projector_through_gateway_broker_and_store(mosquitto, victoria, ingest, central_key,  # noqa: F811
                                                          tmp_path: Path) -> None:
    password = tmp_path / "pjlink.pass"
    password.write_text("wrong-one\n")
    async with PJLinkSimulator(password="sesame", hours_per_s=50.0) as sim:
        collector = Collector(mosquitto.port).start()
        cfg = {
            "school": "class-school", "gateway": "gw-a",
            "uplink": {"port": mosquitto.port, "health_interval_s": 1},
            "downlink": {"enabled": True, "public_keys": [f"{central_key}.pub.pem"]},
            "devices": [{"id": "room101-projector", "driver": "pjlink", "room": "room-101", "host": "127.0.0.1",
                         "port": sim.port, "password_file": str(password), "poll_interval_s": 1, "timeout_s": 1,
                         "reconnect_max_s": 2}],
        }
        gw = GatewayProcess(tmp_path / "gw", cfg).start()

        def device_state() -> dict:
            states = [s for s in collector.states if s and s.get("devices")]
            return states[-1]["devices"]["room101-projector"] if states else {}

        def projector(kind: str = "telemetry") -> list[dict]:
            return [r for r in collector.records[kind] if r["device"] == "room101-projector"]

        try:
            # 1. a wrong password: offline, said once, nothing sent; fixing the file is enough
            await wait_for_async(lambda: "wrong PJLink password" in str(device_state().get("last_error")), 20,
                                 "the wrong password in the state document")
            assert device_state()["state"] == "offline" and not projector()
            assert sim.auth_failures >= 1
            assert gw.log().count("wrong PJLink password (the device answered PJLINK ERRA)") == 1
            password.write_text("sesame\n")
            [info] = await wait_for_async(lambda: projector("event"), 20, "the device_info event")
            assert info["type"] == "device_info" and info["room"] == "room-101"
            assert {k: info["data"][k] for k in ("make", "model", "serial", "firmware")} == {
                "make": "EduSim", "model": "PJ-2000 WXGA", "serial": "SN4352000123", "firmware": "1.04"}
            await wait_for_async(lambda: device_state().get("state") == "online", 20, "the projector online")
            assert "back online after" in gw.log()

            # 2. signed commands: power on, a bad input refused with the device's reason
            answer = await asyncio.to_thread(send_command, mosquitto.url, central_key, "class-school", "gw-a",
                                             "device.command", {"device": "room101-projector", "name": "power",
                                                                "args": {"value": "on"}})
            assert answer["status"] == "ok", answer
            assert answer["result"]["result"] == {"command": "power", "value": "on", "result": "OK"}
            await wait_for_async(lambda: [r for r in projector() if r["values"]["power_on"]], 20, "power on")
            code, answer = await asyncio.to_thread(_send, mosquitto.url, central_key,
                                                   {"device": "room101-projector", "name": "input",
                                                    "args": {"value": "19"}})
            assert code == 1 and answer["status"] == "failed"
            assert "refused input 19: ERR2 (out of parameter)" in answer["reason"]

            # 3. a garbled answer: counted, said, and the next poll works
            sim.garble(1)
            await wait_for_async(lambda: "garbled PJLink answer" in str(device_state().get("last_error")), 20,
                                 "the garbled answer in the state document")
            n = len(projector())
            await wait_for_async(lambda: len(projector()) > n + 1, 20, "readings after the garbage")

            # 4. the device vanishes, and comes back
            await sim.stop()
            await wait_for_async(lambda: device_state().get("state") == "offline", 20, "the projector offline")
            assert "connection refused" in device_state()["last_error"]
            await sim.start()
            await wait_for_async(lambda: device_state().get("state") == "online", 20, "the projector back")
            n = len(projector())
            await wait_for_async(lambda: len(projector()) > n, 20, "readings after it came back")

            def stored() -> list | None:
                return export(victoria.url, '{__name__="edugate_lamp_hours",device="room101-projector"}') or None

            [series] = await wait_for_async(stored, 30, "lamp hours in VictoriaMetrics")
            assert series["metric"]["room"] == "room-101" and max(series["values"]) > 1200
            assert "sesame" not in gw.log() and "wrong-one" not in gw.log()
        finally:
            assert gw.stop() == 0, gw.log()[-3000:]
            collector.stop()
