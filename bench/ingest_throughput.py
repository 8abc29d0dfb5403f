"""Central ingest throughput: datapoints/s one `edugate ingest` worker moves from the broker into the store.

    .venv/bin/python bench/ingest_throughput.py [--messages 200] [--records 1000] [--values 10] [--gateways 10]

Starts a private Mosquitto and VictoriaMetrics (``simulators.servers``, free
loopback ports, a temporary folder), registers the worker's persistent
session (start, subscribe, stop), publishes ``--messages`` telemetry messages
of ``--records`` gateway-shaped records each (``--values`` values per record,
spread over ``--gateways`` gateways and 100 devices each, distinct timestamps,
QoS 1) while the worker is down, then starts the worker and measures until its
stats file says every datapoint was written to the store (HTTP 204 from
``/api/v2/write``) and every message acknowledged. The store's own sample
count is checked afterwards (``/api/v1/query``, count_over_time). Prints one
JSON line: datapoints/s, messages/s, worker CPU seconds and peak RSS.

Target (issue 6): >= 100 000 datapoints/s with 1000-record messages.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

import orjson
import paho.mqtt.client as mqtt
import psutil
from paho.mqtt.enums import CallbackAPIVersion

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edugate.simulators.servers import Mosquitto, VictoriaMetrics  # noqa: E402

CLIENT_ID = "bench-ingest-1"


def read_stats(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def start_worker(broker: Mosquitto, vm: VictoriaMetrics, stats: Path, log: Path) -> subprocess.Popen:
    argv = [str(REPO / ".venv" / "bin" / "edugate"), "ingest", "--client-id", CLIENT_ID, "--broker", broker.url,
            "--store-url", vm.url, "--stats-file", str(stats), "--stats-interval", "0.1", "--log-level", "WARNING"]
    with log.open("ab") as out:
        return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)


def wait(predicate, timeout: float, what: str, interval: float = 0.02) -> float:
    start = time.perf_counter()
    while time.perf_counter() - start < timeout:
        if predicate():
            return time.perf_counter() - start
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def payloads(messages: int, records: int, values: int, gateways: int) -> list[tuple[str, bytes]]:
    out = []
    base_ts = int(time.time() * 1000) - 3_600_000  # an hour ago, 1 ms apart per device
    seq = 0
    for m in range(messages):
        gw = f"gw-{m % gateways:03d}"
        batch = []
        for _ in range(records):
            seq += 1
            device = f"dev-{seq % 100:03d}"
            batch.append({"seq": seq, "kind": "telemetry", "device": device, "room": "lab-1",
                          "ts": base_ts + seq // 100, "synced": True,
                          "values": {f"v{i}": round(20.0 + i + (seq % 97) / 10, 1) for i in range(values)}})
        out.append((f"edu/v1/bench/{gw}/telemetry", orjson.dumps(batch)))
    return out


def publish_all(broker: Mosquitto, items: list[tuple[str, bytes]]) -> None:
    done = threading.Semaphore(0)
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-ingest-publisher", protocol=mqtt.MQTTv311)
    client.max_inflight_messages_set(50)
    client.max_queued_messages_set(0)
    client.on_publish = lambda *_: done.release()
    client.connect(broker.host, broker.port)
    client.loop_start()
    for topic, payload in items:
        client.publish(topic, payload, qos=1)
    for _ in items:
        if not done.acquire(timeout=120):
            raise TimeoutError("publisher: PUBACKs missing")
    client.loop_stop()
    client.disconnect()


def store_count(vm: VictoriaMetrics, values: int) -> int:
    urllib.request.urlopen(f"{vm.url}/internal/force_flush", timeout=30).read()
    total = 0
    for i in range(values):
        query = urllib.parse.urlencode({"query": f'sum(count_over_time(edugate_v{i}{{school="bench"}}[1d]))',
                                        "time": str(time.time())})
        with urllib.request.urlopen(f"{vm.url}/api/v1/query?{query}", timeout=60) as resp:
            result = json.loads(resp.read())["data"]["result"]
        total += int(float(result[0]["value"][1])) if result else 0
    return total


def main(messages: int, records: int, values: int, gateways: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="edugate-ingest-bench-") as tmp:
        root = Path(tmp)
        broker = Mosquitto(root / "mqtt", persistence=False)
        vm = VictoriaMetrics(root / "vm")
        broker.start()
        vm.start()
        stats = root / "stats.json"
        log = root / "ingest.log"
        try:
            # 1. register the persistent session and its subscriptions, then leave
            worker = start_worker(broker, vm, stats, log)
            wait(lambda: read_stats(stats).get("subscribed"), 30, "the worker to subscribe")
            stop(worker)
            stats.unlink()
            # 2. the backlog: the broker queues every message for the offline session
            items = payloads(messages, records, values, gateways)
            publish_all(broker, items)
            expected_points = messages * records * values
            # 3. drain it
            t0 = time.perf_counter()
            worker = start_worker(broker, vm, stats, log)
            proc = psutil.Process(worker.pid)
            peak_rss = 0
            cpu = 0.0

            def drained() -> bool:
                nonlocal peak_rss, cpu
                if worker.poll() is None:
                    with contextlib.suppress(psutil.Error), proc.oneshot():
                        peak_rss = max(peak_rss, proc.memory_info().rss)
                        times = proc.cpu_times()
                        cpu = times.user + times.system
                s = read_stats(stats)
                return s.get("points_written", 0) >= expected_points and s.get("messages_acked", 0) >= messages

            seconds = wait(drained, 600, "the backlog to reach the store")
            final = read_stats(stats)
            stop(worker)
            stored = store_count(vm, values)
        finally:
            stop_quietly(locals().get("worker"))
            vm.stop()
            broker.stop()
        if stored != expected_points:
            print(f"WARNING: the store holds {stored} samples, expected {expected_points}", file=sys.stderr)
        return {"messages": messages, "records_per_message": records, "values_per_record": values,
                "datapoints": expected_points, "seconds": round(seconds, 3),
                "datapoints_per_s": round(expected_points / seconds),
                "messages_per_s": round(messages / seconds, 1),
                "worker_cpu_seconds": round(cpu, 2), "worker_peak_rss_mb": round(peak_rss / 2**20, 1),
                "writes": final.get("writes"), "store_latency_ms_avg": final.get("store_latency_ms_avg"),
                "stored_samples": stored, "stored_ok": stored == expected_points, "cores": os.cpu_count()}


def stop_quietly(proc: subprocess.Popen | None) -> None:
    if proc is not None:
        stop(proc)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, default=200)
    ap.add_argument("--records", type=int, default=1000, help="records per message")
    ap.add_argument("--values", type=int, default=10, help="values per record")
    ap.add_argument("--gateways", type=int, default=10, help="gateway ids the messages are spread over")
    args = ap.parse_args()
    print(json.dumps(main(args.messages, args.records, args.values, args.gateways)))
