"""Where a gateway's CPU goes at the harness's 100 devices x 10 registers @ 1 s: totals, per thread, py-spy.

    .venv/bin/pip install -e '.[bench]'          # py-spy
    .venv/bin/python bench/profile_gateway.py [--devices 100] [--registers 10] [--poll-ms 1000] [--seconds 30]

Starts a private Mosquitto and the harness's Modbus simulator (``/work/shared/bench/modbus_sim.py``, units
1..D with R registers, on free loopback ports), runs ``edugate run`` with the same config the harness
adapter writes (``bench/edugate_adapter.py``), lets it settle, then:

1. measures the gateway's CPU (user + system, psutil) and its threads' CPU (``/proc/<pid>/task``) over
   ``--seconds``;
2. measures, the same way, a bare pymodbus client doing only the Modbus requests (one task per
   device, same schedule): the floor any pymodbus-based gateway pays on this bench;
3. records a py-spy flame graph of the gateway (``--out``/profile-<D>x<R>-<P>ms.svg, on-CPU samples only)
   and prints the functions on the stack in most busy samples (the raw speedscope file stays in the
   temporary folder).

Prints JSON lines; docs/benchmarks.md explains what they show.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from edugate_adapter import _registers  # noqa: E402

from edugate.simulators.servers import Mosquitto, free_port, wait_for_port  # noqa: E402

PYTHON = REPO / ".venv" / "bin" / "python"
EDUGATE = REPO / ".venv" / "bin" / "edugate"
PY_SPY = REPO / ".venv" / "bin" / "py-spy"
HARNESS_SIM = Path(os.environ.get("BENCH_DIR", "/work/shared/bench")) / "modbus_sim.py"


def thread_cpu(pid: int) -> dict[int, tuple[str, float]]:
    """CPU seconds so far of every thread of ``pid``, with its name."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[int, tuple[str, float]] = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
        except OSError:
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        out[int(tid)] = (name, (int(fields[11]) + int(fields[12])) / tick)
    return out


def measure(pid: int, seconds: float) -> dict:
    proc = psutil.Process(pid)
    t0, c0, th0 = time.monotonic(), sum(proc.cpu_times()[:2]), thread_cpu(pid)
    time.sleep(seconds)
    t1, c1, th1 = time.monotonic(), sum(proc.cpu_times()[:2]), thread_cpu(pid)
    wall = t1 - t0
    threads = sorted(((100 * (cpu - th0.get(tid, (name, 0.0))[1]) / wall, tid == pid, name)
                      for tid, (name, cpu) in th1.items()), reverse=True)
    return {"cpu_pct": round(100 * (c1 - c0) / wall, 2),
            "threads_pct": {("main" if main else f"{name}-{i}"): round(pct, 2)
                            for i, (pct, main, name) in enumerate(threads) if pct > 0.005},
            "rss_mb": round(proc.memory_info().rss / 2**20, 1)}


def floor_client(port: int, devices: int, registers: int, period: float, seconds: float) -> dict:
    """A bare pymodbus client polling like the gateway does, nothing else: CPU of this process."""
    code = f"""
import asyncio, resource, time
from pymodbus.client import AsyncModbusTcpClient
async def main():
    client = AsyncModbusTcpClient("127.0.0.1", port={port})
    await client.connect()
    loop = asyncio.get_running_loop()
    async def device(unit):
        due = loop.time()
        while True:
            await client.read_holding_registers(0, count={registers}, device_id=unit)
            due += {period}
            await asyncio.sleep(max(0.0, due - loop.time()))
    tasks = [asyncio.create_task(device(u)) for u in range(1, {devices} + 1)]
    await asyncio.sleep(3)
    r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
    await asyncio.sleep({seconds})
    r1, t1 = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
    print(round(100 * (r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime) / (t1 - t0), 2))
    for t in tasks:
        t.cancel()
asyncio.run(main())
"""
    out = subprocess.run([str(PYTHON), "-c", code], capture_output=True, text=True, check=True, timeout=seconds + 60)
    return {"cpu_pct": float(out.stdout.strip())}


