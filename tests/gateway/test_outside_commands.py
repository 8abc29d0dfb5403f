"""Outside check of the signed downlink through a real gateway (``edugate run``) and Mosquitto: garbage on the
command topic, a payload nested thousands deep, and 100 odd commands at once (huge args, deep args, unknown
devices, pings) each get a clear cmd-result; the gateway stays up and answers a ping afterwards."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from edugate.contract.commands import load_private_key, sign_command
from tests.e2e.conftest import central_key  # noqa: F401 - fixture
from tests.helpers import GatewayProcess

pytestmark = pytest.mark.timeout(60)
CMD = "edu/v1/os/gw/cmd/"


def _deep(levels: int) -> dict[str, Any]:
    doc: dict[str, Any] = {"leaf": 1}
    for _ in range(levels):
        doc = {"x": doc}
    return doc


async def test_odd_commands_get_clear_answers_and_the_gateway_stays_up(
        mosquitto, central_key: Path, tmp_path: Path) -> None:  # noqa: F811
    key = load_private_key(Path(f"{central_key}.pem"))
    cfg = {"school": "os", "gateway": "gw", "uplink": {"port": mosquitto.port, "health_interval_s": 3600},
           "downlink": {"enabled": True, "public_keys": [f"{central_key}.pub.pem"]},
           "devices": [{"id": "sim-1", "driver": "synthetic", "room": "r", "interval_s": 5}]}
    gw = GatewayProcess(tmp_path / "gw", cfg).start()
    try:
        def signed(name: str, args: dict[str, Any] | None = None) -> dict[str, Any]:
            return sign_command(key, school="os", gateway="gw", name=name, args=args, ttl_s=120)

        odd = [signed("device.command", {"device": "ghost", "name": "pulse"}),
               signed("device.command", {"device": "sim-1", "name": "x" * 64, "args": {"a": "y" * 50_000}}),
               signed("device.command", {"device": "sim-1", "name": "deep", "args": _deep(200)}),
               signed("ping", {"unexpected": [1, 2, 3]})]
        batch = odd + [signed("ping") if i % 2 else signed("device.command", {"device": f"ghost-{i}", "name": "on"})
                       for i in range(100 - len(odd))]
        answers: dict[str, dict[str, Any]] = {}
        refused: list[dict[str, Any]] = []  # answers to payloads without an id (not an envelope at all)
        async with aiomqtt.Client("127.0.0.1", mosquitto.port) as client:
            await client.subscribe("edu/v1/os/gw/cmd-result", qos=1)
            # nested 20000 deep (40 kB, under the size limit): the JSON parser's recursion limit
            await client.publish(CMD + "ping", b"[" * 20_000 + b"]" * 20_000, qos=1)
            await client.publish(CMD + "ping", b"\x00\xff garbage", qos=1)
            await asyncio.gather(*(client.publish(CMD + env["name"], json.dumps(env), qos=1) for env in batch))
            last = signed("ping")
            await client.publish(CMD + "ping", json.dumps(last), qos=1)
            async with asyncio.timeout(30):
                async for message in client.messages:
                    doc = json.loads(message.payload if isinstance(message.payload, bytes) else b"{}")
                    if doc.get("id") is None:
                        refused.append(doc)
                    else:
                        answers[doc["id"]] = doc
                    if last["id"] in answers and len(answers) >= len(batch) + 1 and len(refused) >= 2:
                        break
        assert answers[last["id"]]["status"] == "ok", "the gateway answers after the garbage"
        assert sorted(a["code"] for a in refused) == ["bad_json", "bad_json"], refused
        assert all(a["reason"] for a in answers.values() if a["status"] != "ok")
        by_id = {env["id"]: answers[env["id"]] for env in batch}
        assert "unknown device 'ghost'" in by_id[odd[0]["id"]]["reason"]
        assert len(by_id) == 100 and gw.proc is not None and gw.proc.poll() is None
    finally:
        code = gw.stop()
    assert code == 0, gw.log()[-3000:]
    assert "Traceback" not in gw.log() and "uplink failed" not in gw.log(), gw.log()[-3000:]
