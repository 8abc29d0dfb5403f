"""Central on a 3-node NATS cluster: gateways over MQTT, ingest workers as competing JetStream consumers.

Real parts only: three ``nats-server`` processes (JetStream R3 + MQTT listener) on loopback, VictoriaMetrics with
deduplication, ``edugate run`` gateways with synthetic devices whose broker list names the three nodes, and
ingest workers as subprocesses. Under load: kill -9 the node the gateways use, bring it back, kill -9 a worker,
kill -9 a second node; then every record a gateway committed and got acknowledged is in the store exactly once.
"""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import nats
import orjson
import paho.mqtt.client as mqtt
import pytest

from edugate.simulators.nats_cluster import NatsCluster, NatsNode
from edugate.simulators.servers import VictoriaMetrics, find_binary
from tests.central import telemetry
from tests.helpers import REPO, GatewayProcess, ingest_stats, wait_for
from tests.vmquery import export

try:
    find_binary("nats-server")
except FileNotFoundError:
    pytest.skip("nats-server is not installed (apt-get install -y nats-server)", allow_module_level=True)

pytestmark = [pytest.mark.timeout(170), pytest.mark.slow]

CONNECTED = re.compile(rb"uplink connected to 127\.0\.0\.1:(\d+)")
# Out of CI (run: .venv/bin/python -m pytest -m slow tests/central/cluster): on a loaded 2-core machine the
# cluster's leader elections move the gateways onto the stream leader, and a worker's redelivery window races
# the test's waits; and nats-server 2.9 cannot keep the promise anyway (a PUBACK before JetStream stored it,
# docs/central.md section 6), so issue 20 stays open on it.
ACK_WAIT_S = 3.0  # a dead worker's messages go to another worker after this


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[NatsCluster]:
    nodes = NatsCluster(tmp_path / "nats").start()
    yield nodes
    nodes.stop()


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


def start_worker(tmp_path: Path, cluster: NatsCluster, vm: VictoriaMetrics, name: str) -> subprocess.Popen:
    argv = [sys.executable, "-m", "edugate.central.ingest.nats_worker", "--client-id", name, "--store", vm.url,
            "--stats-file", str(tmp_path / f"{name}.json"), "--ack-wait-s", str(ACK_WAIT_S),
            "--max-bytes", str(256 * 1024**2)]
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


def stream_leader(cluster: NatsCluster) -> NatsNode:
    async def ask() -> str:
        nc = await nats.connect(cluster.nats_urls, connect_timeout=2)
        try:
            info = await nc.jetstream(timeout=3).stream_info("EDUGATE")
            assert info.cluster is not None and info.cluster.leader
            return info.cluster.leader
        finally:
            await nc.close()
    name = asyncio.run(ask())
    return next(n for n in cluster.nodes if n.name == name)


def consumer_idle(cluster: NatsCluster) -> bool:
    async def check() -> bool:
        nc = await nats.connect(cluster.nats_urls, connect_timeout=2)
        try:
            info = await nc.jetstream(timeout=3).consumer_info("EDUGATE", "edugate-ingest")
            return info.num_pending == 0 and info.num_ack_pending == 0
        finally:
            await nc.close()
    try:
        return asyncio.run(check())
    except Exception:  # a leader election in progress: ask again
        return False


def queued_probe_readings(gw: GatewayProcess) -> set[int]:
    """The counter values 'n' of the probe's readings still in the outbox (never acknowledged by a broker)."""
    conn = sqlite3.connect(f"file:{gw.outbox_path}?mode=ro", uri=True)
    try:
        queued = {json.loads(p)["values"]["n"] for (p,) in conn.execute("SELECT payload FROM telemetry")
                  if json.loads(p)["device"] == "probe"}
    finally:
        conn.close()
    return queued


def check_store(gws: list[GatewayProcess], victoria: VictoriaMetrics) -> dict[str, set[int]]:
    """Each gateway's probe readings that were acknowledged (gone from its outbox) but are not in the store;
    asserts on the way that no sample is stored twice."""
    lost = {}
    for g in gws:
        name = g.config["gateway"]
        queued = queued_probe_readings(g)
        series = export(victoria.url, f'edugate_n{{gateway="{name}",device="probe"}}')
        assert len(series) == 1, series
        values, stamps = series[0]["values"], series[0]["timestamps"]
        assert len(stamps) == len(set(stamps)), "a sample stored twice"
        stored = set(values)
        assert len(stored) == len(values), "one counter value under two timestamps"
        top = max(stored | queued)
        assert top > 300, "too little load to prove anything"
        lost[name] = set(range(1, top + 1)) - queued - stored
    return lost


def stop_and_drain(gws: list[GatewayProcess], cluster: NatsCluster) -> None:
    for g in gws:
        assert g.stop() == 0, g.log()
    wait_for(lambda: consumer_idle(cluster), 60, "the workers to drain the stream")


def test_kill_nodes_and_a_worker_under_load_loses_nothing_acknowledged(
        tmp_path: Path, cluster: NatsCluster, victoria: VictoriaMetrics, reaper: list) -> None:
    """The nodes killed are not the EDUGATE stream's leader: nats-server 2.9 acknowledges an MQTT QoS 1 publish
    before JetStream stored it, so what arrives while the stream elects a new leader can be acknowledged and lost
    (seen here: 436 readings in 4.7 s; docs/central.md). The gateways' node is killed, twice, and a worker."""
    workers = [start_worker(tmp_path, cluster, victoria, f"w{i}") for i in (1, 2)]
    reaper.extend(workers)
    leader = stream_leader(cluster)
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
        assert node is not leader and stream_leader(cluster) is leader
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
    stop_and_drain(gws, cluster)
    stats = ingest_stats(tmp_path / "w2.json")
    workers[1].terminate()
    workers[1].wait(20)
    lost = check_store(gws, victoria)
    assert not any(lost.values()), {g: sorted(n)[:20] for g, n in lost.items()}
    print(f"\nreconnect after a node kill: {', '.join(f'{r:.2f} s' for r in reconnects)}; worker w2: "
          f"{stats['records']} records, {stats['messages_redelivered']} redelivered; both workers took a share: "
          f"{both_worked}")
    assert both_worked
    # measured here 0.1 s to 22 s: a gateway's CONNECT waits while the MQTT layer's own streams elect new
    # leaders (nats-server logs 'unable to connect: lookup messages stream ... timeout'); see docs/central.md
    assert all(r < 30 for r in reconnects), reconnects


def test_a_worker_killed_holding_unacknowledged_messages_loses_none(
        tmp_path: Path, cluster: NatsCluster, victoria: VictoriaMetrics, reaper: list) -> None:
    """w1 pulls while its store is unreachable (so it acknowledges nothing), then dies by kill -9; w2 gets
    those messages after ack_wait and writes every record."""
    dead_store = VictoriaMetrics(tmp_path / "never-started")  # a free port nobody listens on
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
        wait_for(lambda: consumer_idle(cluster), 30, "w2 to take over w1's messages after ack_wait")
        stats = ingest_stats(tmp_path / "w2.json")
    finally:
        w2.terminate()
        w2.wait(20)
    assert stats["messages_redelivered"] == 100 and stats["records"] == 1000, stats
    series = export(victoria.url, '{__name__="edugate_n",gateway="gw-x"}')
    assert sorted(v for s in series for v in s["values"]) == list(range(1, 1001))
