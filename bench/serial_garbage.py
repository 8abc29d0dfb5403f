"""Garbage on the serial lines of a running gateway: its memory, CPU and journal while a desk reader in serial
mode (``wedge``, ``source: serial``) and a lab kit (``kit``) receive nothing but noise.

    .venv/bin/python bench/serial_garbage.py --mode random --seconds 60

Starts a private Mosquitto and ``edugate run`` with the two devices on pseudo-terminals, writes ``--mode`` bytes
(random bytes, printable text without a line end, NUL bytes, or short bad lines) to both as fast as the ptys take
them, and prints the gateway's RSS at the start and the end, the bytes sent, and the journal's lines per minute.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import tty
from pathlib import Path

import yaml

from edugate.simulators.servers import Mosquitto

CHUNKS = {"random": lambda rng: rng.randbytes(4096), "noeol": lambda rng: b"A" * 4096,
          "nul": lambda rng: b"\0" * 4096, "lines": lambda rng: b"\xff\r\n" * 1365}


def _pty(folder: Path, name: str) -> int:
    master, slave = os.openpty()
    tty.setraw(slave)
    (folder / name).symlink_to(os.ttyname(slave))
    os.set_blocking(master, False)
    return master


def _rss_kib(pid: int) -> int:
    line = next(x for x in Path(f"/proc/{pid}/status").read_text().splitlines() if x.startswith("VmRSS"))
    return int(line.split()[1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mode", choices=sorted(CHUNKS), default="random")
    parser.add_argument("--seconds", type=float, default=60.0)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="edugate-garbage-"))
    broker = Mosquitto(work / "mosquitto")
    broker.start()
    masters = [_pty(work, "ttyDESK"), _pty(work, "ttyKIT")]
    cfg = {"school": "bench", "gateway": "gw", "uplink": {"port": broker.port},
           "storage": {"path": str(work / "outbox.sqlite")}, "privacy": {"secret_file": str(work / "school.key")},
           "devices": [{"id": "desk", "driver": "wedge", "source": "serial", "port": str(work / "ttyDESK"),
                        "room": "library", "role": "library"},
                       {"id": "kit", "driver": "kit", "port": str(work / "ttyKIT"), "room": "lab"}]}
    (work / "gateway.yaml").write_text(yaml.safe_dump(cfg))
    log_path = work / "gateway.log"
    with log_path.open("wb") as log:
        gw = subprocess.Popen([sys.executable, "-m", "edugate.cli", "run", str(work / "gateway.yaml")], stdout=log,
                              stderr=subprocess.STDOUT)
    try:
        time.sleep(4)  # started, ports open
        start_rss = _rss_kib(gw.pid)
        lines_before = log_path.read_bytes().count(b"\n")
        rng, sent, began = random.Random(1), 0, time.monotonic()
        while time.monotonic() - began < args.seconds:
            chunk = CHUNKS[args.mode](rng)
            for fd in masters:
                try:
                    sent += os.write(fd, chunk)
                except BlockingIOError:
                    pass
            time.sleep(0.002)
        minutes = (time.monotonic() - began) / 60
        lines = log_path.read_bytes().count(b"\n") - lines_before
        alive = gw.poll() is None
        print(f"mode {args.mode}, {args.seconds:g} s: {sent / 1e6:.1f} MB sent; gateway alive: {alive}; "
              f"RSS {start_rss / 1024:.1f} -> {_rss_kib(gw.pid) / 1024:.1f} MiB; journal {lines / minutes:.0f} "
              f"lines/min; log {log_path}")
        return 0 if alive else 1
    finally:
        gw.send_signal(signal.SIGTERM)
        gw.wait(30)
        broker.stop()


if __name__ == "__main__":
    sys.exit(main())
