"""Card tap -> durable in the outbox -> feedback latency, while telemetry flows; without and with the models.

    .venv/bin/python bench/tap_latency.py [--rates 1 10 100] [--seconds 20] [--telemetry-dps 2000]
                                          [--variants none models]

Runs a real gateway (in this process, on one event loop) with EM4100 readers
on pseudo-terminals (simulated in a second thread), synthetic telemetry at
``--telemetry-dps`` datapoints/s, and a private Mosquitto for the uplink. For
each tap rate, unique cards are tapped round-robin over max(1, rate/10)
readers; the latency of a tap is the time from the simulator writing the
reader's frame to the driver's feedback call, which comes only after the tap
event is committed (fsync) in the outbox. Prints one JSON line per rate.

Two variants, each in a fresh child process (so that their RSS compare): ``none`` (no models), and
``models`` (issue 14): the model stage runs all five shipped models flat out on synthetic devices reading every
``--model-interval-s`` (three anomaly devices, two occupancy sensors: tens of calls a second, against one
reading a minute in a school), and the attendance service has its checks on (its two classifiers loaded; the
bench's unique cards make no pair for the card-sharing one to score). Each line also gives the process's RSS
at the end, the models loaded, and their calls and p99 in the run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import yaml

from edugate.drivers.card_reader import Outcome
from edugate.drivers.em4100.driver import EM4100Driver
from edugate.gateway.config import parse_config
from edugate.gateway.runtime.gateway import Gateway
from edugate.simulators.em4100 import EM4100Simulator
from edugate.simulators.servers import Mosquitto


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


class TapSide:
    """The readers' side: EM4100 simulators on their own loop, tapping unique cards at a set rate."""

    def __init__(self, links: dict[str, Path]) -> None:
        self.links = links
        self.written: dict[str, list[float]] = defaultdict(list)
        self.loop = asyncio.new_event_loop()
        self.sims: dict[str, EM4100Simulator] = {}
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.serial = 1

    def start(self) -> None:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(10)

    async def _start(self) -> None:
        for name, link in self.links.items():
            self.sims[name] = sim = EM4100Simulator(link)
            await sim.start()

    def tap_for(self, seconds: float, rate: float, readers: list[str]) -> int:
        return asyncio.run_coroutine_threadsafe(self._taps(seconds, rate, readers), self.loop).result(seconds + 30)

    async def _taps(self, seconds: float, rate: float, readers: list[str]) -> int:
        start = time.perf_counter()
        n = 0
        while (now := time.perf_counter()) - start < seconds:
            reader = readers[n % len(readers)]
            card = (0x4200000000 + self.serial).to_bytes(5, "big")
            self.serial += 1
            self.written[reader].append(time.perf_counter())
            self.sims[reader].tap(card)
            n += 1
            await asyncio.sleep(max(0.0, start + n / rate - time.perf_counter()))
        del now
        return n

    def stop(self) -> None:
        async def stop_all() -> None:
            for sim in self.sims.values():
                await sim.stop()
        asyncio.run_coroutine_threadsafe(stop_all(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)


MODEL_DEVICES = {  # synthetic device -> the models section entry that scores it (values v0.. as the channels)
    "fridge-1": ("anomaly", {"kind": "fridge", "channels": {"temp": "v0", "power": "v1"}}),
    "hood-1": ("anomaly", {"kind": "fume_hood", "channels": {"face_velocity": "v0", "fan_power": "v1"}}),
    "projector-1": ("anomaly", {"kind": "projector", "channels": {"lamp_temp": "v0", "power": "v1", "fan_rpm": "v2"}}),
    "room-env-1": ("occupancy", {"channels": {"co2": "v0", "temp": "v1", "humidity": "v2", "light": "v3"}}),
    "room-env-2": ("occupancy", {"channels": {"co2": "v0", "temp": "v1", "humidity": "v2", "light": "v3"}}),
}


def models_config(interval_s: float) -> tuple[list[dict], dict]:
    """The synthetic devices the models score, and the config sections running every model."""
    devices = [{"id": name, "driver": "synthetic", "room": "lab-1", "values": 4, "interval_s": interval_s}
               for name in MODEL_DEVICES]
    models: dict = {"anomaly": [], "occupancy": [], "budget_ms": 5, "max_pending": 64}
    for name, (task, entry) in MODEL_DEVICES.items():
        models[task].append({"device": name, **entry})
    # the checks' classifiers load; the period is one minute after midnight so that the bench's taps are not
    # tallied (the attendance tallies' state file is rewritten for every new card: not what is measured here)
    timetable = {"days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
                 "periods": [{"name": "night", "start": "00:00", "end": "00:01"}],
                 "checks": {"rooms": {"lab-1": {"x": 0}}}}
    return devices, {"models": models, "timetable": timetable}


async def run(rates: list[float], seconds: float, telemetry_dps: int, workdir: Path, variant: str = "none",
              model_interval_s: float = 0.1) -> list[dict]:
    broker = Mosquitto(workdir / "mqtt", persistence=False)
    broker.start()
    n_readers = max(1, int(max(rates) // 10))
    links = {f"reader-{i}": workdir / f"tty{i}" for i in range(n_readers)}
    side = TapSide(links)
    side.start()
    feedback: dict[str, list[float]] = defaultdict(list)
    original = EM4100Driver.signal

    async def timed_signal(self: EM4100Driver, outcome: Outcome) -> None:
        feedback[self.device_id].append(time.perf_counter())
        await original(self, outcome)

    EM4100Driver.signal = timed_signal  # type: ignore[method-assign]  # instrumented on purpose: timing the beep
    per_device = 20
    devices = [{"id": f"tele-{i}", "driver": "synthetic", "values": 9, "interval_s": per_device * 10 / telemetry_dps}
               for i in range(per_device)] if telemetry_dps else []
    devices += [{"id": name, "driver": "em4100", "role": "attendance", "port": str(link), "debounce_s": 0,
                 "room": "lab-1"} for name, link in links.items()]
    sections: dict = {}
    if variant == "models":
        model_devices, sections = models_config(model_interval_s)
        devices += model_devices
    cfg = parse_config(yaml.safe_dump({
        "school": "bench", "gateway": "tap-bench", "uplink": {"port": broker.port},
        "storage": {"path": str(workdir / "outbox.sqlite")}, "privacy": {"secret_file": str(workdir / "k")},
        "devices": devices, **sections}))
    gw = Gateway(cfg)
    task = asyncio.create_task(gw.run())
    await asyncio.sleep(3)  # readers open their ports, telemetry flows, the models load
    results = []
    for rate in rates:
        readers = list(links)[: max(1, int(rate // 10))]
        for name in readers:
            side.written[name].clear()
            feedback[name].clear()
        calls_before = {name: m.get("calls") or 0 for name, m in gw.model_entries().items()}
        taps = await asyncio.to_thread(side.tap_for, seconds, rate, readers)
        await asyncio.sleep(1.0)
        models = gw.model_entries()
        latencies = [1000 * (f - w) for name in readers
                     for w, f in zip(side.written[name], feedback[name], strict=False)]
        answered = sum(min(len(side.written[n]), len(feedback[n])) for n in readers)
        results.append({"taps_per_s": rate, "readers": len(readers), "taps": taps, "answered": answered,
                        "telemetry_dps": telemetry_dps, "p50_ms": round(statistics.median(latencies), 2),
                        "p99_ms": round(percentile(latencies, 99), 2), "max_ms": round(max(latencies), 2),
                        "sync": cfg.storage.sync, "variant": variant,
                        "rss_mb": round(gw.health_values()["rss_bytes"] / 2**20, 1),
                        "models_loaded": sum(bool(m.get("loaded")) for m in models.values()),
                        "model_calls_per_s": round(sum((m.get("calls") or 0) - calls_before.get(n, 0)
                                                       for n, m in models.items()) / (seconds + 1.0), 1),
                        "model_p99_ms": max((m.get("p99_ms") or 0.0 for m in models.values()), default=None),
                        "model_overruns": sum(m.get("overruns") or 0 for m in models.values())})
        print(json.dumps(results[-1]), flush=True)
    gw.stop()
    await task
    side.stop()
    broker.stop()
    return results


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rates", type=float, nargs="+", default=[1, 10, 100])
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--telemetry-dps", type=int, default=2000)
    ap.add_argument("--variants", nargs="+", choices=["none", "models"], default=["none", "models"],
                    help="each runs in a child process of its own, one after the other")
    ap.add_argument("--model-interval-s", type=float, default=0.1, help="the model devices' reading interval")
    ap.add_argument("--child", choices=["none", "models"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        with tempfile.TemporaryDirectory(prefix="tap-bench-") as tmp:
            asyncio.run(run(args.rates, args.seconds, args.telemetry_dps, Path(tmp), args.child,
                            args.model_interval_s))
    else:
        for variant in args.variants:
            subprocess.run([sys.executable, __file__, "--child", variant, "--rates", *map(str, args.rates),
                            "--seconds", str(args.seconds), "--telemetry-dps", str(args.telemetry_dps),
                            "--model-interval-s", str(args.model_interval_s)], check=True)
