"""The central broker's autosave interval with a large backlog (issue 23): the old setting and the shipped one,
side by side in one run.

    .venv/bin/python bench/broker_autosave.py [--backlog 300000] [--size 1024] [--window-s 70] [--rate 50]
                                              [--intervals 1,60] [--dir /var/tmp] [--out FILE]

For each ``autosave_interval`` a private Mosquitto is started with the shipped
``config/mosquitto/conf.d/edugate-central.conf`` (only that one line changed). An ingest worker's persistent
session subscribes and goes away, so everything published is queued for it (the backlog a broker holds while
its worker is down). The backlog is published (QoS 1, ``--size`` bytes each), then, over ``--window-s``
seconds, one "gateway" publishes ``--rate`` messages/s at QoS 1 and times each PUBACK. Measured over the
window: the broker's bytes written (``/proc/<pid>/io``: ``wchar``, what it hands to ``write()``, and
``write_bytes``, what reached the block device), the peak one-second write rate, the autosaves it logged, and
the PUBACK latency percentiles. The window is longer than the shipped interval, so the shipped setting's own
save is inside it. Results: printed, and one JSON file (``--out``, default ``bench/results/broker_autosave.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edugate.simulators.servers import SHIPPED_CONF, Mosquitto  # noqa: E402

TOPIC = "edu/v1/school-1/gw-{n}/telemetry"
SAVE_LINE = "Saving in-memory database"


def conf_with_interval(workdir: Path, interval: int) -> Path:
    """The shipped broker file with ``autosave_interval`` set to ``interval`` (and nothing else changed)."""
    text = SHIPPED_CONF.read_text()
    changed, count = re.subn(r"^autosave_interval\s+\d+\s*$", f"autosave_interval {interval}", text,
                             flags=re.MULTILINE)
    if count != 1:
        raise SystemExit(f"{SHIPPED_CONF}: expected one 'autosave_interval' line, found {count}")
    path = workdir / f"edugate-central-autosave-{interval}.conf"
    path.write_text(changed)
    return path


def io_bytes(pid: int) -> tuple[int, int]:
    """(wchar, write_bytes) of process ``pid``."""
    fields = dict(line.split(": ") for line in Path(f"/proc/{pid}/io").read_text().splitlines())
    return int(fields["wchar"]), int(fields["write_bytes"])


def client(broker: Mosquitto, client_id: str, clean: bool = True) -> mqtt.Client:
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=clean)
    c.max_inflight_messages_set(1000)
    c.max_queued_messages_set(0)
    c.connect(broker.host, broker.port, keepalive=120)
    return c


def park_worker_session(broker: Mosquitto) -> None:
    """A worker's persistent session subscribes, then disconnects: the broker queues everything for it."""
    worker = client(broker, "ingest-1", clean=False)
    subscribed = threading.Event()
    worker.on_subscribe = lambda *_: subscribed.set()
    worker.subscribe("edu/v1/+/+/telemetry", qos=1)
    worker.loop_start()
    if not subscribed.wait(10):
        raise SystemExit("the worker's subscription was not acknowledged")
    worker.disconnect()
    worker.loop_stop()


def fill(broker: Mosquitto, count: int, payload: bytes) -> float:
    """Publish ``count`` QoS 1 messages and wait for every PUBACK; the seconds it took."""
    acked = 0
    done = threading.Event()
    lock = threading.Lock()

    def on_publish(*_: Any) -> None:
        nonlocal acked
        with lock:
            acked += 1
            if acked == count:
                done.set()

    pub = client(broker, "bench-backlog")
    pub.on_publish = on_publish
    pub.loop_start()
    start = time.monotonic()
    for i in range(count):
        while i - acked > 5000:  # keep paho's own queue short
            time.sleep(0.002)
        pub.publish(TOPIC.format(n=i % 100), payload, qos=1)
    if not done.wait(1800):
        raise SystemExit(f"the backlog was not acknowledged: {acked} of {count}")
    took = time.monotonic() - start
    pub.disconnect()
    pub.loop_stop()
    return took


