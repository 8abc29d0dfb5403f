"""The downlink as the uplink uses it (``Downlink.dispatch``): a command is checked at once and runs in a task
of its own, so a long one (a kit's firmware update) does not hold up the next; one device's commands, and the
gateway-wide ones, still run in arrival order. The same through the real gateway and broker is in
``tests/drivers/kit/test_e2e.py`` (a ping answered during a firmware update)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edugate.gateway.downlink.commands import CommandArgs, Downlink, DownlinkConfig, sign_command
from tests.gateway.test_commands import FakeClock, write_public
from tests.helpers import wait_for_async

KEY = Ed25519PrivateKey.generate()


class GatedDevice:
    """A device whose commands finish only when the test opens their gate; records start and end order."""

    def __init__(self) -> None:
        self.gates: dict[str, asyncio.Event] = {}
        self.log: list[str] = []

    async def command(self, name: str, args: Mapping[str, Any]) -> Mapping[str, Any]:
        self.log.append(f"start {name}")
        await self.gates.setdefault(name, asyncio.Event()).wait()
        self.log.append(f"end {name}")
        return {"done": name}


class Results:
    def __init__(self) -> None:
        self.by_name: dict[str, dict[str, Any]] = {}
        self.order: list[str] = []

    async def publish(self, topic: str, payload: bytes) -> None:
        assert topic == "edu/v1/s/g/cmd-result"
        doc = json.loads(payload)
        key = doc["name"] if doc["name"] != "device.command" else doc.get("result", {}).get("name", doc["status"])
        self.by_name[key] = doc
        self.order.append(key)


def _downlink(tmp: Path, devices: dict[str, GatedDevice]) -> tuple[Downlink, FakeClock]:
    clock = FakeClock()
    cfg = DownlinkConfig(enabled=True, public_keys=[write_public(KEY, tmp / "central.pub.pem")], handler_timeout_s=10)
    return Downlink.from_config(cfg, school="s", gateway="g", outbox_path=tmp / "outbox.sqlite", clock=clock,
                                device_lookup=devices.get), clock


def _message(clock: FakeClock, name: str, args: dict[str, Any] | None = None) -> tuple[str, bytes]:
    env = sign_command(KEY, school="s", gateway="g", name=name, args=args, ttl_s=300, issued_at_ms=clock.now)
    return f"edu/v1/s/g/cmd/{name}", json.dumps(env).encode()


def _device(clock: FakeClock, device: str, name: str) -> tuple[str, bytes]:
    return _message(clock, "device.command", {"device": device, "name": name})


async def test_a_long_command_does_not_hold_up_the_next_and_one_device_keeps_its_order(tmp_path: Path) -> None:
    kit, relay = GatedDevice(), GatedDevice()
    downlink, clock = _downlink(tmp_path, {"kit": kit, "relay": relay})
    results = Results()

    await downlink.dispatch(*_device(clock, "kit", "firmware-update"), results.publish)  # runs until its gate opens
    await downlink.dispatch(*_device(clock, "kit", "led"), results.publish)  # same device: waits its turn
    await downlink.dispatch(*_message(clock, "ping"), results.publish)
    await downlink.dispatch(*_device(clock, "relay", "pulse"), results.publish)
    relay.gates.setdefault("pulse", asyncio.Event()).set()
    await wait_for_async(lambda: {"ping", "pulse"} <= set(results.by_name), 5, "ping and the relay answered")
    assert results.by_name["ping"]["status"] == "ok" and results.by_name["pulse"]["status"] == "ok"
    assert kit.log == ["start firmware-update"], "the kit's second command waits for its first"
    assert downlink.running == 2

    kit.gates.setdefault("led", asyncio.Event()).set()
    kit.gates["firmware-update"].set()
    await wait_for_async(lambda: downlink.running == 0, 5, "the kit's commands done")
    assert kit.log == ["start firmware-update", "end firmware-update", "start led", "end led"]
    assert results.order[-2:] == ["firmware-update", "led"]
    assert all(r["status"] == "ok" for r in results.by_name.values())
    assert downlink.stats.ok == 4


async def test_a_refusal_is_published_before_dispatch_returns_and_others_are_ignored(tmp_path: Path) -> None:
    downlink, clock = _downlink(tmp_path, {})
    results = Results()
    topic, payload = _message(clock, "ping")
    await downlink.dispatch(topic, payload, results.publish)
    await wait_for_async(lambda: results.order, 5, "the ping answered")
    await downlink.dispatch(topic, payload, results.publish)  # the same id again: a replay
    assert results.by_name["ping"]["status"] == "rejected" and results.by_name["ping"]["code"] == "replay"
    await downlink.dispatch("edu/v1/s/g/state", payload, results.publish)  # not a command topic
    await downlink.dispatch(topic, b"", results.publish)  # a retained command cleared
    assert len(results.order) == 2 and downlink.running == 0


async def test_gateway_wide_commands_run_one_at_a_time_and_a_lost_connection_is_logged(
        tmp_path: Path, caplog: Any) -> None:
    downlink, clock = _downlink(tmp_path, {})
    gates = {"t.first": asyncio.Event(), "t.second": asyncio.Event()}
    ran: list[str] = []

    def handler(name: str) -> Any:
        async def run(_: CommandArgs) -> dict[str, Any]:
            ran.append(f"start {name}")
            await gates[name].wait()
            ran.append(f"end {name}")
            return {}
        return run

    for name in gates:
        downlink.registry.register(name, CommandArgs, handler(name))

    async def gone(topic: str, payload: bytes) -> None:
        raise ConnectionError("not connected to the broker")

    await downlink.dispatch(*_message(clock, "t.first"), gone)
    await downlink.dispatch(*_message(clock, "t.second"), gone)
    gates["t.second"].set()
    await wait_for_async(lambda: ran == ["start t.first"], 5, "the first gateway-wide command running")
    gates["t.first"].set()
    await wait_for_async(lambda: downlink.running == 0, 5, "both done")
    assert ran == ["start t.first", "end t.first", "start t.second", "end t.second"]
    assert "t.second" in caplog.text and "could not be published (ConnectionError" in caplog.text
