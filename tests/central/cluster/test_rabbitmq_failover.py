"""Central on a 3-node RabbitMQ cluster: gateways over MQTT, ingest workers as competing consumers of a quorum queue.

Real parts only: three ``rabbitmq-server`` nodes (MQTT plugin, quorum queue R3) on loopback, VictoriaMetrics with
deduplication, ``edugate run`` gateways with synthetic devices whose broker list names the three nodes, and AMQP
ingest workers as subprocesses. Under load: kill -9 the node that leads the queue (the gateways' node too), and a
worker; bring the node back; kill -9 the queue's new leader. Then every record a gateway committed and got
acknowledged is in the store exactly once. Slow (about 2 minutes: three Erlang nodes booting, elections):
``.venv/bin/python -m pytest -m slow tests/central/cluster/test_rabbitmq_failover.py -s``.
"""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edugate.simulators.rabbitmq_cluster import RabbitCluster, RabbitNode
from edugate.simulators.servers import VictoriaMetrics
from tests.central.cluster.rabbit_helpers import (
    QUEUE,
    declare,
    queue_idle,
    skip_without_rabbitmq,
    start_worker,
)
from tests.central.cluster.store_check import check_store
from tests.helpers import GatewayProcess, ingest_stats, wait_for

skip_without_rabbitmq()
pytestmark = [pytest.mark.timeout(400), pytest.mark.slow]

CONNECTED = re.compile(rb"uplink connected to 127\.0\.0\.1:(\d+)")


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[RabbitCluster]:
    nodes = RabbitCluster(tmp_path / "rabbit").start()
    yield nodes
    nodes.stop()


@pytest.fixture
def raw_store(tmp_path: Path) -> Iterator[VictoriaMetrics]:
    """VictoriaMetrics WITHOUT deduplication: every write is kept, so a redelivered reading shows up twice (same
    timestamp, same value: what -dedup.minScrapeInterval=1ms keeps once in production) and a reading that is
    missing was never written. With deduplication on, two different readings stamped in the same millisecond
    would look like a loss (seen once here: the synthetic device fired two readings back to back under load)."""
    vm = VictoriaMetrics(tmp_path / "victoria", dedup=False)
    vm.start()
    yield vm
    vm.stop()


@pytest.fixture
def reaper() -> Iterator[list[subprocess.Popen | GatewayProcess]]:
    """Processes a test starts; whatever still runs when it ends is killed."""
    procs: list[subprocess.Popen | GatewayProcess] = []
    yield procs
    for proc in procs:
        if isinstance(proc, GatewayProcess):
            if proc.proc is not None:
                proc.kill()
        elif proc.poll() is None:
            proc.kill()
            proc.wait()


def gateway(tmp_path: Path, brokers: list[str], name: str) -> GatewayProcess:
    return GatewayProcess(tmp_path / name, {
        "school": "city-school", "gateway": name,
        "uplink": {"brokers": brokers, "health_interval_s": 1, "keepalive_s": 2},
        "devices": [{"id": "probe", "driver": "synthetic", "interval_s": 0.01, "values": 0}],
    })


def connected_node(gw: GatewayProcess, cluster: RabbitCluster) -> tuple[RabbitNode, int]:
    found = CONNECTED.findall(gw.log_path.read_bytes())
    assert found, gw.log()
    port = int(found[-1])
    return next(n for n in cluster.nodes if n.mqtt_port == port), len(found)


def restart(cluster: RabbitCluster, node: RabbitNode) -> int:
    """Start a killed node again. Its boot can hang in the MQTT plugin, waiting for the plugin's client-id registry
    (the Ra cluster ``mqtt_node``) when that registry did not elect a new leader after the node that led it died
    (seen in 2 of 10 runs; docs/central.md section 8): then kill it and try once more, as an operator would.
    Returns the number of repeated starts; fails naming the cause when the second start hangs too."""
    try:
        cluster.start_node(node, timeout=45)
    except RuntimeError:
        cluster.kill(node)
        try:
            cluster.start_node(node, timeout=90)
        except RuntimeError:
            pytest.fail(f"{node.name} hung in its boot twice (the MQTT plugin's mqtt_node registry without a "
                        f"leader: docs/central.md section 8); see {node.log_path}")
        cluster.wait_clustered()
        return 1
    cluster.wait_clustered()
    return 0


