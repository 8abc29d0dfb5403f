"""The cost of the end-to-end acknowledgement (issue 12), with it on and off side by side in one run.

    .venv/bin/python bench/e2e_ack.py [--devices 50] [--interval-s 0.025] [--values 10] [--seconds 20]
                                      [--drain-mb 32] [--rounds 1]

Steady state: a private Mosquitto (the shipped central configuration), VictoriaMetrics, one ``edugate ingest``
and one gateway (subprocesses) with synthetic devices; for each mode, after a warm-up, it measures over the
window: the gateway's CPU seconds per datapoint (psutil), the bytes on the wire to and from the gateway (MQTT
packets counted by a subscriber to ``edu/v1/#``: topic + payload + fixed header + packet id, plus the gateway's
PUBACKs of the confirmations), and the outbox's queued records (sampled every 0.25 s).

Drain: an outbox prefilled to its budget (``--drain-mb``; telemetry of 50 devices, as after an outage), then the
gateway started against the running central: the time until the outbox is empty (PUBACKed, or confirmed) and the
gateway's largest RSS meanwhile. A 256 MB budget is extrapolated linearly from it (stated as such).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import psutil
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edugate.contract.records import Kind  # noqa: E402
from edugate.gateway.runtime.outbox import Outbox  # noqa: E402
from edugate.simulators.servers import SHIPPED_CONF, Mosquitto, VictoriaMetrics  # noqa: E402


class Wire:
    """Counts MQTT bytes per topic kind, as the broker forwards them (one subscriber to everything)."""

    def __init__(self, broker: Mosquitto) -> None:
        self.bytes: dict[str, int] = {}
        self.messages: dict[str, int] = {}
        self.lock = threading.Lock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-wire", clean_session=True)
        self.client.on_message = self._on_message
        self.client.on_connect = lambda c, *_: c.subscribe("edu/v1/#", qos=0)
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        kind = msg.topic.rsplit("/", 1)[-1]
        remaining = 2 + len(msg.topic) + 2 + len(msg.payload)  # topic length, topic, packet id (QoS 1), payload
        size = 1 + (1 if remaining < 128 else 2 if remaining < 16384 else 3) + remaining
        size += 4  # the PUBACK the receiver sends back (QoS 1 both ways)
        with self.lock:
            self.bytes[kind] = self.bytes.get(kind, 0) + size
            self.messages[kind] = self.messages.get(kind, 0) + 1

    def snapshot(self) -> tuple[dict[str, int], dict[str, int]]:
        with self.lock:
            return dict(self.bytes), dict(self.messages)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def outbox_counts(path: Path) -> tuple[int, int]:
    """(next seq, queued records) read from the file."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        row = conn.execute("SELECT value FROM meta WHERE key='next_seq'").fetchone()
        (queued,) = conn.execute("SELECT (SELECT count(*) FROM telemetry) + (SELECT count(*) FROM events)").fetchone()
    finally:
        conn.close()
    return (row[0] if row else 1), queued


def start_gateway(work: Path, name: str, port: int, devices: int, interval_s: float, values: int, e2e: bool,
                  budget_mb: float = 256) -> tuple[subprocess.Popen[bytes], Path]:
    outbox = work / f"{name}.sqlite"
    cfg = {"school": "bench", "gateway": name,
           "uplink": {"port": port, "health_interval_s": 3600, "end_to_end_ack": e2e},
           "storage": {"path": str(outbox), "budget_mb": budget_mb},
           "privacy": {"secret_file": str(work / "k")},
           "devices": [{"id": f"syn-{i}", "driver": "synthetic", "interval_s": interval_s, "values": values - 1}
                       for i in range(devices)]}
    (work / f"{name}.yaml").write_text(yaml.safe_dump(cfg))
    with (work / f"{name}.log").open("ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "edugate.cli.main", "run", str(work / f"{name}.yaml"),
                                 "--log-level", "WARNING"], cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    return proc, outbox


def wait(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.05)


def ready(outbox: Path) -> bool:
    try:
        outbox_counts(outbox)
        return True
    except sqlite3.Error:
        return False


