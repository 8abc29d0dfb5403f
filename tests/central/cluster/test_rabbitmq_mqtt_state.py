"""What the gateways need from MQTT besides QoS 1, on the 3-node RabbitMQ cluster (3.10, Debian bookworm), pinned
as it behaves: a persistent session (clean_session false) keeps its subscription and the commands queued for it
across the death of the node its queue led on (``mqtt.durable_queue_type = quorum``); the last will reaches a
subscriber on another node; the retained birth is kept only on the node it was published to and only for a
subscription to its exact topic (RabbitMQ's retained store is node-local and does not answer wildcards), so
central reads gateway state from the quorum queue (the ingest workers' fleet table), not from retained messages.
Slow: ``.venv/bin/python -m pytest -m slow tests/central/cluster/test_rabbitmq_mqtt_state.py``."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from edugate.simulators.rabbitmq_cluster import RabbitCluster, RabbitNode
from tests.central.cluster.rabbit_helpers import skip_without_rabbitmq
from tests.helpers import wait_for

skip_without_rabbitmq()
pytestmark = [pytest.mark.timeout(240), pytest.mark.slow]

STATE = "edu/v1/city-school/gw-1/state"
CMD = "edu/v1/city-school/gw-2/cmd/#"


class Client:
    """A paho client on one node that keeps what it receives as (topic, retained, payload)."""

    def __init__(self, node: RabbitNode, client_id: str, *, clean: bool = True,
                 will: tuple[str, bytes] | None = None) -> None:
        self.got: list[tuple[str, bool, bytes]] = []
        self.connected = threading.Event()
        self.mqtt = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=clean)
        self.mqtt.on_message = self._on_message
        self.mqtt.on_connect = lambda *_: self.connected.set()
        if will:
            self.mqtt.will_set(will[0], will[1], qos=1, retain=True)
        self.mqtt.connect(node.host, node.mqtt_port, keepalive=2)
        self.mqtt.loop_start()
        assert self.connected.wait(20), f"{client_id}: no CONNACK from {node.name}"

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        self.got.append((msg.topic, bool(msg.retain), bytes(msg.payload)))

    def subscribe(self, topic: str) -> None:
        done = threading.Event()
        self.mqtt.on_subscribe = lambda *_: done.set()
        self.mqtt.subscribe(topic, qos=1)
        assert done.wait(10), f"no SUBACK for {topic}"

    def close(self) -> None:
        self.mqtt.loop_stop()
        self.mqtt.disconnect()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[RabbitCluster]:
    nodes = RabbitCluster(tmp_path / "rabbit").start()
    yield nodes
    nodes.stop()


def test_session_will_and_retained_state_on_rabbitmq(cluster: RabbitCluster) -> None:
    first, second, third = cluster.nodes
    gw = Client(first, "gw-1", will=(STATE, json.dumps({"status": "offline", "reason": "connection lost"}).encode()))
    gw.mqtt.publish(STATE, json.dumps({"status": "online"}).encode(), qos=1, retain=True).wait_for_publish(10)
    clients: list[Client] = [gw]
    try:
        same_node_exact = Client(first, "watch-exact")
        same_node_wild = Client(first, "watch-wild")
        other_node_exact = Client(second, "watch-other")
        clients += [same_node_exact, same_node_wild, other_node_exact]
        same_node_exact.subscribe(STATE)
        same_node_wild.subscribe("edu/v1/+/+/state")
        other_node_exact.subscribe(STATE)
        wait_for(lambda: same_node_exact.got, 10, "the retained birth on its own node, exact topic")
        assert same_node_exact.got[0][1] is True
        assert not [m for m in same_node_wild.got if m[1]], "retained messages answered a wildcard subscription"
        assert not other_node_exact.got, "the retained birth reached another node's subscriber"

        session = Client(second, "gw-2", clean=False)  # a gateway with downlink.enabled: its command topic
        session.subscribe(CMD)
        session.close()
        wait_for(lambda: "mqtt-subscription-gw-2qos1" in cluster.rabbitmqctl(0, "list_queues", "name"), 10,
                 "the session's queue")
        assert "quorum" in cluster.rabbitmqctl(0, "list_queues", "name", "type")

        gw.mqtt._sock.close()  # the gateway vanishes without DISCONNECT: the broker publishes its last will
        wait_for(lambda: any(b"connection lost" in p for _, _, p in other_node_exact.got), 20,
                 "the last will, on another node")

        cluster.kill(second)  # the node the session's queue lived on
        central = Client(third, "central-send")
        clients.append(central)
        central.mqtt.publish("edu/v1/city-school/gw-2/cmd/ping", b"signed-envelope", qos=1).wait_for_publish(20)
        back = Client(third, "gw-2", clean=False)
        clients.append(back)
        wait_for(lambda: back.got, 20, "the command queued for the session while its node was down")
        assert back.got[0][0] == "edu/v1/city-school/gw-2/cmd/ping" and back.got[0][2] == b"signed-envelope"
    finally:
        for client in clients:
            client.close()
