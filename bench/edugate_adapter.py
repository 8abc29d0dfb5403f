"""EduGate adapter for the shared gateway benchmark harness (/work/shared/bench).

    cd /work/shared/bench
    /tmp/bench-venv/bin/python bench.py w1 --gateway /work/main/bench/edugate_adapter.py \
        --devices 100 --registers 10 --poll-ms 1000 --out /work/main/bench/results/edugate
    BENCH_OUT=/work/main/bench/results/edugate bash run_suite.sh /work/main/bench/edugate_adapter.py idle w1

It implements the harness's adapter contract (``gateways/__init__.py`` there):
``prepare()`` writes one EduGate YAML config for a workload, ``command()``
starts ``edugate run`` in the foreground (the PID the harness samples is the
gateway's own Python process), and the counter reads our telemetry topic in
its ``flat`` format (our payload is a JSON array of ``{"seq", "kind",
"device", "ts", "synced", "values"}`` records; the counter uses ``device``,
``ts`` and ``values``).

How the harness options map to EduGate:

* ``storage`` (memory | file | sqlite, ThingsBoard's buffer types): EduGate
  has one storage, the durable SQLite (WAL) outbox with ``sync: full``
  (fsync on every group commit), and it is used for every value of
  ``storage``. The value only ends up in the result's label.
* ``layout`` (per-register | block): EduGate's driver plans its reads from the
  register map and always merges contiguous registers of one function into
  one range read (``drivers.modbus_codec.plan_reads``); it has no option to
  force one request per register. Both layouts therefore give the same config:
  ``seq`` at 0 and ``r1``..``r{R-1}`` at 1..R-1 are read with one request of
  R registers per poll (ThingsBoard: R requests per-register, 2 in block).
* Every device has the same host:port, so all of them share one Modbus TCP
  connection (``tcp_connections: 1``, the default), like ThingsBoard's.
* ``_gateway`` health records (about 30 values every 30 s) go to the same
  telemetry topic and are counted by the counter as datapoints (about
  +1 dp/s); they carry no ``seq`` and do not affect the loss figures.
* Idle run: the harness's idle command detects "MQTT session ready" from the
  ThingsBoard session-limits handshake (it waits for ``tb_stub.py`` to log an
  answer). EduGate has no such handshake; its session-ready signal is the
  retained ``online`` birth it publishes on ``.../state`` right after CONNACK.
  So ``needs_tb_stub`` is true and, for the idle workload only, ``prepare()``
  starts a tiny bridge thread in the harness process that subscribes to our
  state topic and, when the birth arrives, sends one ``getSessionLimits``
  request for the stub to answer. That adds one broker round trip to our
  measured connect time, nothing to the gateway's CPU or RSS.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import threading
from pathlib import Path
from typing import ClassVar

REPO = Path(__file__).resolve().parents[1]
VENV = Path(os.environ.get("EDUGATE_VENV", REPO / ".venv"))
SCHOOL = "bench"
GATEWAY = "gw1"
STATE_TOPIC = f"edu/v1/{SCHOOL}/{GATEWAY}/state"


def device_name(unit: int) -> str:
    return f"lab-{unit:03d}"


def _registers(count: int) -> list[dict]:
    regs = [{"name": "seq", "address": 0, "type": "uint16"}]
    regs += [{"name": f"r{i}", "address": i, "type": "uint16", "scale": 0.1} for i in range(1, count)]
    return regs


def _birth_bridge(host: str, port: int, timeout_s: float = 180.0) -> None:
    """Idle run only: turn our retained 'online' birth into the getSessionLimits request the harness waits for."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    done = threading.Event()

    def on_connect(client, userdata, flags, reason_code, properties) -> None:
        if not reason_code.is_failure:
            client.subscribe(STATE_TOPIC, qos=1)

    def on_message(client, userdata, message) -> None:
        try:
            doc = json.loads(message.payload)
        except ValueError:
            return
        if isinstance(doc, dict) and doc.get("status") == "online" and not done.is_set():
            done.set()
            client.publish("v1/devices/me/rpc/request/1",
                           json.dumps({"method": "getSessionLimits", "params": {},
                                       "note": "edugate birth seen on " + STATE_TOPIC}), qos=1)

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-edugate-birth-bridge",
                         protocol=mqtt.MQTTv311)
    client.on_connect = on_connect
    client.on_message = on_message
    client.reconnect_delay_set(0.1, 0.5)
    client.connect_async(host, port, keepalive=30)
    client.loop_start()
    done.wait(timeout_s)
    threading.Event().wait(2.0)  # let the request go out
    client.loop_stop()
    client.disconnect()


