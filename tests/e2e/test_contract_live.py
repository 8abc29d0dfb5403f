"""Every message a real gateway and a real ingest worker put on a real Mosquitto is valid against
docs/asyncapi.yaml, as a third-party client sees it: payloads checked with ``jsonschema``, QoS and the retained
flag against each channel's MQTT binding (an MQTT 5 subscriber at QoS 1 with retain-as-published), and the
door's ``reason: no allow-list`` arriving in the store as the label the contract promises (issue 13)."""

from __future__ import annotations

import asyncio
import json
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import paho.mqtt.client as mqtt
import pytest
import yaml
from paho.mqtt.subscribeoptions import SubscribeOptions

from edugate.contract.commands import load_private_key, sign_command
from edugate.contract.records import EVENT_LABEL_KEYS
from edugate.contract.state import HEALTH_VALUES
from edugate.simulators.em4100 import EM4100Simulator
from edugate.simulators.servers import Mosquitto, VictoriaMetrics
from tests.helpers import REPO, GatewayProcess, wait_for, wait_for_async
from tests.vmquery import export

SCHOOL, GATEWAY = "contract-school", "gw-live"
CARD = bytes.fromhex("0F00BA4411")  # a canary UID: no spelling of it may cross the broker
PER_DEVICE_COUNTERS = {"frames", "taps", "debounced", "bad_frames", "timeouts", "errors", "junk_bytes", "readings"}


@pytest.fixture(scope="module")
def asyncapi() -> dict[str, Any]:
    loaded = yaml.safe_load((REPO / "docs" / "asyncapi.yaml").read_text(encoding="utf-8"))
    assert isinstance(loaded, dict)
    return loaded


def validator(doc: dict[str, Any], schema: dict[str, Any]) -> jsonschema.protocols.Validator:
    """A validator of ``schema`` whose ``#/components/...`` references resolve in the AsyncAPI document
    (AsyncAPI 2.6 schemas are a superset of JSON Schema draft 7)."""
    root = {"components": doc["components"], "allOf": [schema]}
    jsonschema.Draft7Validator.check_schema(root)
    return jsonschema.Draft7Validator(root)


def message_schema(doc: dict[str, Any], message: dict[str, Any]) -> dict[str, Any]:
    """The payload schema of a channel's message (a ``$ref`` to a message, or a ``oneOf`` of such)."""
    if "oneOf" in message:
        return {"oneOf": [message_schema(doc, m) for m in message["oneOf"]]}
    name = message["$ref"].removeprefix("#/components/messages/")
    payload = doc["components"]["messages"][name]["payload"]
    assert isinstance(payload, dict)
    return payload


def channel_of(topic: str) -> tuple[str, dict[str, str]]:
    """``edu/v1/s/g/cmd/ping`` -> (``edu/v1/{school}/{gateway}/cmd/{command}``, its parameters)."""
    parts = topic.split("/")
    assert parts[:2] == ["edu", "v1"] and len(parts) in (5, 6), topic
    params = {"school": parts[2], "gateway": parts[3]}
    if len(parts) == 6:
        assert parts[4] == "cmd", topic
        params["command"] = parts[5]
        return "edu/v1/{school}/{gateway}/cmd/{command}", params
    return f"edu/v1/{{school}}/{{gateway}}/{parts[4]}", params


@dataclass
class Message:
    topic: str
    payload: bytes
    qos: int
    retain: bool


