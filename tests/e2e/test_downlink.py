"""Signed commands through a real Mosquitto: ``edugate send`` (a subprocess) -> broker -> the gateway side,
run the way the uplink runs it (subscribe ``cmd/#``, ``Downlink.handle``, publish the result) -> back."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from edugate.gateway.downlink.commands import Downlink, DownlinkConfig, load_private_key, sign_command
from edugate.gateway.runtime.clock import Clock
from edugate.simulators.servers import Mosquitto
from tests.helpers import REPO


class Relay:
    """A device whose driver accepts one command."""

    def __init__(self) -> None:
        self.pulses: list[int] = []

    async def command(self, name: str, args: Mapping[str, Any]) -> Mapping[str, Any]:
        self.pulses.append(int(args["ms"]))
        return {"pulsed_ms": args["ms"]}


async def serve(downlink: Downlink, port: int, ready: asyncio.Event) -> None:
    """What ``Uplink._watch`` does with the downlink enabled."""
    async with aiomqtt.Client("127.0.0.1", port, identifier="edugate-s-g", clean_session=True) as client:
        await client.subscribe("edu/v1/s/g/cmd/#", qos=1)
        ready.set()
        async for message in client.messages:
            payload = message.payload if isinstance(message.payload, bytes | bytearray) else b""
            answer = await downlink.handle(str(message.topic), payload)
            if answer is not None:
                await client.publish(*answer, qos=1, timeout=10)


@dataclass
class Site:
    broker: str
    dir: Path
    key: Path  # central's private key
    relay: Relay

    async def cli(self, *args: str) -> tuple[int, dict[str, Any] | None, str]:
        """``python -m edugate.central.command_tools ARGS``: exit code, the JSON it printed (if any), its stderr."""
        proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "edugate.central.command_tools",
                                                    *args, cwd=REPO,
                                                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode is not None
        return proc.returncode, json.loads(out) if out.startswith(b"{") else None, err.decode()

    async def send(self, *args: str) -> tuple[int, dict[str, Any] | None, str]:
        return await self.cli("send", "--broker", self.broker, "--timeout", "15", *args)


@pytest.fixture
async def site(mosquitto: Mosquitto, tmp_path: Path) -> AsyncIterator[Site]:
    key_base = tmp_path / "central" / "central-cmd"
    placeholder = Site(mosquitto.url, tmp_path, key_base.with_suffix(".pem"), Relay())
    code, _, err = await placeholder.cli("keygen", "--out", str(key_base))
    assert code == 0, err
    cfg = DownlinkConfig(enabled=True, public_keys=[tmp_path / "central" / "central-cmd.pub.pem"])
    downlink = Downlink.from_config(cfg, school="s", gateway="g", outbox_path=tmp_path / "gw" / "outbox.sqlite",
                                    clock=Clock("always"), device_lookup={"relay-1": placeholder.relay}.get)
    ready = asyncio.Event()
    task = asyncio.create_task(serve(downlink, mosquitto.port, ready), name="gateway-side")
    await asyncio.wait_for(ready.wait(), 10)
    yield placeholder
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def common(site: Site, name: str, *, gateway: str = "g") -> list[str]:
    return ["--key", str(site.key), "--school", "s", "--gateway", gateway, "--name", name]


async def test_ping_and_a_device_command_are_answered_ok(site: Site) -> None:
    code, result, err = await site.send(*common(site, "ping"))
    assert code == 0, err
    assert result is not None and result["status"] == "ok" and result["name"] == "ping"
    assert result["result"]["version"] and abs(result["result"]["time"] - time.time() * 1000) < 60_000

    code, result, err = await site.send(*common(site, "device.command"), "--args",
                                        '{"device": "relay-1", "name": "pulse", "args": {"ms": 250}}')
    assert code == 0, err
    assert result is not None and result["result"] == {"device": "relay-1", "name": "pulse",
                                                       "result": {"pulsed_ms": 250}}
    assert site.relay.pulses == [250]


async def test_expired_forged_and_replayed_commands_are_rejected(site: Site) -> None:
    # expired: signed ten minutes ago with a one-minute lifetime
    expired = sign_command(load_private_key(site.key), school="s", gateway="g", name="ping", ttl_s=60,
                           issued_at_ms=time.time_ns() // 1_000_000 - 600_000)
    (site.dir / "expired.json").write_text(json.dumps(expired))
    code, result, err = await site.send("--envelope", str(site.dir / "expired.json"))
    assert code == 1 and result is not None
    assert (result["status"], result["code"], result["id"]) == ("rejected", "expired", expired["id"])
    assert "send: rejected (expired): expired 9 min ago" in err

    # forged: a well-formed command signed with a key the gateway does not trust
    code, _, err = await site.cli("keygen", "--out", str(site.dir / "intruder"))
    assert code == 0, err
    code, result, err = await site.send("--key", str(site.dir / "intruder.pem"), "--school", "s", "--gateway", "g",
                                        "--name", "device.command", "--args",
                                        '{"device": "relay-1", "name": "pulse", "args": {"ms": 9999}}')
    assert code == 1 and result is not None and result["code"] == "bad_signature", err
    assert site.relay.pulses == []

    # replay: the same signed envelope twice (sign once, send it from the file twice)
    code, envelope, err = await site.cli("sign", *common(site, "device.command"), "--args",
                                         '{"device": "relay-1", "name": "pulse", "args": {"ms": 100}}')
    assert code == 0 and envelope is not None, err
    (site.dir / "once.json").write_text(json.dumps(envelope))
    first = await site.send("--envelope", str(site.dir / "once.json"))
    second = await site.send("--envelope", str(site.dir / "once.json"))
    assert first[0] == 0 and first[1] is not None and first[1]["status"] == "ok"
    assert second[0] == 1 and second[1] is not None and second[1]["code"] == "replay"
    assert second[1]["id"] == envelope["id"]
    assert site.relay.pulses == [100]


async def test_no_answer_from_an_absent_gateway_exits_3(site: Site) -> None:
    code, result, err = await site.cli("send", "--broker", site.broker, "--timeout", "1",
                                       *common(site, "ping", gateway="nobody"))
    assert code == 3 and result is None and "no answer to command" in err
    code, _, err = await site.cli("send", "--broker", "mqtt://127.0.0.1:1", *common(site, "ping"))
    assert code == 3 and "cannot reach the broker 127.0.0.1:1" in err