def steady(work: Path, broker: Mosquitto, wire: Wire, e2e: bool, devices: int, interval_s: float, values: int,
           seconds: float) -> dict[str, Any]:
    name = f"gw-{'on' if e2e else 'off'}"
    proc, outbox = start_gateway(work, name, broker.port, devices, interval_s, values, e2e)
    try:
        wait(lambda: ready(outbox), 30, "the outbox")
        time.sleep(3)  # warm-up (with e2e: the first confirmation switches it on)
        gw = psutil.Process(proc.pid)
        cpu0, (seq0, _), (bytes0, msgs0) = sum(gw.cpu_times()[:2]), outbox_counts(outbox), wire.snapshot()
        samples: list[int] = []
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            samples.append(outbox_counts(outbox)[1])
            time.sleep(0.25)
        cpu1, (seq1, _), (bytes1, msgs1) = sum(gw.cpu_times()[:2]), outbox_counts(outbox), wire.snapshot()
        rss = gw.memory_info().rss
    finally:
        proc.terminate()
        proc.wait(30)

    def delta(after: dict[str, int], before: dict[str, int], kind: str) -> int:
        return after.get(kind, 0) - before.get(kind, 0)

    records = seq1 - seq0
    data_bytes = delta(bytes1, bytes0, "telemetry") + delta(bytes1, bytes0, "event")
    confirm_bytes = delta(bytes1, bytes0, "stored")
    return {"mode": "on" if e2e else "off", "records": records, "datapoints": records * values,
            "datapoints_per_s": round(records * values / seconds),
            "gateway_cpu_us_per_datapoint": round((cpu1 - cpu0) / (records * values) * 1e6, 2),
            "gateway_cpu_percent": round((cpu1 - cpu0) / seconds * 100, 1),
            "data_bytes": data_bytes, "confirm_bytes": confirm_bytes,
            "confirm_messages": delta(msgs1, msgs0, "stored"),
            "data_messages": delta(msgs1, msgs0, "telemetry") + delta(msgs1, msgs0, "event"),
            "confirm_bytes_per_data_byte": round(confirm_bytes / data_bytes, 4) if data_bytes else 0,
            "outbox_records_mean": round(sum(samples) / len(samples), 1), "outbox_records_max": max(samples),
            "gateway_rss_mb": round(rss / 1e6, 1)}


async def prefill(path: Path, budget_bytes: int, central_confirms: bool) -> int:
    """Telemetry of 50 devices (10 values each) until the outbox's pages in use reach its budget's data share."""
    box = await Outbox.open(path, budget_bytes=budget_bytes, sync="normal")
    n = 0
    ts = int(time.time() * 1000) - 3_600_000  # an outage that ended now (inside the store's retention)
    while box.stats.bytes < box.data_target * 0.95:
        puts = []
        for _ in range(5000):
            n += 1
            puts.append(box.put(Kind.TELEMETRY, {"kind": "telemetry", "device": f"syn-{n % 50}", "ts": ts + n,
                                                 "synced": True, "values": {"n": n, **{f"v{i}": 20.125 + i
                                                                                       for i in range(9)}}}))
        await asyncio.gather(*puts)
    await box.close()
    if central_confirms:
        conn = sqlite3.connect(path)
        conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('central_confirms', 1)")
        conn.commit()
        conn.close()
    return n


def stored(vm: VictoriaMetrics, gateway: str) -> int:
    """Samples of the counter ``n`` (one per reading) the store holds for ``gateway``."""
    urllib.request.urlopen(f"{vm.url}/internal/force_flush", timeout=10).read()
    query = urllib.parse.urlencode({"query": f'sum(count_over_time(edugate_n{{gateway="{gateway}"}}[3h]))'})
    with urllib.request.urlopen(f"{vm.url}/api/v1/query?{query}", timeout=30) as resp:
        result = json.loads(resp.read())["data"]["result"]
    return int(float(result[0]["value"][1])) if result else 0