def measure_window(broker: Mosquitto, window_s: float, rate: float, payload: bytes) -> dict[str, Any]:
    """A gateway publishing at ``rate``/s for ``window_s``: PUBACK latencies and the broker's disk writes."""
    assert broker.proc is not None
    pid = broker.proc.pid
    sent: dict[int, float] = {}
    acked: dict[int, float] = {}  # no lock of ours: paho calls on_publish holding its own, which publish() takes

    def on_publish(_c: Any, _u: Any, mid: int, *_: Any) -> None:
        acked[mid] = time.monotonic()

    gw = client(broker, "bench-gateway")
    gw.on_publish = on_publish
    gw.loop_start()
    saves_before = broker.log_path.read_text().count(SAVE_LINE)
    wchar0, disk0 = io_bytes(pid)
    last_wchar, peak = wchar0, 0.0
    start = time.monotonic()
    next_sample = start + 1.0
    n = 0
    while (now := time.monotonic()) < start + window_s:
        due = int((now - start) * rate) + 1
        while n < due:
            t0 = time.monotonic()
            sent[gw.publish(TOPIC.format(n=0), payload, qos=1).mid] = t0
            n += 1
        if now >= next_sample:
            wchar, _ = io_bytes(pid)
            peak = max(peak, (wchar - last_wchar) / (now - next_sample + 1.0))
            last_wchar, next_sample = wchar, now + 1.0
        time.sleep(min(0.01, 1 / rate))
    elapsed = time.monotonic() - start
    wchar1, disk1 = io_bytes(pid)
    saves = broker.log_path.read_text().count(SAVE_LINE) - saves_before
    deadline = time.monotonic() + 60
    while len(acked) < len(sent) and time.monotonic() < deadline:  # the last PUBACKs, if a save holds them
        time.sleep(0.05)
    gw.disconnect()
    gw.loop_stop()
    lat = sorted(acked[mid] - t0 for mid, t0 in sent.items() if mid in acked)

    def pct(p: float) -> float:
        return round(lat[min(len(lat) - 1, int(p * len(lat)))] * 1000, 1)

    return {
        "published": n, "acknowledged": len(lat), "unacknowledged_after_60s": len(sent) - len(lat),
        "puback_ms": {"p50": pct(0.50), "p99": pct(0.99), "max": pct(1.0),
                      "mean": round(statistics.fmean(lat) * 1000, 1)},
        "autosaves_in_window": saves, "window_s": round(elapsed, 1),
        "written_mb_per_s": round((wchar1 - wchar0) / elapsed / 1e6, 1),
        "to_disk_mb_per_s": round((disk1 - disk0) / elapsed / 1e6, 1),
        "peak_written_mb_per_s_1s": round(peak / 1e6, 1),
    }


def run(interval: int, args: argparse.Namespace, base: Path) -> dict[str, Any]:
    work = base / f"autosave-{interval}"
    work.mkdir()
    broker = Mosquitto(work, conf_file=conf_with_interval(base, interval), extra_conf="log_type information")
    broker.start()
    assert broker.proc is not None
    try:
        payload = os.urandom(args.size)
        park_worker_session(broker)
        fill_s = fill(broker, args.backlog, payload)
        result = measure_window(broker, args.window_s, args.rate, payload)
        result.update(autosave_interval=interval, backlog=args.backlog, size=args.size,
                      fill_s=round(fill_s, 1), fill_msgs_per_s=round(args.backlog / fill_s),
                      broker_rss_mb=round(psutil.Process(broker.proc.pid).memory_info().rss / 1e6),
                      db_file_mb=round(sum(p.stat().st_size for p in work.glob("mosquitto.db*")) / 1e6))
        return result
    finally:
        broker.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--backlog", type=int, default=300_000, help="messages queued for the absent worker")
    ap.add_argument("--size", type=int, default=1024, help="payload bytes per message")
    ap.add_argument("--window-s", type=float, default=70.0, help="measurement window (longer than 60 s)")
    ap.add_argument("--rate", type=float, default=50.0, help="the gateway's messages per second")
    ap.add_argument("--intervals", default="1,60", help="autosave_interval values to compare")
    ap.add_argument("--dir", type=Path, default=Path("/var/tmp"), help="where the brokers keep their files")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "broker_autosave.json")
    args = ap.parse_args()
    if args.rate * args.window_s > 60_000:
        ap.error("--rate x --window-s must stay under 60,000 messages (MQTT packet ids wrap at 65,535)")
    results = []
    with tempfile.TemporaryDirectory(prefix="edugate-autosave-", dir=args.dir) as tmp:
        for interval in (int(v) for v in args.intervals.split(",")):
            result = run(interval, args, Path(tmp))
            print(json.dumps(result), flush=True)
            results.append(result)
    meta = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "cpus": os.cpu_count(),
            "load_avg": os.getloadavg(), "command": " ".join(sys.argv)}
    args.out.write_text(json.dumps({"meta": meta, "runs": results}, indent=1) + "\n")
    print(f"\n{'autosave_interval':>17} {'saves':>5} {'MB/s written':>12} {'peak MB/s':>9} {'PUBACK p50':>10} "
          f"{'p99':>8} {'max':>8}")
    for r in results:
        print(f"{r['autosave_interval']:>17} {r['autosaves_in_window']:>5} {r['written_mb_per_s']:>12} "
              f"{r['peak_written_mb_per_s_1s']:>9} {r['puback_ms']['p50']:>8}ms {r['puback_ms']['p99']:>6}ms "
              f"{r['puback_ms']['max']:>6}ms")


if __name__ == "__main__":
    main()
