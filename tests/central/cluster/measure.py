"""Throughput of central on NATS: 1 node (R1) vs 3 nodes (R3), 1 and 2 ingest workers. Not a test: run
``.venv/bin/python -m tests.central.cluster.measure`` (figures go to docs/central.md).

A publisher sends ``MESSAGES`` MQTT QoS 1 messages of ``RECORDS`` telemetry records each (3 values) to the nodes'
MQTT listeners, as fast as PUBACKs come back (a window of 100 in flight); the workers write to VictoriaMetrics.
Measured: the publish rate (PUBACKed records/s) and the ingest rate (records written/s, first to last).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson
import paho.mqtt.client as mqtt

from edugate.simulators.nats_cluster import NatsCluster
from edugate.simulators.servers import VictoriaMetrics
from tests.helpers import REPO, ingest_stats, wait_for

MESSAGES = 2000
RECORDS = 50


def run(size: int, workers: int, base: Path) -> dict[str, float]:
    cluster = NatsCluster(base / "nats", size=size).start()
    vm = VictoriaMetrics(base / "vm")
    vm.start()
    procs = []
    try:
        for i in range(workers):
            argv = [sys.executable, "-m", "edugate.central.ingest.nats_worker", "--client-id", f"w{i}", "--store",
                    vm.url, "--stats-file", str(base / f"w{i}.json"), "--replicas", str(min(size, 3))]
            for url in cluster.nats_urls:
                argv += ["--nats", url]
            procs.append(subprocess.Popen(argv, stdout=(base / f"w{i}.log").open("wb"), stderr=subprocess.STDOUT,
                                          cwd=REPO))
            wait_for(lambda i=i: ingest_stats(base / f"w{i}.json").get("subscribed"), 30, "worker")
        pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-gw")
        pub.max_inflight_messages_set(100)
        node = cluster.nodes[0]
        pub.connect(node.host, node.mqtt_port)
        pub.loop_start()
        ts0 = int(time.time() * 1000) - 3_600_000
        started = time.monotonic()
        infos = []
        for m in range(MESSAGES):
            recs = [{"seq": m * RECORDS + r + 1, "kind": "telemetry", "device": f"d{r % 10}",
                     "ts": ts0 + m * RECORDS + r, "synced": True, "values": {"a": r, "b": m, "c": 1.5}}
                    for r in range(RECORDS)]
            infos.append(pub.publish(f"edu/v1/bench/gw{m % 20}/telemetry", orjson.dumps(recs), qos=1))
        for info in infos:
            info.wait_for_publish(120)
        published = time.monotonic() - started
        total = MESSAGES * RECORDS

        def written() -> int:
            return sum(ingest_stats(base / f"w{i}.json").get("records", 0) for i in range(workers))
        wait_for(lambda: written() >= total, 300, "all records written", interval=0.2)
        done = time.monotonic() - started
        pub.loop_stop()
        pub.disconnect()
        return {"publish_records_s": total / published, "ingest_records_s": total / done,
                "points_s": 3 * total / done}
    finally:
        for p in procs:
            p.terminate()
            p.wait(20)
        vm.stop()
        cluster.stop()


def main() -> None:
    """Every combination, or those named as SIZExWORKERS arguments (``3x2``)."""
    chosen = [tuple(int(x) for x in a.split("x")) for a in sys.argv[1:]] or [(1, 1), (1, 2), (3, 1), (3, 2)]
    for size, workers in chosen:
        with tempfile.TemporaryDirectory() as tmp:
            r = run(size, workers, Path(tmp))
        print(f"{size} node(s), {workers} worker(s): published {r['publish_records_s']:,.0f} records/s, "
              f"ingested {r['ingest_records_s']:,.0f} records/s ({r['points_s']:,.0f} points/s)", flush=True)


if __name__ == "__main__":
    main()
