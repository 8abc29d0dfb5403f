"""What the gateways need from MQTT besides QoS 1, on the 3-node NATS cluster: the retained birth seen from
another node, the last will when a gateway dies, and the retained state surviving the death of a node (the
state the gateway published again on the node it moved to)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from edugate.simulators.nats_cluster import NatsCluster, NatsNode
from edugate.simulators.servers import find_binary
from tests.central.cluster.test_nats_failover import CONNECTED, connected_node
from tests.helpers import GatewayProcess, wait_for

try:
    find_binary("nats-server")
except FileNotFoundError:
    pytest.skip("nats-server is not installed (apt-get install -y nats-server)", allow_module_level=True)

pytestmark = pytest.mark.timeout(120)


class StateWatcher:
    """A subscriber to every gateway state, on one node; keeps (retained flag, status) as they arrive."""

    def __init__(self, node: NatsNode, name: str) -> None:
        self.seen: list[tuple[bool, str]] = []
        self.lock = threading.Lock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=name)
        self.client.on_message = self._on_message
        self.client.on_connect = lambda c, *_: c.subscribe("edu/v1/+/+/state", qos=1)
        self.client.connect(node.host, node.mqtt_port, keepalive=5)
        self.client.loop_start()

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        with self.lock:
            self.seen.append((bool(msg.retain), json.loads(msg.payload)["status"]))

    def statuses(self) -> list[tuple[bool, str]]:
        with self.lock:
            return list(self.seen)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[NatsCluster]:
    nodes = NatsCluster(tmp_path / "nats").start()
    yield nodes
    nodes.stop()


def test_birth_will_and_retained_state_across_a_node_loss(tmp_path: Path, cluster: NatsCluster) -> None:
    gw = GatewayProcess(tmp_path / "gw", {
        "school": "city-school", "gateway": "gw-1",
        "uplink": {"brokers": cluster.mqtt_brokers, "health_interval_s": 5, "keepalive_s": 2},
        "devices": [{"id": "probe", "driver": "synthetic", "interval_s": 0.5, "values": 0}],
    }).start()
    wait_for(lambda: CONNECTED.search(gw.log_path.read_bytes()), 20, "the gateway connected")
    node, _ = connected_node(gw, cluster)
    other = next(n for n in cluster.nodes if n is not node)

    late = StateWatcher(other, "watcher-1")  # subscribes after the birth, on another node
    try:
        wait_for(lambda: (True, "online") in late.statuses(), 20, "the retained birth, on another node")
        gw.kill()  # kill -9: no DISCONNECT, so the node publishes the last will
        wait_for(lambda: (False, "offline") in late.statuses(), 20, "the last will")
    finally:
        late.close()

    gw.start()
    wait_for(lambda: len(CONNECTED.findall(gw.log_path.read_bytes())) >= 2, 20, "the gateway back")
    node, count = connected_node(gw, cluster)
    time.sleep(0.5)  # the birth is published right after the connection
    cluster.kill(node)
    wait_for(lambda: len(CONNECTED.findall(gw.log_path.read_bytes())) > count, 40, "the gateway on another node")
    # with a node down, nats-server 2.9 refused new MQTT subscriptions here for 15 s and more ("unable to connect:
    # timeout for request type CD ... $MQTT_rmsgs"; docs/central.md): the retained state is read once it is back
    cluster.start_node(node)
    survivor = next(n for n in cluster.nodes if n is not node and n is not connected_node(gw, cluster)[0])
    after = StateWatcher(survivor, "watcher-2")
    try:
        wait_for(lambda: after.statuses()[:1] == [(True, "online")], 40,
                 "the retained state 'online' after the node's death")
    finally:
        after.close()
        gw.stop()
