"""The AMQP ingest worker on RabbitMQ (CI-sized: one real node). Gateways' MQTT QoS 1 publishes reach the quorum
queue through the MQTT plugin; a worker killed with kill -9 while holding unacknowledged deliveries loses none:
the broker hands them to the next worker, and the store keeps each sample once. The 3-node failover under load
is ``test_rabbitmq_failover.py`` (slow). The second worker runs as operators run it: ``edugate ingest --config
central.yaml`` with ``ingest.transport: amqp`` and the password in a file."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import paho.mqtt.client as mqtt
import pytest

from edugate.simulators.rabbitmq_cluster import RabbitCluster
from edugate.simulators.servers import VictoriaMetrics
from tests.central import telemetry
from tests.central.cluster.rabbit_helpers import declare, ready_count, skip_without_rabbitmq, start_worker
from tests.helpers import ingest_stats, wait_for
from tests.vmquery import export

skip_without_rabbitmq()
pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def node(tmp_path: Path) -> Iterator[RabbitCluster]:
    one = RabbitCluster(tmp_path / "rabbit", size=1).start()
    yield one
    one.stop()


def test_a_worker_killed_holding_unacknowledged_deliveries_loses_none(
        tmp_path: Path, node: RabbitCluster, victoria: VictoriaMetrics) -> None:
    declare(node, replicas=1)
    dead_store = VictoriaMetrics(tmp_path / "never-started")  # a free port nobody listens on
    w1 = start_worker(tmp_path, node, dead_store, "w1", replicas=1)
    try:
        pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="gw-direct")
        rabbit = node.nodes[0]
        pub.connect(rabbit.host, rabbit.mqtt_port)
        pub.loop_start()
        ts0 = int(time.time() * 1000) - 60_000
        infos = [pub.publish("edu/v1/city-school/gw-x/telemetry",
                             orjson.dumps([telemetry(i, ts=ts0 + i, values={"n": i})
                                           for i in range(m * 10 + 1, m * 10 + 11)]), qos=1) for m in range(100)]
        for info in infos:
            info.wait_for_publish(10)  # PUBACKed: in the quorum queue
        pub.loop_stop()
        pub.disconnect()
        wait_for(lambda: ingest_stats(tmp_path / "w1.json").get("messages", 0) >= 100, 20, "w1 to hold all 100")
        assert ingest_stats(tmp_path / "w1.json")["messages_acked"] == 0
        assert ready_count(node) == 0  # all 100 delivered to w1, none acknowledged
    finally:
        w1.kill()
        w1.wait()
    w2 = start_worker(tmp_path, node, victoria, "w2", replicas=1, via_config=True)  # edugate ingest --config
    try:
        wait_for(lambda: ingest_stats(tmp_path / "w2.json").get("messages_acked", 0) >= 100, 20,
                 "w2 to take over and acknowledge w1's deliveries")
        assert ready_count(node) == 0
        stats = ingest_stats(tmp_path / "w2.json")
    finally:
        w2.terminate()
        w2.wait(20)
    assert stats["messages_redelivered"] == 100 and stats["records"] == 1000, stats
    series = export(victoria.url, '{__name__="edugate_n",gateway="gw-x"}')
    assert sorted(v for s in series for v in s["values"]) == list(range(1, 1001))
