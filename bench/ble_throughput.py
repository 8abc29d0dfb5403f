"""The BLE path under a busy lab's air: 1 000 advertisements a second, most of them not ours. CPU per advertisement.

    .venv/bin/python bench/ble_throughput.py [--via backend|dbus] [--rate 1000] [--probes 20] [--duration 20]
                                             [--json out.json]

One gateway (in this interpreter, so that its own CPU time is measured) with ``--probes`` BLE
probe entries, its real pipeline, outbox (SQLite WAL) and uplink to a private Mosquitto. A
``simulators.ble_probes.ProbeRoom`` on ``hci0`` advertises: each probe one BTHome packet a second, sent
3 times (the repeats a receiver must count once); a third of the probes encrypted (AES-CCM, bthome-ble
decrypts); the rest of ``--rate`` are phones and headphones (random addresses, manufacturer data), which
the shared scan drops after one dictionary look-up. Every advertisement goes through bleak's own BlueZ
backend code (``_handle_advertising_data``: D-Bus properties -> ``BLEDevice`` / ``AdvertisementData``), as
on a gateway; with ``--via backend`` (the default) only the D-Bus signal itself is missing. With ``--via
dbus`` that is there too: a private ``dbus-daemon`` is the system bus, the simulator plays bluetoothd in
another process (``python -m edugate.simulators.ble_probes --bluez``) and sends the signals BlueZ sends,
and the gateway scans with bleak's unmodified BlueZ backend (dbus-fast unmarshalling, bleak's BlueZ
manager); ``idle`` is then the gateway before the simulated bluetoothd begins to advertise, and no
simulator cost is subtracted (it runs in its own process; its CPU is reported apart).

Measured (process CPU time, ``time.process_time``):

* ``idle``: the same gateway and probes configured, nothing advertised, for ``--duration`` s;
* ``loaded``: the advertisements at ``--rate`` for ``--duration`` s;
* ``simulator``: what building the advertisements costs the simulator alone (subtracted);
* ``scan_only_us``: one advertisement of a stranger through bleak's backend and the shared scan's
  dispatch, timed in a loop (the cost of most of the air);
* ``per_advert_us`` = (loaded - idle - simulator) / advertisements delivered.

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edugate.drivers.ble.scanner import SharedScanner, scanners, use_backend  # noqa: E402
from edugate.gateway.config import parse_config  # noqa: E402
from edugate.gateway.runtime.gateway import Gateway  # noqa: E402
from edugate.simulators.ble_probes import (  # noqa: E402
    BENCH_KEY,
    Probe,
    ProbeRoom,
    SimulatedBlueZScanner,
    bench_probes,
    dbus_path,
)
from edugate.simulators.servers import Mosquitto  # noqa: E402

KEY = BENCH_KEY


def make_probes(n: int) -> list[Probe]:
    return bench_probes(n)


def gateway_config(root: Path, port: int, probes: list[Probe]) -> str:
    devices = "\n".join(
        f"  - {{id: probe-{i:03d}, driver: ble, room: lab, address: '{p.address}'"
        + (f", bind_key: '{KEY.hex()}'" if p.bind_key else "") + "}" for i, p in enumerate(probes))
    return (f"school: bench\ngateway: gw-ble\nuplink: {{port: {port}, health_interval_s: 3600}}\n"
            f"storage: {{path: {root / 'outbox.sqlite'}}}\nprivacy: {{secret_file: {root / 'school.key'}}}\n"
            f"devices:\n{devices}\n")


def simulator_cost(room: ProbeRoom, probes: list[Probe], adverts: int, ours_share: float) -> float:
    """CPU seconds the simulator spends building ``adverts`` advertisements (without delivering them)."""
    rng = random.Random(1)
    t0 = time.process_time()
    for i in range(adverts):
        if rng.random() < ours_share:
            probe = probes[i % len(probes)]
            if i % 3 == 0:
                probe.next_packet(rng)
            room.rng.gauss(probe.rssi, 3)
        else:
            room.crowd_advert()
    return time.process_time() - t0


def scan_only_us(room: ProbeRoom, n: int = 50_000) -> float:
    """Microseconds for one stranger's advertisement: bleak's BlueZ backend + the shared scan's dispatch."""
    shared = SharedScanner("hci9")
    backend = SimulatedBlueZScanner(shared.detected, None, "active", bluez={"adapter": "hci9"})
    props = [room.crowd_advert() for _ in range(1000)]
    paths = [dbus_path("hci9", p["Address"]) for p in props]
    t0 = time.process_time()
    for i in range(n):
        backend._handle_advertising_data(paths[i % 1000], props[i % 1000])
    return (time.process_time() - t0) / n * 1e6


