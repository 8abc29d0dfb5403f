"""Idle footprint: CPU % and RSS of `edugate run` with no devices, and with 10 Modbus devices polled every 1 s.

    .venv/bin/python bench/idle.py [--settle 10] [--duration 30]

Starts a private Mosquitto (``simulators.servers``, free loopback port) and,
for the second case, the Modbus simulator (``python -m edugate.simulators.modbus``,
units 1-10 with the ``co2-ndir`` profile, 3 registers each). Each case writes a
gateway config into a temporary folder, starts ``.venv/bin/edugate run`` (the
PID measured is the gateway's Python process), waits ``--settle`` seconds,
then samples CPU time and RSS with psutil once a second for ``--duration``
seconds. CPU % is 100 x CPU seconds / wall seconds (100 = one core). Prints
one JSON line per case, and the RSS the gateway's imports account for (what ``edugate run`` imports:
``edugate.cli.gateway_commands``, the runtime and the Modbus driver, in a fresh interpreter; most of it).

Targets (issue 6): < 1 % CPU and < 50 MB RSS in both cases.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edugate.simulators.servers import Mosquitto, free_port, wait_for_port  # noqa: E402

PYTHON = REPO / ".venv" / "bin" / "python"
EDUGATE = REPO / ".venv" / "bin" / "edugate"


def config(root: Path, broker: Mosquitto, modbus_port: int | None, devices: int) -> Path:
    devs = [{"id": f"lab-{unit:03d}", "driver": "modbus", "room": "lab-1", "host": "127.0.0.1",
             "port": modbus_port, "unit": unit, "profile": "co2-ndir", "poll_interval_s": 1.0}
            for unit in range(1, devices + 1)]
    cfg = {"school": "bench", "gateway": "idle", "uplink": {"host": broker.host, "port": broker.port},
           "storage": {"path": str(root / "outbox.sqlite")}, "devices": devs}
    path = root / "gateway.yaml"
    path.write_text(json.dumps(cfg, indent=1))  # JSON is valid YAML
    return path


def measure(argv: list[str], log: Path, settle: float, duration: float) -> dict:
    with log.open("ab") as out:
        gw = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    try:
        time.sleep(settle)
        if gw.poll() is not None:
            raise RuntimeError(f"gateway exited early; see {log}")
        proc = psutil.Process(gw.pid)
        samples = []
        t_end = time.monotonic() + duration
        while True:
            times = proc.cpu_times()
            samples.append((time.monotonic(), times.user + times.system, proc.memory_info().rss))
            if time.monotonic() >= t_end:
                break
            time.sleep(1.0)
    finally:
        gw.terminate()
        try:
            gw.wait(20)
        except subprocess.TimeoutExpired:
            gw.kill()
            gw.wait()
    (t0, c0, _), (t1, c1, _) = samples[0], samples[-1]
    rss = [s[2] for s in samples]
    return {"cpu_pct": round(100 * (c1 - c0) / (t1 - t0), 2), "rss_mb_mean": round(sum(rss) / len(rss) / 2**20, 1),
            "rss_mb_max": round(max(rss) / 2**20, 1), "seconds": round(t1 - t0, 1)}


def import_rss() -> dict:
    code = ("import edugate.cli.gateway_commands, edugate.gateway.runtime.gateway, edugate.drivers.modbus.driver\n"
            "from edugate.gateway.config import gateway_config_model\n"
            "gateway_config_model(frozenset({'modbus'}), frozenset())\n"
            "print(open('/proc/self/status').read())")
    text = subprocess.run([str(PYTHON), "-c", code], capture_output=True, text=True, cwd=REPO, check=True).stdout
    bare = subprocess.run([str(PYTHON), "-c", "print(open('/proc/self/status').read())"], capture_output=True,
                          text=True, check=True).stdout

    def rss(status: str) -> float:
        line = next(x for x in status.splitlines() if x.startswith("VmRSS"))
        return round(int(line.split()[1]) / 1024, 1)

    return {"python_bare_rss_mb": rss(bare), "after_imports_rss_mb": rss(text)}


def main(settle: float, duration: float) -> list[dict]:
    results = []
    with tempfile.TemporaryDirectory(prefix="edugate-idle-bench-") as tmp:
        root = Path(tmp)
        with Mosquitto(root / "mqtt", persistence=False) as broker:
            case = root / "no-devices"
            case.mkdir()
            argv = [str(EDUGATE), "run", str(config(case, broker, None, 0))]
            results.append({"case": "no devices", **measure(argv, case / "gateway.log", settle, duration)})

            case = root / "ten-devices"
            case.mkdir()
            port = free_port()
            sim = subprocess.Popen([str(PYTHON), "-m", "edugate.simulators.modbus", "--port", str(port),
                                   "--units", "1-10",
                                    "--profile", "co2-ndir"], cwd=REPO, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
            try:
                wait_for_port("127.0.0.1", port, proc=sim)
                argv = [str(EDUGATE), "run", str(config(case, broker, port, 10))]
                results.append({"case": "10 Modbus devices @ 1 s",
                                **measure(argv, case / "gateway.log", settle, duration)})
            finally:
                sim.terminate()
                sim.wait(10)
    results.append({"case": "imports only", **import_rss()})
    return results


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--settle", type=float, default=10.0)
    ap.add_argument("--duration", type=float, default=30.0)
    args = ap.parse_args()
    for row in main(args.settle, args.duration):
        print(json.dumps(row))
