"""How long a remote config change takes, and how long devices go unread (docs/commands.md, section 7).

A real Mosquitto on a free port, a real gateway process (``edugate run``) with one synthetic device read every
20 ms, and central's side in this process (signs and publishes commands, subscribes to everything). For each
run, ``config.apply`` of a valid file (kept) and of a file whose uplink points at a port with no broker
(``deadline_s`` 2, rolled back). Measured per run: command -> its cmd-result, command -> the outcome event
(``config.applied`` / ``config.rolled_back``), and the longest gap between two consecutive readings of the
device (the time it was not read while the gateway restarted, once or twice). Medians over the runs.

    .venv/bin/python bench/remote_change.py [--runs 5]     # prints JSON, writes bench/results/remote_change.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import yaml

from edugate.central.command_tools import write_keypair
from edugate.contract.commands import load_private_key, sign_command
from edugate.simulators.servers import Mosquitto

REPO = Path(__file__).resolve().parents[1]
SCHOOL, GATEWAY = "bench-school", "gw-bench"


class Central:
    """Signs and sends commands; keeps every cmd-result, event and reading timestamp."""

    def __init__(self, port: int, key: Path) -> None:
        self.key = load_private_key(key)
        self.cond = threading.Condition()
        self.results: dict[str, tuple[float, dict[str, Any]]] = {}
        self.events: list[tuple[float, dict[str, Any]]] = []
        self.ticks: list[int] = []  # ts (ms) of every reading of the device
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-central", clean_session=False)
        self.client.on_message = self._on_message
        subscribed = threading.Event()
        self.client.on_subscribe = lambda *_: subscribed.set()
        self.client.on_connect = lambda c, *_: c.subscribe("edu/v1/#", qos=1)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert subscribed.wait(10)

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        now = time.monotonic()
        kind = msg.topic.rsplit("/", 1)[-1]
        if "/cmd/" in msg.topic or kind == "state" or not msg.payload:
            return
        doc = json.loads(msg.payload)
        with self.cond:
            if kind == "cmd-result":
                self.results[doc["id"]] = (now, doc)
            elif kind == "event":
                self.events += [(now, r) for r in doc]
            elif kind == "telemetry":
                self.ticks += [r["ts"] for r in doc if r["device"] == "tick"]
            self.cond.notify_all()

    def send(self, name: str, args: dict[str, Any]) -> tuple[float, str]:
        env = sign_command(self.key, school=SCHOOL, gateway=GATEWAY, name=name, args=args, ttl_s=60)
        sent = time.monotonic()
        self.client.publish(f"edu/v1/{SCHOOL}/{GATEWAY}/cmd/{name}", json.dumps(env), qos=1)
        return sent, env["id"]

    def wait(self, what: str, condition: Any, timeout: float = 60) -> Any:
        with self.cond:
            if not self.cond.wait_for(condition, timeout):
                raise SystemExit(f"timed out waiting for {what}")
            return condition()

    def event(self, event_type: str, cmd_id: str) -> float | None:
        return next((t for t, r in self.events if r["type"] == event_type and r["data"].get("cmd_id") == cmd_id), None)

    def ready(self) -> None:
        for _ in range(100):
            _, cmd_id = self.send("ping", {})
            try:
                self.wait("ping", lambda cmd_id=cmd_id: cmd_id in self.results, timeout=0.5)
                return
            except SystemExit:
                continue
        raise SystemExit("the gateway does not answer")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def max_gap_s(ticks: list[int], since_ms: int) -> float:
    after = sorted(t for t in set(ticks) if t >= since_ms)
    return max((b - a for a, b in itertools.pairwise(after)), default=0) / 1000


def change(central: Central, config_path: Path, new: dict[str, Any], outcome: str, deadline_s: float) -> dict:
    since_ms = int(time.time() * 1000)
    sent, cmd_id = central.send("config.apply", {"yaml": yaml.safe_dump(new), "deadline_s": deadline_s})
    answered = central.wait("cmd-result", lambda: central.results.get(cmd_id))[0]
    done = central.wait(outcome, lambda: central.event(outcome, cmd_id))
    time.sleep(1.0)  # readings after the restart arrive; the gap is over
    central.ready()
    return {"result_s": round(answered - sent, 3), "outcome_s": round(done - sent, 3),
            "max_reading_gap_s": round(max_gap_s(central.ticks, since_ms), 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "remote_change.json")
    opts = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        broker = Mosquitto(work / "mosquitto")
        broker.start()
        private, public, _ = write_keypair(work / "central-cmd")
        config = {"school": SCHOOL, "gateway": GATEWAY,
                  "uplink": {"host": "127.0.0.1", "port": broker.port, "reconnect_max_s": 0.2},
                  "storage": {"path": str(work / "outbox.sqlite")}, "privacy": {"secret_file": str(work / "k")},
                  "downlink": {"enabled": True, "public_keys": [str(public)]},
                  "devices": [{"id": "tick", "driver": "synthetic", "interval_s": 0.02, "values": 0}]}
        config_path = work / "gateway.yaml"
        config_path.write_text(yaml.safe_dump(config))
        with (work / "gateway.log").open("wb") as log:
            gw = subprocess.Popen([sys.executable, "-m", "edugate.cli", "run", str(config_path)], stdout=log,
                                  stderr=subprocess.STDOUT, cwd=work)
        central = Central(broker.port, private)
        try:
            central.ready()
            applied, rolled = [], []
            for i in range(opts.runs):
                config["devices"][0]["values"] = (i + 1) % 2  # a valid change each time
                applied.append(change(central, config_path, config, "config.applied", 30))
                broken = json.loads(json.dumps(config))
                broken["uplink"]["port"] = free_port()
                rolled.append(change(central, config_path, broken, "config.rolled_back", 2))
        finally:
            gw.send_signal(signal.SIGTERM)
            gw.wait(30)
            central.client.loop_stop()
            broker.stop()

    def median(rows: list[dict], key: str) -> float:
        return round(statistics.median(r[key] for r in rows), 3)

    report = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": platform.platform(),
              "cpus": os.cpu_count(), "runs": opts.runs,
              "apply_kept": {k: median(applied, k) for k in applied[0]} | {"each": applied},
              "apply_rolled_back_deadline_2s": {k: median(rolled, k) for k in rolled[0]} | {"each": rolled}}
    opts.out.parent.mkdir(parents=True, exist_ok=True)
    opts.out.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