def top_functions(speedscope: Path, limit: int = 25) -> list[tuple[float, str]]:
    """Share of busy samples in which each function is on the stack.

    py-spy counts a thread waiting in epoll as active at times; samples whose innermost frame is the
    selector's wait are left out, so the shares are of the samples where Python code was running.
    """
    doc = json.loads(speedscope.read_text())
    frames = doc["shared"]["frames"]
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0.0
    for profile in doc["profiles"]:
        for stack, weight in zip(profile["samples"], profile.get("weights", [1] * len(profile["samples"])),
                                 strict=True):
            if stack and frames[stack[-1]]["name"].endswith("Selector.select"):
                continue
            total += weight
            seen = set()
            for index in stack:
                frame = frames[index]
                where = frame.get("file", "").split("site-packages/")[-1].replace(str(REPO) + "/", "")
                key = f"{frame['name']} ({where})"
                if key not in seen:
                    seen.add(key)
                    inclusive[key] += weight
    skip = ("threading.py", "runners.py", "base_events.py:run", "typer", "click", "edugate:", "<module>")
    rows = [(100 * w / total, k) for k, w in inclusive.most_common() if not any(s in k for s in skip)]
    return rows[:limit]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--devices", type=int, default=100)
    ap.add_argument("--registers", type=int, default=10)
    ap.add_argument("--poll-ms", type=int, default=1000)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--settle", type=float, default=10.0)
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "profiles")
    args = ap.parse_args()
    if not HARNESS_SIM.exists():
        sys.exit(f"{HARNESS_SIM} not found: set BENCH_DIR to the shared benchmark harness")
    if not PY_SPY.exists():
        sys.exit("py-spy is not installed: .venv/bin/pip install -e '.[bench]'")
    args.out.mkdir(parents=True, exist_ok=True)
    name = f"{args.devices}x{args.registers}-{args.poll_ms}ms"
    with tempfile.TemporaryDirectory(prefix="edugate-profile-") as tmp:
        root = Path(tmp)
        port = free_port()
        sim = subprocess.Popen([str(PYTHON), str(HARNESS_SIM), "--devices", str(args.devices), "--registers",
                                str(args.registers), "--port", str(port)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
        try:
            wait_for_port("127.0.0.1", port, proc=sim)
            with Mosquitto(root / "mqtt", persistence=False) as broker:
                devices = [{"id": f"lab-{u:03d}", "driver": "modbus", "room": "bench-lab", "host": "127.0.0.1",
                            "port": port, "unit": u, "registers": _registers(args.registers),
                            "poll_interval_s": args.poll_ms / 1000} for u in range(1, args.devices + 1)]
                cfg = {"school": "bench", "gateway": "gw1", "uplink": {"host": broker.host, "port": broker.port},
                       "storage": {"path": str(root / "data" / "outbox.sqlite"), "sync": "full"},
                       "privacy": {"secret_file": str(root / "data" / "school.key")}, "devices": devices}
                (root / "gw.yaml").write_text(json.dumps(cfg))
                with (root / "gw.log").open("wb") as log:
                    gw = subprocess.Popen([str(EDUGATE), "run", str(root / "gw.yaml")], stdout=log,
                                          stderr=subprocess.STDOUT)
                try:
                    time.sleep(args.settle)
                    if gw.poll() is not None:
                        sys.exit((root / "gw.log").read_text()[-2000:])
                    dp = args.devices * args.registers * 1000 / args.poll_ms
                    row = measure(gw.pid, args.seconds)
                    row["dp_per_cpu_s"] = round(dp / (row["cpu_pct"] / 100)) if row["cpu_pct"] else None
                    print(json.dumps({"case": f"gateway {name}", **row}), flush=True)
                    speedscope = root / "profile.json"
                    spy = [str(PY_SPY), "record", "-p", str(gw.pid), "-d", str(int(args.seconds)), "-r", "250",
                           "--nonblocking"]
                    subprocess.run([*spy, "-f", "speedscope", "-o", str(speedscope)], check=True,
                                   capture_output=True)
                    subprocess.run([*spy, "-o", str(args.out / f"profile-{name}.svg")], check=True,
                                   capture_output=True)
                    top = [{"pct": round(p, 1), "function": f} for p, f in top_functions(speedscope)]
                    print(json.dumps({"case": "on-CPU samples, share with the function on the stack",
                                      "top": top}), flush=True)
                finally:
                    gw.send_signal(signal.SIGTERM)
                    try:
                        gw.wait(20)
                    except subprocess.TimeoutExpired:
                        gw.kill()
            period = args.poll_ms / 1000
            floor = floor_client(port, args.devices, args.registers, period, args.seconds)
            print(json.dumps({"case": f"bare pymodbus client {name}", **floor}), flush=True)
        finally:
            sim.terminate()
            sim.wait(10)


if __name__ == "__main__":
    main()