@dataclass
class Wire:
    """An MQTT 5 client subscribed to ``edu/v1/#`` at QoS 1 with retain-as-published, as the operators guide's
    ``mosquitto_sub -V mqttv5 -q 1 --retain-as-published`` is: it sees each message's QoS and retained flag."""

    port: int
    messages: list[Message] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="third-party",
                                  protocol=mqtt.MQTTv5)
        self.client.on_message = self._on_message
        self.subscribed = threading.Event()
        self.client.on_subscribe = lambda *_: self.subscribed.set()
        self.client.on_connect = lambda c, *_: c.subscribe(
            "edu/v1/#", options=SubscribeOptions(qos=1, retainAsPublished=True))

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        with self.lock:
            self.messages.append(Message(msg.topic, bytes(msg.payload), msg.qos, bool(msg.retain)))

    def start(self) -> Wire:
        self.client.connect("127.0.0.1", self.port, keepalive=10)
        self.client.loop_start()
        assert self.subscribed.wait(10), "subscribed"
        return self

    def stop(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()

    def publish(self, topic: str, payload: bytes) -> None:
        self.client.publish(topic, payload, qos=1).wait_for_publish(10)

    def seen(self) -> list[Message]:
        with self.lock:
            return list(self.messages)

    def payloads(self, suffix: str) -> list[Any]:
        return [json.loads(m.payload) for m in self.seen() if m.topic.endswith(suffix) and m.payload]


def gateway_config(broker: Mosquitto, key: Path, tmp_path: Path) -> dict[str, Any]:
    return {
        "school": SCHOOL, "gateway": GATEWAY,
        "uplink": {"port": broker.port, "health_interval_s": 0.5},
        "downlink": {"enabled": True, "public_keys": [f"{key}.pub.pem"]},
        "devices": [
            {"id": "lab-th", "driver": "synthetic", "interval_s": 0.2, "room": "lab-1"},
            {"id": "lab-door", "driver": "em4100", "room": "lab-1", "role": "door",  # no allow-list yet: deny
             "port": str(tmp_path / "ttyDOOR")},
        ],
    }


def send_commands(wire: Wire, key: Path) -> None:
    """One command that runs, one that fails, one refused before running, as central could send them."""
    private = load_private_key(Path(f"{key}.pem"))
    base = f"edu/v1/{SCHOOL}/{GATEWAY}/cmd/"
    ping = sign_command(private, school=SCHOOL, gateway=GATEWAY, name="ping")
    failing = sign_command(private, school=SCHOOL, gateway=GATEWAY, name="device.command",
                           args={"device": "relay-9", "name": "pulse", "args": {}})
    expired = sign_command(private, school=SCHOOL, gateway=GATEWAY, name="ping", ttl_s=60,
                           issued_at_ms=ping["issued_at"] - 600_000)
    for envelope in (ping, failing, expired):
        wire.publish(base + envelope["name"], json.dumps(envelope).encode())


async def test_what_crosses_the_broker_is_what_asyncapi_says(
        asyncapi: dict[str, Any], mosquitto: Mosquitto, victoria: VictoriaMetrics, ingest: Path,
        central_key: Path, tmp_path: Path) -> None:
    wire = Wire(mosquitto.port).start()
    try:
        async with EM4100Simulator(tmp_path / "ttyDOOR") as door:
            gw = GatewayProcess(tmp_path / "gw", gateway_config(mosquitto, central_key, tmp_path)).start()
            try:
                await wait_for_async(lambda: ": reading cards" in gw.log(), 20, "the door reader open")
                door.tap(CARD)
                await wait_for_async(lambda: wire.payloads("/event"), 20, "the door's card tap")
                send_commands(wire, central_key)
                await wait_for_async(lambda: len(wire.payloads("/cmd-result")) >= 3, 20, "three command results")
                await wait_for_async(lambda: wire.payloads("/stored") and any(
                    r["device"] == "_gateway" for b in wire.payloads("/telemetry") for r in b), 20,
                    "central's confirmation and a health record")
            finally:
                assert await asyncio.to_thread(gw.stop) == 0
        wait_for(lambda: any(s.get("status") == "offline" for s in wire.payloads("/state")), 10, "the offline state")
    finally:
        wire.stop()

    seen = wire.seen()
    checked: dict[str, int] = {}
    for msg in seen:
        name, params = channel_of(msg.topic)
        channel = asyncapi["channels"][name]  # a topic the contract does not name fails here
        operation = channel.get("publish") or channel["subscribe"]
        binding = operation["bindings"]["mqtt"]
        assert (msg.qos, msg.retain) == (binding["qos"], binding["retain"]), (msg.topic, msg.qos, msg.retain)
        for param, value in params.items():
            parameter = channel["parameters"][param]
            if "$ref" in parameter:
                parameter = asyncapi["components"]["parameters"][parameter["$ref"].rsplit("/", 1)[-1]]
            validator(asyncapi, parameter["schema"]).validate(value)
        payload = json.loads(msg.payload)
        errors = sorted(validator(asyncapi, message_schema(asyncapi, operation["message"])).iter_errors(payload),
                        key=str)
        assert not errors, (msg.topic, payload, [e.message for e in errors])
        if name.endswith("/cmd/{command}"):
            assert payload["name"] == params["command"]
        checked[name] = checked.get(name, 0) + 1
    assert set(checked) == set(asyncapi["channels"]), f"every channel was seen: {checked}"

    health_schema = asyncapi["components"]["schemas"]["gatewayHealthValues"]
    health = [r["values"] for b in wire.payloads("/telemetry") for r in b if r["device"] == "_gateway"]
    for values in health:
        validator(asyncapi, health_schema).validate(values)
        assert set(values) == set(HEALTH_VALUES), set(values) ^ set(HEALTH_VALUES)  # with the downlink, no models
        assert not PER_DEVICE_COUNTERS & set(values), "per-device counters are on /api/status only"

    results = {(r["status"], r.get("code")) for r in wire.payloads("/cmd-result")}
    assert results == {("ok", None), ("failed", None), ("rejected", "expired")}
    states = [(s["status"], s.get("reason")) for s in wire.payloads("/state")]
    assert states[0] == ("online", None) and states[-1] == ("offline", "shutdown")
    [tap] = [r for b in wire.payloads("/event") for r in b if r["type"] == "card_tap"]
    assert tap["data"]["decision"] == "deny" and tap["data"]["reason"] == "no allow-list"
    assert set(tap["data"]) & set(EVENT_LABEL_KEYS) >= {"role", "decision", "reason"}
    everything = b"".join(m.payload for m in seen).lower()
    assert CARD.hex().encode() not in everything and str(int.from_bytes(CARD[-4:], "big")).encode() not in everything

    # the contract's promise for the refusal reason: the label, encoded, in the store
    series = wait_for(lambda: export(victoria.url, '{__name__="edugate_event_count",device="lab-door"}'), 20,
                      "the tap counted in the store")
    assert [s["metric"].get("reason") for s in series] == ["no_allow-list"]