class Adapter:
    name = "edugate"
    needs_tb_stub = True  # only to answer the idle run's readiness probe (see the module docstring)
    telemetry_topics: ClassVar[list[str]] = [f"edu/v1/{SCHOOL}/{GATEWAY}/telemetry"]
    payload_format = "flat"

    @staticmethod
    def device_name(unit: int) -> str:
        return device_name(unit)

    def versions(self) -> dict:
        code = ("import json, importlib.metadata as m, platform\n"
                "names = ['edugate', 'pymodbus', 'aiomqtt', 'paho-mqtt', 'orjson', 'pydantic']\n"
                "out = {}\n"
                "for n in names:\n"
                "    try: out[n] = m.version(n)\n"
                "    except m.PackageNotFoundError: out[n] = ''\n"
                "import sqlite3\n"
                "out['sqlite'] = sqlite3.sqlite_version\n"
                "out['python'] = platform.python_version()\n"
                "print(json.dumps(out))")
        result = subprocess.run([str(VENV / "bin" / "python"), "-c", code], capture_output=True, text=True,
                                timeout=60)
        return json.loads(result.stdout) if result.returncode == 0 else {"error": result.stderr[-500:]}

    def config(self, run_dir: Path, spec) -> dict:
        devices = []
        if not spec.empty:
            for unit in range(1, spec.devices + 1):
                devices.append({
                    "id": device_name(unit),
                    "driver": "modbus",
                    "room": "bench-lab",
                    "host": spec.modbus_host,
                    "port": spec.modbus_port,
                    "unit": unit,
                    "registers": _registers(spec.registers),
                    "poll_interval_s": spec.poll_ms / 1000.0,
                })
        return {
            "school": SCHOOL,
            "gateway": GATEWAY,
            "name": f"harness run: storage={spec.storage} layout={spec.layout} (EduGate: SQLite outbox, "
                    "range reads in both layouts)",
            "uplink": {"host": spec.mqtt_host, "port": spec.mqtt_port},
            "storage": {"path": str(run_dir / "edugate-data" / "outbox.sqlite"), "sync": "full"},
            "privacy": {"secret_file": str(run_dir / "edugate-data" / "school.key")},
            "devices": devices,
        }

    def prepare(self, run_dir: Path, spec) -> None:
        # JSON is valid YAML, and the harness venv need not have PyYAML.
        (run_dir / "edugate.yaml").write_text(json.dumps(self.config(run_dir, spec), indent=1) + "\n")
        if spec.empty:
            threading.Thread(target=_birth_bridge, args=(spec.mqtt_host, spec.mqtt_port), daemon=True,
                             name="edugate-birth-bridge").start()

    def command(self, run_dir: Path) -> tuple[list[str], Path, dict]:
        argv = [str(VENV / "bin" / "edugate"), "run", str(run_dir / "edugate.yaml")]
        return argv, run_dir, {}

    def log_summary(self, run_dir: Path) -> dict:
        counts: dict[str, int] = {}
        samples: dict[str, str] = {}
        finals: list[dict] = []
        pattern = re.compile(r" (ERROR|WARNING|CRITICAL) ")
        path = run_dir / "gateway.log"
        if path.exists():
            for line in path.read_text(errors="replace").splitlines():
                match = pattern.search(line)
                if match:
                    key = f"gateway.log:{match.group(1)}"
                    counts[key] = counts.get(key, 0) + 1
                    samples.setdefault(key, line[:300])
                if "gateway stopped: " in line:
                    try:
                        finals.append(json.loads(line.split("gateway stopped: ", 1)[1]))
                    except ValueError:
                        pass
        return {"counts": counts, "first_lines": samples, "final_stats": finals}
