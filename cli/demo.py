"""``edugate demo``: a simulated school through the real gateway, broker and store.

Starts, on free loopback ports and in one scratch folder: a Mosquitto broker, a
VictoriaMetrics store, the Modbus simulators the demo school's config names,
one central ingest worker and the gateway itself (``cli/demo-school.yaml``,
with its ports rewritten), then shows live what arrives centrally.

The new parts run where their extra is installed, and are left out with one line saying so where it is not:
the on-device models (``[ml]``: the equipment and room simulators of ``ml_models/*/data.py`` played into two
Modbus units, one simulated minute per poll, and the ``models`` stage scoring them), a room of BLE probes
(``[ble]``: ``edugate.simulators.ble_probes --serve`` in its own process, heard by the gateway through
``EDUGATE_BLE_BACKEND``), and a micro:bit-style kit (the reference node firmware on a pseudo-terminal; the
kit link needs only the ``[gateway]`` extra).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from edugate.central.api.demo import DemoOperationsCentre
from edugate.central.command_tools import Broker, send_envelope, write_keypair
from edugate.cli.demo_pages import OTHER_SCHOOLS, DemoPages
from edugate.common.privacy import Pseudonymizer, load_or_create_key
from edugate.contract.commands import load_private_key, sign_command
from edugate.gateway.config import load_config
from edugate.simulators.classroom_demo import start_classrooms
from edugate.simulators.kit_node import KitNodeProcess
from edugate.simulators.library_demo import start_library
from edugate.simulators.modbus import ModbusSimulator, SimulatorThread
from edugate.simulators.servers import Mosquitto, VictoriaMetrics, free_port
from edugate.simulators.students import ReaderKind, StudentFlow

if TYPE_CHECKING:
    import numpy as np

DEMO_CONFIG = Path(__file__).resolve().parent / "demo-school.yaml"
DEMO_CAMERA_VIDEO = Path("/usr/share/doc/opencv-doc/examples/data/vtest.avi")  # the camera simulator's video
# What the model stage scores in the demo (added to the gateway's config only where the [ml] extra is installed:
# without the stage, a `models` section would be an unknown key)
DEMO_MODELS: dict[str, Any] = {"anomaly": [{"device": "lab2-fridge", "kind": "fridge"}],
                               "occupancy": [{"device": "c10a-env"}]}
MODEL_EVENTS = ("anomaly", "occupancy")
BLE_BACKEND = "edugate.simulators.ble_probes:SocketBlueZScanner"


def _missing(*modules: str) -> list[str]:
    """Which of ``modules`` cannot be imported here (without importing them)."""
    return [m for m in modules if importlib.util.find_spec(m) is None]


def fridge_rows() -> np.ndarray:
    """The lab fridge the anomaly model watches (``ml_models/anomaly/data.py``): normal for 40 simulated minutes,
    then its door is left open. Columns: temp, power."""
    import numpy as np

    from edugate.ml_models.anomaly.data import episode

    start = 600  # 10:00
    values: np.ndarray = episode(np.random.default_rng(7), "fridge", "door_open", days=1, start=start).values
    return values[start - 40:]


def classroom_rows() -> np.ndarray:
    """Class 10A's environment (``ml_models/occupancy/data.py``) from 07:35 on: a class comes in a few
    minutes later. Columns: co2, temp, humidity, light."""
    import numpy as np

    from edugate.ml_models.occupancy.data import room

    values: np.ndarray = room(np.random.default_rng(3), 1).values
    return np.concatenate([values[7 * 60 + 35:], values[:7 * 60 + 35]])


FEEDS = {"lab2-fridge": fridge_rows, "c10a-env": classroom_rows}  # device id -> its series, one row a minute


class ModelFeed(threading.Thread):
    """Plays a series into one simulated Modbus unit: each time the gateway has polled the unit, the next row
    (one simulated minute per poll, so the models' windows fill in seconds)."""

    def __init__(self, sim: ModbusSimulator, unit: int, names: list[str], rows: np.ndarray) -> None:
        super().__init__(name=f"demo-feed-{unit}", daemon=True)
        self.sim, self.unit, self.names, self.rows = sim, unit, names, rows
        self.stopping = threading.Event()
        self.played = 0
        self._put(0)

    def _put(self, i: int) -> None:
        for name, value in zip(self.names, self.rows[i % len(self.rows)], strict=True):
            self.sim.set_value(self.unit, name, float(value))

    def run(self) -> None:
        seen = self.sim.unit(self.unit).request_count
        while not self.stopping.wait(0.02):
            count = self.sim.unit(self.unit).request_count
            if count != seen:  # counted as the request arrives: let its answer go out before the next row
                if self.stopping.wait(0.2):
                    break
                seen = self.sim.unit(self.unit).request_count
                self.played += 1
                self._put(self.played)

    def stop(self) -> None:
        self.stopping.set()
        self.join(timeout=2)


@dataclass
class DemoSchool:
    """Every process of the demo; ``start()`` then ``stop()`` (or use as a context manager)."""

    workdir: Path
    config_path: Path = DEMO_CONFIG
    broker: Mosquitto = field(init=False)
    store: VictoriaMetrics = field(init=False)
    simulators: list[SimulatorThread] = field(default_factory=list)
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)
    gateway_config: Path = field(init=False)
    students: StudentFlow | None = None
    library_processes: list[str] = field(default_factory=list)
    classroom_processes: list[str] = field(default_factory=list)
    feeds: list[ModelFeed] = field(default_factory=list)
    kit: KitNodeProcess | None = None
    notes: list[str] = field(default_factory=list)  # what runs, and what is left out for a missing extra
    ble_dir: Path | None = None

    def __post_init__(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.broker = Mosquitto(self.workdir / "mosquitto")
        self.store = VictoriaMetrics(self.workdir / "victoria-metrics")
        self.gateway_config = self.workdir / "gateway.yaml"
        self.pages = DemoPages(self.workdir)  # web pages: gateway, other schools, central (gateway/web/demo.py)
        self.ioc: DemoOperationsCentre | None = None  # central's open API and reports (issue 21)

    def start(self) -> None:
        self.broker.start()
        self.store.start()
        raw = yaml.safe_load(self.config_path.read_text())
        self.school = raw["school"]
        self.gateway_id = raw["gateway"]
        port_map = self._start_simulators(raw)
        raw["uplink"]["port"] = self.broker.port
        raw["storage"]["path"] = str(self.workdir / "outbox.sqlite")
        raw["privacy"] = {**raw.get("privacy", {}), "secret_file": str(self.workdir / "school.key")}  # keeps the rule
        self.pseudonym = Pseudonymizer(load_or_create_key(self.workdir / "school.key"))
        self.central_key, public_key, _ = write_keypair(self.workdir / "central-cmd", force=True)
        raw["downlink"] = {"enabled": True, "public_keys": [str(public_key)]}
        self._start_students(raw)
        self.library_processes = start_library(raw, self.workdir, self._spawn)
        self.classroom_processes = start_classrooms(raw, self.workdir, self._spawn)  # boards, projectors (issue 16)
        for dev in raw["devices"]:
            if dev.get("driver") == "modbus" and dev.get("transport", "tcp") == "tcp":
                dev["port"] = port_map[(dev["host"], dev["port"])]
        gateway_env = self._start_lab(raw)
        self.pages.configure_gateway(raw)
        self.gateway_config.write_text(yaml.safe_dump(raw, sort_keys=False))
        load_config(self.gateway_config)  # fail here, clearly, if the rewrite broke anything
        self._spawn("ingest", [sys.executable, "-m", "edugate.central.cli_ingest", "--client-id", "demo-ingest-1",
                               "--broker", self.broker.url, "--store-url", self.store.url,
                               "--events-db", str(self.workdir / "central-events.sqlite")])
        self._spawn("gateway", [sys.executable, "-m", "edugate.cli", "run", str(self.gateway_config)],
                    env=gateway_env)
        self.ioc = DemoOperationsCentre(
            self.workdir / "central-ioc", self.store.url, self.workdir / "central-events.sqlite",
            {self.school: raw.get("district", "unassigned"), **{s: d for s, (d, _) in OTHER_SCHOOLS.items()}},
            float(raw["uplink"].get("health_interval_s", 30)))
        central_yaml = self.ioc.configure()  # central's pages read its event store too (the Equipment page)
        for name, argv in self.pages.processes(self.broker.port, self.broker.url, self.store.url,
                                               central_yaml).items():
            self._spawn(name, argv)
        self._spawn("central-api", self.ioc.argv())

    def _start_simulators(self, raw: dict[str, Any]) -> dict[tuple[str, int], int]:
        endpoints: dict[tuple[str, int], dict[int, str]] = defaultdict(dict)
        fed: dict[tuple[str, int], dict[int, dict[str, Any]]] = defaultdict(dict)  # units the models' data feeds
        can_feed = not _missing("numpy")
        for dev in raw["devices"]:
            if dev.get("driver") == "modbus" and dev.get("transport", "tcp") == "tcp":
                endpoints[(dev["host"], dev["port"])][dev["unit"]] = self._profile_of(dev)
                if can_feed and dev["id"] in FEEDS:
                    fed[(dev["host"], dev["port"])][dev["unit"]] = dev
        port_map = {}
        for (host, port), units in endpoints.items():
            sim = ModbusSimulator(units, host="127.0.0.1", port=free_port(), day_s=600, update_interval_s=1,
                                  drift=not fed.get((host, port)))  # a fed unit keeps exactly the values it is given
            for unit, dev in fed.get((host, port), {}).items():
                self.feeds.append(ModelFeed(sim, unit, [r["name"] for r in dev["registers"]], FEEDS[dev["id"]]()))
            thread = SimulatorThread(sim)
            thread.start()
            self.simulators.append(thread)
            port_map[(host, port)] = sim.port
        for feed in self.feeds:
            feed.start()
        return port_map

    def _profile_of(self, dev: dict[str, Any]) -> str:
        """The profile the simulator serves for a Modbus device: its name, or a file of its inline registers."""
        if "profile" in dev:
            return str(dev["profile"])
        path = self.workdir / "profiles" / f"{dev['id']}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump({"description": f"{dev['id']} (inline registers of the demo config)",
                                        "registers": dev["registers"]}, sort_keys=False))
        return str(path)

    def _start_lab(self, raw: dict[str, Any]) -> dict[str, str]:
        """The models, the BLE probes and the kit, each where its extra is installed; the gateway's environment."""
        env = dict(os.environ)
        if missing := _missing("numpy", "onnxruntime"):
            self.notes.append(f"on-device models left out: the [ml] extra is not installed (no {', '.join(missing)}; "
                              "pip install 'edugate[ml]'); their devices still report simulated readings")
        else:
            raw["models"] = DEMO_MODELS
            self.notes.append("on-device models: anomaly (lab2-fridge, its door left open after 40 simulated "
                              "minutes) and occupancy (c10a-env), one simulated minute per second")
            if not _missing("cv2") and DEMO_CAMERA_VIDEO.is_file():  # a camera counting people (issue 14)
                raw["devices"].append({"id": "c10a-cam", "driver": "camera", "room": "class-10a",
                                       "source": str(DEMO_CAMERA_VIDEO), "sample_every_s": 2, "interval_s": 10})
                self.notes.append("camera c10a-cam: people counted in memory in Debian's pedestrian video "
                                  "(opencv-doc), one frame every 2 s; only the count leaves the gateway")
        probes = [d for d in raw["devices"] if d.get("driver") == "ble"]
        if probes and (missing := _missing("bleak", "bthome_ble")):
            raw["devices"] = [d for d in raw["devices"] if d.get("driver") != "ble"]
            self.notes.append(f"BLE probes left out ({', '.join(d['id'] for d in probes)}): the [ble] extra is not "
                              f"installed (no {', '.join(missing)}; pip install 'edugate[ble]')")
        elif probes:
            # a short folder: a Unix socket's path has at most 107 bytes
            self.ble_dir = Path(tempfile.mkdtemp(prefix="edugate-ble-"))
            air = self.ble_dir / "air.sock"
            self._spawn("ble-air", [sys.executable, "-m", "edugate.simulators.ble_probes", "--serve", str(air),
                                    "--others", "2"])
            env.update(EDUGATE_BLE_BACKEND=BLE_BACKEND, EDUGATE_BLE_AIR=str(air))
            deadline = time.time() + 20
            while not air.exists() and time.time() < deadline:  # the gateway retries anyway: only a head start
                self.check_processes()
                time.sleep(0.1)
            self.notes.append(f"BLE probes: {len(probes)} in a simulated lab (edugate.simulators.ble_probes) on {air}")
        for dev in raw["devices"]:
            if dev.get("driver") == "kit" and self.kit is None:
                dev["port"] = str(self.workdir / f"tty-{dev['id']}")
                self.kit = KitNodeProcess(dev["port"], self.workdir / "kit-state", node_id=f"demo-{dev['id']}",
                                          board="microbit-v2", firmware="1.0.0", interval_ms=1000)
                self.kit.start()
                self.notes.append(f"lab kit {dev['id']}: the reference micro:bit firmware on a pseudo-terminal")
        return env

    def _start_students(self, raw: dict[str, Any]) -> None:
        """Simulated readers at the config's card reader entries, and students tapping at them."""
        readers: dict[str, tuple[ReaderKind, str | Path]] = {}
        wedges: dict[str, dict[str, Any]] = {}
        for dev in raw["devices"]:
            serial_wedge = dev.get("driver") == "wedge" and dev.get("source") == "serial"
            if dev.get("driver") in ("em4100", "pn532") or serial_wedge:
                dev["port"] = str(self.workdir / f"tty-{dev['id']}")
                readers[dev["id"]] = (dev["driver"], dev["port"])
                if serial_wedge:
                    wedges[dev["id"]] = dev
        if readers:
            self.students = StudentFlow(readers, StudentFlow.make_cards(40), every_s=1.0, wedges=wedges)
            self.students.start()

    def push_allowlist(self) -> dict[str, Any]:
        """Central allows every second student into the labs (a signed command, as central would send it)."""
        allowed = [self.pseudonym(card) for card in StudentFlow.make_cards(40)[::2]]
        envelope = sign_command(load_private_key(self.central_key), school=self.school, gateway=self.gateway_id,
                                name="access.allowlist.set", args={"version": int(time.time()),
                                                                   "lists": {"lab-1": allowed}}, ttl_s=300)
        return send_envelope(envelope, Broker(self.broker.host, self.broker.port), timeout=3) or {}

    def push_allowlist_when_online(self, within_s: float = 30) -> dict[str, Any]:
        deadline = time.time() + within_s
        answer: dict[str, Any] = {}
        while time.time() < deadline:
            self.check_processes()
            answer = self.push_allowlist()
            if answer.get("status") == "ok":
                break
            time.sleep(0.5)
        return answer

    def _spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        log = (self.workdir / f"{name}.log").open("ab")
        self.processes[name] = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env)
        log.close()

    def check_processes(self) -> None:
        for name, proc in self.processes.items():
            if proc.poll() is not None:
                tail = (self.workdir / f"{name}.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"the demo's {name} exited with code {proc.returncode}:\n{tail}")

    def stop(self) -> None:
        self.pages.stop(self.processes)
        for name in ("gateway", "ingest", *self.library_processes, *self.classroom_processes, "ble-air",
                     "central-api"):
            proc = self.processes.get(name)
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
        if self.students is not None:
            self.students.stop()
        if self.kit is not None:
            self.kit.close()
        if self.ble_dir is not None:
            shutil.rmtree(self.ble_dir, ignore_errors=True)
        for feed in self.feeds:
            feed.stop()
        for thread in self.simulators:
            thread.stop()
        self.store.stop()
        self.broker.stop()

    def __enter__(self) -> DemoSchool:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ what central sees

    def query(self, promql: str) -> list[dict[str, Any]]:
        url = f"{self.store.url}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        with urllib.request.urlopen(url, timeout=5) as resp:
            return json.loads(resp.read())["data"]["result"]

    def central_view(self) -> tuple[dict[str, dict[str, Any]], dict[str, float], dict[str, float]]:
        """(latest values per device, stored samples per device over the last hour, gateways online)."""
        latest: dict[str, dict[str, Any]] = defaultdict(dict)
        for series in self.query(f'{{__name__=~"edugate_.+",school="{self.school}",device!="_gateway"}}'):
            metric = series["metric"]
            name = metric["__name__"].removeprefix("edugate_")
            if name.startswith("event_") or name in ("gateway_online", "device_online"):
                continue
            latest[metric["device"]][name] = float(series["value"][1])
            latest[metric["device"]]["_room"] = metric.get("room", "")
        counts = {s["metric"]["device"]: float(s["value"][1]) for s in self.query(
            f'sum by (device) (count_over_time({{__name__=~"edugate_.+",school="{self.school}",device!=""}}[1h]))')
            if "device" in s["metric"]}
        online = {s["metric"]["gateway"]: float(s["value"][1]) for s in self.query(
            f'edugate_gateway_online{{school="{self.school}"}}')}
        return latest, counts, online

    def library(self) -> dict[str, float]:
        """The library's last hour as central sees it: visitors, loans, returns, gate alarms."""
        out: dict[str, float] = {}
        for name in ("visitors_in", "visitors_out"):
            for s in self.query(f'sum(sum_over_time(edugate_{name}{{school="{self.school}"}}[1h]))'):
                out[name] = float(s["value"][1])
        for s in self.query(f'sum by (type) (count_over_time(edugate_event_count{{school="{self.school}",'
                            f'type=~"library_loan|library_return|gate_alarm"}}[1h]))'):
            out[s["metric"]["type"].removeprefix("library_")] = float(s["value"][1])
        return out

    def events(self, types: tuple[str, ...] = (*MODEL_EVENTS, "kit_hello")) -> dict[str, float]:
        """Events of ``types`` stored centrally in the last hour, as ``type/device`` -> count."""
        out: dict[str, float] = {}
        for s in self.query(f'sum by (type, device) (count_over_time(edugate_event_count{{school="{self.school}",'
                            f'type=~"{"|".join(types)}"}}[1h]))'):
            out[f"{s['metric'].get('type', '?')}/{s['metric'].get('device', '?')}"] = float(s["value"][1])
        return out

    def taps(self) -> dict[str, float]:
        """Card taps stored centrally in the last hour, by reader role and door decision."""
        out: dict[str, float] = {}
        for s in self.query(f'sum by (role, decision) (count_over_time(edugate_event_count'
                            f'{{school="{self.school}",type="card_tap"}}[1h]))'):
            m = s["metric"]
            out[m.get("role", "?") + (f"/{m['decision']}" if "decision" in m else "")] = float(s["value"][1])
        return out


def _render(demo: DemoSchool, started: float) -> Group:
    try:
        latest, counts, online = demo.central_view()
    except OSError as exc:
        return Group(Text(f"store not answering: {exc}", style="red"))
    table = Table(title=f"What central has received from {demo.school} (VictoriaMetrics {demo.store.url})",
                  expand=False)
    for col in ("device", "room", "latest values", "samples (1 h)"):
        table.add_column(col)
    for device in sorted(latest):
        values = {k: v for k, v in latest[device].items() if not k.startswith("_")}
        text = ", ".join(f"{k}={v:g}" for k, v in sorted(values.items()))
        table.add_row(device, latest[device]["_room"], text, f"{counts.get(device, 0):.0f}")
    gw = ", ".join(f"{name}: {'online' if v else 'OFFLINE'}" for name, v in sorted(online.items())) or "none yet"
    taps = ", ".join(f"{k} {v:.0f}" for k, v in sorted(demo.taps().items())) or "none yet"
    return Group(
        Text(f"gateways: {gw}    running for {time.time() - started:.0f} s    (Ctrl-C to stop)"),
        table,
        Text(f"card taps stored centrally (last hour, as pseudonyms): {taps}"),
        Text("library (last hour): " + (", ".join(f"{k} {v:.0f}" for k, v in sorted(demo.library().items()))
                                        or "nothing yet")),
        Text("model and kit events (last hour): " + (", ".join(f"{k} {v:.0f}" for k, v in sorted(
            demo.events().items())) or "nothing yet")),
        Text(f"broker {demo.broker.url}   store UI {demo.store.url}/vmui   logs {demo.workdir}", style="dim"),
    )


@contextlib.contextmanager
def _workdir(path: Path | None) -> Iterator[Path]:
    if path is not None:
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="edugate-demo-") as tmp:
        yield Path(tmp)