def test_kill_the_queue_leader_twice_and_a_worker_under_load_loses_nothing_acknowledged(
        tmp_path: Path, cluster: RabbitCluster, raw_store: VictoriaMetrics, reaper: list) -> None:
    victoria = raw_store
    declare(cluster, replicas=3)
    workers = [start_worker(tmp_path, cluster, victoria, f"w{i}") for i in (1, 2)]
    reaper.extend(workers)
    leader = cluster.queue_leader(QUEUE)
    brokers = [leader.mqtt_address] + [n.mqtt_address for n in cluster.nodes if n is not leader]
    gws = [gateway(tmp_path, brokers, f"gw-{i}").start() for i in (1, 2)]
    reaper.extend(gws)
    wait_for(lambda: all(CONNECTED.search(g.log_path.read_bytes()) for g in gws), 20, "gateways connected")
    wait_for(lambda: sum(ingest_stats(tmp_path / f"w{i}.json").get("records", 0) for i in (1, 2)) > 500, 30,
             "records flowing into the store")
    both_worked = all(ingest_stats(tmp_path / f"w{i}.json").get("records", 0) > 0 for i in (1, 2))

    reconnects: list[float] = []
    killed: list[str] = []
    stuck = 0
    for round_ in range(2):  # kill the queue's leader; bring it back; then kill the queue's new leader
        leader = cluster.queue_leader(QUEUE)
        users = [g for g in gws if connected_node(g, cluster)[0] is leader]
        counts = [connected_node(g, cluster)[1] for g in users]
        killed_at = time.monotonic()
        cluster.kill(leader)
        killed.append(f"{leader.name} (queue leader, {len(users)} gateway(s) on it)")
        if users:
            wait_for(lambda users=users, counts=counts: all(  # type: ignore[misc]
                connected_node(g, cluster)[1] > c for g, c in zip(users, counts, strict=True)), 60,
                "every gateway of the killed node reconnected to another node")
            reconnects.append(time.monotonic() - killed_at)
        if round_ == 0:
            workers[0].kill()  # kill -9 a worker too: what it held unacknowledged goes to the other one
            workers[0].wait()
        time.sleep(3)  # the load goes on with two nodes
        stuck += restart(cluster, leader)
        wait_for(lambda: cluster.queue_leader(QUEUE) is not None, 30, "the queue to have a leader")

    time.sleep(1)
    for g in gws:
        assert g.stop() == 0, g.log()
    wait_for(lambda: queue_idle(cluster), 90, "the worker to drain the queue")
    stats = ingest_stats(tmp_path / "w2.json")
    workers[1].terminate()
    workers[1].wait(20)
    result = check_store(gws, victoria)
    lost, copies, shared_ms = result.lost, result.copies, result.shared_ms
    print(f"\nkilled: {'; '.join(killed)}; gateways back after: {', '.join(f'{r:.2f} s' for r in reconnects)}; "
          f"worker w2: {stats['records']} records, {stats['messages_redelivered']} redelivered; both workers took "
          f"a share: {both_worked}; copies written twice (redeliveries): {copies}; distinct readings sharing a "
          f"millisecond (one sample with deduplication on): {shared_ms}; restarts that hung in the boot and were "
          f"repeated: {stuck}")
    assert not any(lost.values()), {g: sorted(n)[:20] for g, n in lost.items()}
    assert both_worked
    assert reconnects and all(r < 30 for r in reconnects), reconnects
