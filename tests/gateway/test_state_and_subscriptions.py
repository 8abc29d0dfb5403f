"""What a running gateway says on a real Mosquitto: its health record and state agree on types, a clean
shutdown marks every device stopped, and only a gateway with ``downlink.enabled`` subscribes to its commands."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from edugate.contract.state import HEALTH_BOOLEAN_VALUES, HEALTH_CORE_VALUES
from edugate.simulators.servers import Mosquitto
from tests.helpers import REPO, Collector, GatewayProcess, wait_for


def gateway_config(port: int, gateway: str, **extra: Any) -> dict[str, Any]:
    return {
        "school": "test-school", "gateway": gateway,
        "uplink": {"port": port, "health_interval_s": 0.5},
        "devices": [
            {"id": "sim-th", "driver": "synthetic", "interval_s": 0.1, "room": "lab-1"},
            {"id": "sim-events", "driver": "synthetic", "interval_s": 0.2, "values": 0, "event_every": 1},
        ],
        **extra,
    }


def health_records(collector: Collector) -> list[dict[str, Any]]:
    with collector.lock:
        return [r["values"] for r in collector.records["telemetry"] if r["device"] == "_gateway"]


def last_health(collector: Collector, gateway: str) -> dict[str, Any]:
    """The values of the newest health record of ``gateway`` the collector received."""
    prefix = f"edu/v1/test-school/{gateway}/telemetry ".encode()
    with collector.lock:
        batches = [json.loads(raw[len(prefix):]) for raw in collector.raw if raw.startswith(prefix)]
    return [r["values"] for batch in batches for r in batch if r["device"] == "_gateway"][-1]


def sent_health(collector: Collector, gateway: str) -> bool:
    """The gateway published a health record (its first comes a health interval after its birth)."""
    prefix = f"edu/v1/test-school/{gateway}/telemetry ".encode()
    with collector.lock:
        return any(raw.startswith(prefix) and b'"_gateway"' in raw for raw in collector.raw)


@pytest.fixture
def broker(tmp_path: Path) -> Any:
    """A Mosquitto that logs every SUBSCRIBE (``<client id> <qos> <topic filter>``) to its log file, which it
    writes as it goes."""
    mosquitto = Mosquitto(tmp_path / "mosquitto", extra_conf="log_type subscribe")
    mosquitto.start()
    yield mosquitto
    mosquitto.stop()


def test_health_record_and_state_use_one_type_for_clock_synced(broker: Mosquitto, tmp_path: Path) -> None:
    collector = Collector(broker.port).start()
    gw = GatewayProcess(tmp_path / "gw", gateway_config(broker.port, "gw-1")).start()
    try:
        health = wait_for(lambda: health_records(collector), 20, "a health record")[-1]
        state = wait_for(lambda: [s for s in collector.states if s and s.get("status") == "online"], 10,
                         "the birth state")[-1]
    finally:
        assert gw.stop() == 0
        collector.stop()
    assert set(HEALTH_CORE_VALUES) <= set(health)
    assert isinstance(state["clock_synced"], bool)
    assert type(health["clock_synced"]) is type(state["clock_synced"])
    for name in HEALTH_BOOLEAN_VALUES:  # booleans on the wire, as the contract and the AsyncAPI schema say
        assert type(health[name]) is bool, (name, health[name])
    assert all(type(v) is not bool for k, v in health.items() if k not in HEALTH_BOOLEAN_VALUES)
    [final] = [line.split("gateway stopped: ", 1)[1] for line in gw.log().splitlines() if "gateway stopped: " in line]
    assert type(json.loads(final)["clock_synced"]) is bool, "the journal's last line says what the wire says"


def test_clean_shutdown_reports_every_device_stopped(broker: Mosquitto, tmp_path: Path) -> None:
    collector = Collector(broker.port).start()
    gw = GatewayProcess(tmp_path / "gw", gateway_config(broker.port, "gw-1")).start()
    online = wait_for(lambda: [s for s in collector.states if s and s.get("status") == "online"
                               and all(d["state"] == "online" for d in s["devices"].values())], 20,
                      "both devices online")
    assert set(online[-1]["devices"]) == {"sim-th", "sim-events"}
    assert gw.stop() == 0
    offline = wait_for(lambda: [s for s in collector.states if s and s.get("status") == "offline"], 10,
                       "the clean offline state")[-1]
    collector.stop()
    assert offline["reason"] == "shutdown"
    assert {device: entry["state"] for device, entry in offline["devices"].items()} == \
        {"sim-th": "stopped", "sim-events": "stopped"}


def test_only_a_gateway_with_the_downlink_subscribes_to_its_commands(broker: Mosquitto, tmp_path: Path) -> None:
    key = tmp_path / "central" / "cmd"
    key.parent.mkdir()
    subprocess.run([sys.executable, "-m", "edugate.central.command_tools", "keygen", "--out", str(key)],
                   check=True, capture_output=True, cwd=REPO)
    collector = Collector(broker.port).start()
    plain = GatewayProcess(tmp_path / "plain", gateway_config(broker.port, "gw-plain")).start()
    commanded = GatewayProcess(tmp_path / "commanded", gateway_config(
        broker.port, "gw-cmd", downlink={"enabled": True, "public_keys": [f"{key}.pub.pem"]})).start()
    try:
        # both have connected, published their birth and then a health record: a subscription would be made by now
        wait_for(lambda: sent_health(collector, "gw-plain") and sent_health(collector, "gw-cmd"), 20,
                 "a health record of each gateway")
        log = broker.log_path.read_text()
        health = {name: last_health(collector, gw) for name, gw in (("plain", "gw-plain"), ("commanded", "gw-cmd"))}
        # the control: the subscription of the gateway with the downlink is in the broker's log
        assert "edugate-test-school-gw-cmd 1 edu/v1/test-school/gw-cmd/cmd/#" in log, log
    finally:
        assert plain.stop() == 0 and commanded.stop() == 0
        collector.stop()
    assert "gw-plain/cmd" not in log, log
    # every value either sends is in the contract's health schema, with its type; the command counters only
    # with the downlink
    schema = yaml.safe_load((REPO / "docs" / "asyncapi.yaml").read_text())["components"]["schemas"]
    properties = schema["gatewayHealthValues"]["properties"]
    json_type = {bool: "boolean", int: "integer", float: "number"}
    for values in health.values():
        assert set(values) <= set(properties), set(values) - set(properties)
        for name, value in values.items():
            assert json_type[type(value)] == properties[name]["type"] or \
                (properties[name]["type"] == "number" and type(value) is int), (name, value)
    commands = {"commands_received", "commands_ok", "commands_failed", "commands_rejected"}
    assert commands <= set(health["commanded"]) and not commands & set(health["plain"])