def run_demo(duration: float | None, workdir: Path | None, refresh_s: float = 2.0) -> int:
    console = Console()
    with _workdir(workdir) as wd:
        demo = DemoSchool(wd)
        console.print(f"[bold]EduGate demo[/]: starting broker, store, simulators, ingest and gateway in {wd}")
        try:
            demo.start()
            for note in demo.notes:
                console.print(note, markup=False)
            console.print(demo.pages.banner())
            if demo.ioc is not None:
                console.print(demo.ioc.banner(), markup=True, highlight=False)
            started = time.time()
            answer = demo.push_allowlist_when_online()
            console.print(f"central pushed the lab door's allow-list (signed command): {answer.get('status')}")
            with Live(_render(demo, started), console=console, refresh_per_second=1, auto_refresh=False) as live:
                while duration is None or time.time() - started < duration:
                    time.sleep(refresh_s)
                    demo.check_processes()
                    live.update(_render(demo, started), refresh=True)
        except KeyboardInterrupt:
            console.print("stopping")
        except RuntimeError as exc:
            console.print(f"[red]{exc}[/]")
            return 1
        finally:
            if demo.ioc is not None and demo.store.running:
                console.print(demo.ioc.report_note(kept=workdir is not None), markup=False)
            demo.stop()
    return 0
