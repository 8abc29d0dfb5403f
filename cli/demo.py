"""``edugate demo``: a simulated school through the real gateway, broker and store.

Starts, on free loopback ports and in one scratch folder: a Mosquitto broker, a
VictoriaMetrics store, the Modbus simulators the demo school's config names,
one central ingest worker and the gateway itself (``config/demo-school.yaml``,
with its ports rewritten), then shows live what arrives centrally.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from edugate.central.command_tools import Broker, send_envelope, write_keypair
from edugate.cli.demo_pages import DemoPages
from edugate.common.privacy import Pseudonymizer, load_or_create_key
from edugate.contract.commands import load_private_key, sign_command
from edugate.gateway.config import load_config
from edugate.simulators.library_demo import start_library
from edugate.simulators.modbus import ModbusSimulator, SimulatorThread
from edugate.simulators.servers import Mosquitto, VictoriaMetrics, free_port
from edugate.simulators.students import ReaderKind, StudentFlow

DEMO_CONFIG = Path(__file__).resolve().parent / "demo-school.yaml"


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

    def __post_init__(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.broker = Mosquitto(self.workdir / "mosquitto")
        self.store = VictoriaMetrics(self.workdir / "victoria-metrics")
        self.gateway_config = self.workdir / "gateway.yaml"
        self.pages = DemoPages(self.workdir)  # web pages: gateway, other schools, central (gateway/web/demo.py)

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
        for dev in raw["devices"]:
            if dev.get("driver") == "modbus" and dev.get("transport", "tcp") == "tcp":
                dev["port"] = port_map[(dev["host"], dev["port"])]
        self.pages.configure_gateway(raw)
        self.gateway_config.write_text(yaml.safe_dump(raw, sort_keys=False))
        load_config(self.gateway_config)  # fail here, clearly, if the rewrite broke anything
        self._spawn("ingest", [sys.executable, "-m", "edugate.central.cli_ingest", "--client-id", "demo-ingest-1",
                               "--broker", self.broker.url, "--store-url", self.store.url])
        self._spawn("gateway", [sys.executable, "-m", "edugate.cli.main", "run", str(self.gateway_config)])
        for name, argv in self.pages.processes(self.broker.port, self.broker.url, self.store.url).items():
            self._spawn(name, argv)

    def _start_simulators(self, raw: dict[str, Any]) -> dict[tuple[str, int], int]:
        endpoints: dict[tuple[str, int], dict[int, str]] = defaultdict(dict)
        for dev in raw["devices"]:
            if dev.get("driver") == "modbus" and dev.get("transport", "tcp") == "tcp":
                endpoints[(dev["host"], dev["port"])][dev["unit"]] = dev["profile"]
        port_map = {}
        for (host, port), units in endpoints.items():
            sim = ModbusSimulator(units, host="127.0.0.1", port=free_port(), day_s=600, update_interval_s=1)
            thread = SimulatorThread(sim)
            thread.start()
            self.simulators.append(thread)
            port_map[(host, port)] = sim.port
        return port_map

    def _start_students(self, raw: dict[str, Any]) -> None:
        """Simulated readers at the config's card reader entries, and students tapping at them."""
        readers: dict[str, tuple[ReaderKind, str | Path]] = {}
        for dev in raw["devices"]:
            if dev.get("driver") in ("em4100", "pn532"):
                dev["port"] = str(self.workdir / f"tty-{dev['id']}")
                readers[dev["id"]] = (dev["driver"], dev["port"])
        if readers:
            self.students = StudentFlow(readers, StudentFlow.make_cards(40), every_s=1.0)
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

    def _spawn(self, name: str, argv: list[str]) -> None:
        log = (self.workdir / f"{name}.log").open("ab")
        self.processes[name] = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        log.close()

    def check_processes(self) -> None:
        for name, proc in self.processes.items():
            if proc.poll() is not None:
                tail = (self.workdir / f"{name}.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"the demo's {name} exited with code {proc.returncode}:\n{tail}")

    def stop(self) -> None:
        self.pages.stop(self.processes)
        for name in ("gateway", "ingest", *self.library_processes):
            proc = self.processes.get(name)
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
        if self.students is not None:
            self.students.stop()
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
            console.print(demo.pages.banner())
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
            demo.stop()
    return 0