async def run(rate: float, n_probes: int, duration: float) -> dict[str, Any]:
    use_backend(SimulatedBlueZScanner)
    probes = make_probes(n_probes)
    ours_per_s = n_probes * 3.0
    others = max(0.0, rate - ours_per_s)
    with tempfile.TemporaryDirectory() as tmp, Mosquitto(Path(tmp) / "mqtt", persistence=False) as broker:
        root = Path(tmp)
        gw = Gateway(parse_config(gateway_config(root, broker.port, probes)))
        task = asyncio.create_task(gw.run())
        for probe in probes:
            probe.silent = True
        async with ProbeRoom("hci0", probes) as room:
            await asyncio.sleep(2.0)  # idle: the scan runs, nothing advertised
            t0 = time.process_time()
            await asyncio.sleep(duration)
            idle = time.process_time() - t0
            for probe in probes:
                probe.silent = False
            room.others_per_s = others
            await asyncio.sleep(2.0)  # settle: every probe heard
            sent0, wall0, t0 = room.sent, time.monotonic(), time.process_time()
            await asyncio.sleep(duration)
            loaded, wall, sent = time.process_time() - t0, time.monotonic() - wall0, room.sent - sent0
            [scan] = scanners().values()
            stats = scan.stats.as_dict()
        gw.stop()
        await asyncio.wait_for(task, 30)
        counters: dict[str, int] = {}
        for driver in gw.drivers.values():
            for key, value in driver.health.counters.items():
                counters[key] = counters.get(key, 0) + value
        sim = simulator_cost(room, probes, sent, ours_per_s / max(rate, ours_per_s))
        scan_us = scan_only_us(room)
    return {
        "rate_target": rate, "probes": n_probes, "duration_s": duration,
        "delivered": sent, "delivered_per_s": round(sent / wall, 1),
        "ours_per_s": round(ours_per_s, 1), "others_per_s": round(others, 1),
        "cpu_idle_s": round(idle, 3), "cpu_loaded_s": round(loaded, 3), "cpu_simulator_s": round(sim, 3),
        "cpu_percent_ble_path": round(100 * (loaded - idle - sim) / wall, 1),
        "per_advert_us": round((loaded - idle - sim) / sent * 1e6, 1),
        "scan_only_us": round(scan_us, 2),
        "readings": counters.get("readings", 0), "duplicates": counters.get("duplicates", 0),
        "errors": {k: v for k, v in counters.items() if k in ("wrong_key", "garbled", "no_key", "dropped")},
        "scan": stats,
    }


BUS_CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig><type>session</type><listen>unix:path={socket}</listen><auth>EXTERNAL</auth>
  <policy context="default"><allow send_destination="*" eavesdrop="true"/><allow eavesdrop="true"/>
  <allow own="*"/></policy></busconfig>
"""


def start_bus(root: Path) -> tuple[subprocess.Popen[bytes], str]:
    """A private dbus-daemon; its address."""
    (root / "bus.conf").write_text(BUS_CONFIG.format(socket=root / "bus.sock"))
    daemon = subprocess.Popen(["dbus-daemon", "--config-file", str(root / "bus.conf"), "--nofork",
                               "--print-address"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert daemon.stdout is not None
    return daemon, daemon.stdout.readline().decode().strip()


def start_bluetoothd(address: str, n_probes: int, others: float, quiet_s: float) -> subprocess.Popen[bytes]:
    """The simulator playing bluetoothd for the benchmark's probes, in its own process."""
    return subprocess.Popen([sys.executable, "-m", "edugate.simulators.ble_probes", "--bluez", address,
                             "--bench-probes", str(n_probes), "--others", str(others), "--quiet", str(quiet_s)],
                            cwd=REPO, stdout=subprocess.DEVNULL)


