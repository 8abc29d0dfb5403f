"""Records per second through the whole path: gateway -> Mosquitto -> ingest -> VictoriaMetrics.

    .venv/bin/python bench/end_to_end.py [--devices 50] [--interval-s 0.005] [--values 10] [--seconds 30]

Starts a private broker and store, one ingest worker and one gateway (all
subprocesses) with synthetic devices producing readings as fast as asked,
lets it run, stops the gateway, waits until the store has every record the
gateway committed, and reports committed and stored records/s and datapoints/s
with the CPU seconds each process used.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

import psutil
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edugate.simulators.servers import Mosquitto, VictoriaMetrics  # noqa: E402


def stored_records(vm: VictoriaMetrics) -> int:
    """Samples of the 'n' counter (one per reading) stored for the bench gateway."""
    urllib.request.urlopen(f"{vm.url}/internal/force_flush", timeout=10).read()
    query = urllib.parse.urlencode({"query": 'sum(count_over_time(edugate_n{gateway="bench-gw"}[1d]))'})
    with urllib.request.urlopen(f"{vm.url}/api/v1/query?{query}", timeout=30) as resp:
        result = json.loads(resp.read())["data"]["result"]
    return int(float(result[0]["value"][1])) if result else 0


def main(devices: int, interval_s: float, values: int, seconds: float) -> dict:
    with tempfile.TemporaryDirectory(prefix="e2e-bench-") as tmp:
        work = Path(tmp)
        broker, store = Mosquitto(work / "mqtt", persistence=False), VictoriaMetrics(work / "vm")
        broker.start()
        store.start()
        ingest = subprocess.Popen([sys.executable, "-m", "edugate.central.cli_ingest", "--client-id", "bench-ingest",
                                   "--broker", broker.url, "--store-url", store.url, "--log-level", "WARNING"],
                                  cwd=REPO)
        cfg = {"school": "bench", "gateway": "bench-gw", "uplink": {"port": broker.port, "health_interval_s": 3600},
               "storage": {"path": str(work / "outbox.sqlite")}, "privacy": {"secret_file": str(work / "k")},
               "devices": [{"id": f"syn-{i}", "driver": "synthetic", "interval_s": interval_s, "values": values - 1}
                           for i in range(devices)]}
        (work / "gw.yaml").write_text(yaml.safe_dump(cfg))
        gw = subprocess.Popen([sys.executable, "-m", "edugate.cli.main", "run", str(work / "gw.yaml"),
                               "--log-level", "WARNING"], cwd=REPO)
        procs = {"gateway": psutil.Process(gw.pid), "ingest": psutil.Process(ingest.pid),
                 "mosquitto": psutil.Process(broker.proc.pid), "victoria-metrics": psutil.Process(store.proc.pid)}
        time.sleep(2)
        cpu0 = {k: sum(p.cpu_times()[:2]) for k, p in procs.items()}
        t0 = time.time()
        time.sleep(seconds)
        cpu_gw = sum(procs["gateway"].cpu_times()[:2]) - cpu0["gateway"]
        gw.terminate()
        gw.wait(30)
        import sqlite3

        conn = sqlite3.connect(work / "outbox.sqlite")
        (next_seq,) = conn.execute("SELECT value FROM meta WHERE key='next_seq'").fetchone()
        (queued,) = conn.execute("SELECT count(*) FROM telemetry").fetchone()
        conn.close()
        committed = next_seq - 1
        deadline = time.time() + 120
        while (stored := stored_records(store)) < committed - queued and time.time() < deadline:
            time.sleep(1)
        wall = time.time() - t0
        cpu = {k: round(sum(p.cpu_times()[:2]) - cpu0[k], 1) for k, p in procs.items() if k != "gateway"}
        cpu["gateway"] = round(cpu_gw, 1)
        ingest.terminate()
        ingest.wait(30)
        store.stop()
        broker.stop()
    return {"devices": devices, "asked_records_per_s": round(devices / interval_s), "values": values,
            "seconds": seconds, "committed": committed, "left_in_outbox": queued, "stored": stored,
            "records_per_s": round(stored / wall), "datapoints_per_s": round(stored * values / wall),
            "cpu_seconds": cpu}


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--devices", type=int, default=50)
    ap.add_argument("--interval-s", type=float, default=0.005)
    ap.add_argument("--values", type=int, default=10)
    ap.add_argument("--seconds", type=float, default=30)
    a = ap.parse_args()
    print(json.dumps(main(a.devices, a.interval_s, a.values, a.seconds)))
