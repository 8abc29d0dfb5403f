"""Outbox commit throughput: records/s through pipeline + outbox (group commit, fsync).

    .venv/bin/python bench/outbox_throughput.py [--records 50000] [--producers 100] [--sync full]
                                                [--commit-delay-ms 10]

Each producer is a coroutine that submits readings of 10 values one after the
other, awaiting durability each time, like a driver polling a device. Prints
one JSON line with records/s, datapoints/s, commits and records per commit.
``--commit-delay-ms`` is ``storage.telemetry_commit_delay_ms`` (default 10, as shipped;
0 = no waiting for company): a closed loop of one producer waits the 1 ms gap on every record.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edugate.contract.records import Reading
from edugate.gateway.runtime.clock import Clock
from edugate.gateway.runtime.outbox import Outbox
from edugate.gateway.runtime.pipeline import Pipeline


async def main(records: int, producers: int, sync: str, delay_ms: float) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        box = await Outbox.open(Path(tmp) / "o.sqlite", budget_bytes=1 << 34, sync=sync,
                                telemetry_commit_delay_s=delay_ms / 1000)
        devices = [f"dev-{i:03d}" for i in range(producers)]
        pipe = Pipeline(box, Clock("always"), dict.fromkeys(devices, "lab-1"))
        per = records // producers

        async def produce(device: str) -> None:
            for n in range(per):
                await pipe.submit(Reading(device, {"seq": n, **{f"r{i}": 20.0 + i for i in range(1, 10)}}))

        t0 = time.perf_counter()
        cpu0 = time.process_time()
        await asyncio.gather(*(produce(d) for d in devices))
        wall = time.perf_counter() - t0
        cpu = time.process_time() - cpu0
        stats = box.stats
        await box.close()
    done = per * producers
    return {"records": done, "producers": producers, "sync": sync, "commit_delay_ms": delay_ms,
            "seconds": round(wall, 3),
            "records_per_s": round(done / wall), "datapoints_per_s": round(done * 10 / wall),
            "cpu_seconds": round(cpu, 3), "commits": stats.commits,
            "records_per_commit": round(done / max(1, stats.commits), 1)}


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=50_000)
    ap.add_argument("--producers", type=int, default=100)
    ap.add_argument("--sync", choices=["full", "normal"], default="full")
    ap.add_argument("--commit-delay-ms", type=float, default=10.0)
    args = ap.parse_args()
    print(json.dumps(asyncio.run(main(args.records, args.producers, args.sync, args.commit_delay_ms))))