async def run_dbus(rate: float, n_probes: int, duration: float) -> dict[str, Any]:
    """The same load through D-Bus: a private dbus-daemon as the system bus, bluetoothd played by the
    simulator in another process (``--bluez``), bleak's real BlueZ backend in the gateway. The gateway's
    CPU now includes unmarshalling every D-Bus signal (dbus-fast) and bleak's BlueZ manager."""
    probes = make_probes(n_probes)
    others = max(0.0, rate - n_probes * 3.0)
    settle = 3.0
    with tempfile.TemporaryDirectory() as tmp, Mosquitto(Path(tmp) / "mqtt", persistence=False) as broker:
        root = Path(tmp)
        daemon, address = start_bus(root)
        os.environ["DBUS_SYSTEM_BUS_ADDRESS"] = address
        use_backend(None)
        sim = start_bluetoothd(address, n_probes, others, quiet_s=settle + duration + 2)
        try:
            await asyncio.sleep(1.0)  # bluetoothd up
            gw = Gateway(parse_config(gateway_config(root, broker.port, probes)))
            task = asyncio.create_task(gw.run())
            sim_ps = psutil.Process(sim.pid)
            await asyncio.sleep(settle)
            t0 = time.process_time()
            await asyncio.sleep(duration)
            idle = time.process_time() - t0
            await asyncio.sleep(2.0 + settle)  # the simulator starts advertising; settle
            [scan] = scanners().values()
            adverts0, wall0, t0 = scan.stats.adverts, time.monotonic(), time.process_time()
            s0 = sum(sim_ps.cpu_times()[:2])
            await asyncio.sleep(duration)
            loaded, wall = time.process_time() - t0, time.monotonic() - wall0
            heard = scan.stats.adverts - adverts0
            sim_cpu = sum(sim_ps.cpu_times()[:2]) - s0
            stats = scan.stats.as_dict()
            gw.stop()
            await asyncio.wait_for(task, 30)
        finally:
            sim.terminate()
            sim.wait(10)
            daemon.terminate()
            daemon.wait(10)
    counters: dict[str, int] = {}
    for driver in gw.drivers.values():
        for key, value in driver.health.counters.items():
            counters[key] = counters.get(key, 0) + value
    return {
        "via": "dbus", "rate_target": rate, "probes": n_probes, "duration_s": duration,
        "heard": heard, "heard_per_s": round(heard / wall, 1),
        "cpu_idle_s": round(idle, 3), "cpu_loaded_s": round(loaded, 3),
        "cpu_percent_ble_path": round(100 * (loaded - idle) / wall, 1),
        "per_advert_us": round((loaded - idle) / max(heard, 1) * 1e6, 1),
        "simulated_bluetoothd_cpu_percent": round(100 * sim_cpu / wall, 1),
        "readings": counters.get("readings", 0), "duplicates": counters.get("duplicates", 0),
        "errors": {k: v for k, v in counters.items() if k in ("wrong_key", "garbled", "no_key", "dropped")},
        "scan": stats,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=float, default=1000.0, help="advertisements per second in all")
    parser.add_argument("--probes", type=int, default=20, help="configured probes (each 3 advertisements/s)")
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--via", choices=["backend", "dbus"], default="backend", help="backend: the room feeds "
                        "bleak's BlueZ backend code in this process; dbus: D-Bus signals from a simulated "
                        "bluetoothd in another process through a private dbus-daemon")
    parser.add_argument("--json", type=Path, help="also write the result here")
    args = parser.parse_args()
    runner = run_dbus if args.via == "dbus" else run
    result = asyncio.run(runner(args.rate, args.probes, args.duration))
    text = json.dumps(result)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
