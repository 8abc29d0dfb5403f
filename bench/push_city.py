"""Push adapter: how long one scheduled run takes to cut a city's figures into signed batches and deliver them.

    .venv/bin/python bench/push_city.py [--schools 2500] [--districts 24] [--batch-rows 500]

Builds the anonymised rows of one period for a synthetic city (``anonymise.rows`` over per-school components, as
the API and the supervision report do; the store queries are not part of it), then times, best of 3: cutting them
into batches with their idempotency keys and the privacy check (``push.batches.make_batches``), keeping them in a
fresh ``push.state_db`` (``push.spool.Spool``), and delivering them (``Pusher.deliver_until_done``: HMAC-SHA256,
one HTTP POST each) to a receiver on this machine that checks every signature and keeps each key once. Prints
one JSON line.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import hmac
import json
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

from edugate.central.config import CentralConfig
from edugate.central.indicators.anonymise import Rule, rows
from edugate.central.indicators.compute import Figures
from edugate.central.indicators.periods import parse_period
from edugate.central.push.batches import make_batches
from edugate.central.push.runner import Pusher
from edugate.central.push.spool import Spool
from edugate.simulators.servers import free_port

SECRET = b"bench-secret-0123456789abcdef0123456789"


def city(schools: int, districts: int) -> tuple[dict[str, Figures], dict[str, list[str]]]:
    figures: dict[str, Figures] = {}
    for i in range(schools):
        f = Figures(has_data=True, has_events=True)
        f.components.update({"taps": 900 + i % 700, "present": 800 + i % 500, "visitors": 120 + i % 90,
                             "loans": 30 + i % 40, "alarms": i % 7, "gateways": 2, "health_records": 5000,
                             "expected_health_records": 5760, "online_states": 5000, "devices_online": 40_000,
                             "devices_total": 42_000, "alerts_raised": i % 5, "assets_on_record": 60,
                             "assets_in_use": 40, "power_on_hours": 300.5, "lab_sessions": 12})
        figures[f"school-{i:04d}"] = f
    return figures, {f"district-{d:02d}": [f"school-{i:04d}" for i in range(d, schools, districts)]
                     for d in range(districts)}


class Receiver(BaseHTTPRequestHandler):
    keys: ClassVar[set[str]] = set()
    bad = 0

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        fields = dict(p.split("=", 1) for p in self.headers["X-EduGate-Signature"].split(","))
        mac = hmac.new(SECRET, fields["t"].encode() + b"." + body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(mac, fields["sha256"]):
            Receiver.bad += 1
        Receiver.keys.add(self.headers["Idempotency-Key"])
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--schools", type=int, default=2500)
    parser.add_argument("--districts", type=int, default=24)
    parser.add_argument("--batch-rows", type=int, default=500)
    args = parser.parse_args()
    schools, districts = city(args.schools, args.districts)
    period = parse_period("2026-11", "Asia/Ho_Chi_Minh")
    now = dt.datetime(2026, 12, 3, tzinfo=dt.UTC)
    items = rows(schools, districts, period, now, Rule())
    doc = {"period": period.name, "from": period.start.isoformat(), "to": period.end.isoformat(), "complete": True,
           "generated": now.isoformat(), "k": 5, "round_to": 5, "items": items}
    port = free_port()
    server = ThreadingHTTPServer(("127.0.0.1", port), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    best: dict[str, float] = {}
    batches = body_bytes = 0
    with tempfile.TemporaryDirectory() as tmp:
        for run in range(3):
            Receiver.keys.clear()
            cfg = CentralConfig.model_validate({"push": {"url": f"http://127.0.0.1:{port}/in",
                                                         "secret_file": "unused", "batch_rows": args.batch_rows,
                                                         "state_db": str(Path(tmp) / f"push-{run}.sqlite")}})
            t0 = time.perf_counter()
            made = make_batches(doc, args.batch_rows)
            t1 = time.perf_counter()
            spool = Spool(cfg.push.state_db)
            for b in made:
                spool.add(b.key, b.period, b.batch, b.batches, b.body, int(time.time() * 1000))
            t2 = time.perf_counter()
            Pusher(cfg, SECRET, spool).deliver_until_done()
            t3 = time.perf_counter()
            spool.close()
            assert len(Receiver.keys) == len(made) and not Receiver.bad
            batches, body_bytes = len(made), sum(len(b.body) for b in made)
            for name, value in (("batch_s", t1 - t0), ("spool_s", t2 - t1), ("deliver_s", t3 - t2)):
                best[name] = min(best.get(name, value), value)
    server.shutdown()
    total = sum(best.values())
    print(json.dumps({"schools": args.schools, "districts": args.districts, "rows": len(items), "batches": batches,
                      "body_mb": round(body_bytes / 1e6, 2), **{k: round(v, 3) for k, v in best.items()},
                      "total_s": round(total, 3), "rows_per_s": round(len(items) / total)}))


if __name__ == "__main__":
    main()