def drain(work: Path, broker: Mosquitto, store: VictoriaMetrics, ingest: psutil.Process, e2e: bool,
          budget_mb: float) -> dict[str, Any]:
    name = f"drain-{'on' if e2e else 'off'}-{int(time.time())}"
    outbox = work / f"{name}.sqlite"
    records = asyncio.run(prefill(outbox, int(budget_mb * 1024 * 1024), e2e))
    disk = sum(p.stat().st_size for p in work.glob(f"{name}.sqlite*"))
    ingest_cpu = sum(ingest.cpu_times()[:2])
    started = time.monotonic()
    proc, _ = start_gateway(work, name, broker.port, 0, 1.0, 1, e2e, budget_mb)
    rss = 0
    try:
        gw = psutil.Process(proc.pid)
        while outbox_counts(outbox)[1] > 0:
            rss = max(rss, gw.memory_info().rss)
            if time.monotonic() - started > 1800:
                raise TimeoutError("the drain")
            time.sleep(0.1)
        emptied = time.monotonic() - started
        while stored(store, name) < records:  # the store has every reading (with e2e: already, by then)
            if time.monotonic() - started > 1800:
                raise TimeoutError("the store")
            time.sleep(0.2)
        in_store = time.monotonic() - started
        gateway_cpu = sum(gw.cpu_times()[:2])
        ingest_cpu = sum(ingest.cpu_times()[:2]) - ingest_cpu
    finally:
        proc.terminate()
        proc.wait(30)
    return {"mode": "on" if e2e else "off", "budget_mb": budget_mb, "records": records,
            "outbox_disk_mb": round(disk / 1e6, 1), "outbox_empty_s": round(emptied, 1),
            "all_stored_s": round(in_store, 1), "records_per_s": round(records / in_store),
            "gateway_rss_max_mb": round(rss / 1e6, 1), "gateway_cpu_s": round(gateway_cpu, 1),
            "ingest_cpu_s": round(ingest_cpu, 1),
            "all_stored_s_256mb_extrapolated": round(in_store * 256 / budget_mb)}


def main(devices: int, interval_s: float, values: int, seconds: float, drain_mb: float,
         rounds: int = 1) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="e2e-ack-bench-") as tmp:
        work = Path(tmp)
        broker = Mosquitto(work / "mqtt", conf_file=SHIPPED_CONF)
        store = VictoriaMetrics(work / "vm")
        broker.start()
        store.start()
        ingest = subprocess.Popen([sys.executable, "-m", "edugate.central.cli_ingest", "--client-id", "bench-ingest",
                                   "--broker", broker.url, "--store-url", store.url, "--log-level", "WARNING"],
                                  cwd=REPO)
        wire = Wire(broker)
        try:
            out: dict[str, Any] = {"steady": [], "drain": []}
            for _ in range(rounds):  # off and on alternate: the machine's load changes under both alike
                for e2e in (False, True):
                    if seconds > 0:
                        out["steady"].append(steady(work, broker, wire, e2e, devices, interval_s, values, seconds))
                    if drain_mb > 0:
                        out["drain"].append(drain(work, broker, store, psutil.Process(ingest.pid), e2e, drain_mb))
            out["machine"] = {"cpus": psutil.cpu_count(), "load_avg_1m": round(psutil.getloadavg()[0], 1)}
            return out
        finally:
            wire.close()
            ingest.terminate()
            ingest.wait(30)
            broker.stop()
            store.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=50)
    parser.add_argument("--interval-s", type=float, default=0.025)
    parser.add_argument("--values", type=int, default=10, help="datapoints per reading (the counter n included)")
    parser.add_argument("--seconds", type=float, default=20, help="steady-state window per mode; 0: none")
    parser.add_argument("--drain-mb", type=float, default=32, help="0: no drain measurement")
    parser.add_argument("--rounds", type=int, default=1, help="repeat off/on this many times")
    args = parser.parse_args()
    result = main(args.devices, args.interval_s, args.values, args.seconds, args.drain_mb, args.rounds)
    print(json.dumps(result, indent=1))
