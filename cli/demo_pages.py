"""The pages in ``edugate demo``: the demo gateway's own pages, two more (synthetic) schools and central's
fleet view, with one demo admin whose random password the demo prints."""

from __future__ import annotations

import secrets
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from edugate.common.web.auth import UserStore
from edugate.simulators.servers import free_port

DEMO_USER = "demo-admin"
THRESHOLDS = {  # drawn on the live plots of the demo school
    "lab1-th": {"temperature": {"min": 18, "max": 30}},
    "lab1-co2": {"co2": {"max": 1000}},
    "lab1-ph": {"ph": {"min": 6, "max": 8}},
    "c10a-co2": {"co2": {"max": 1000}},
}
OTHER_SCHOOLS = {  # school: (district, gateway): small synthetic gateways, so the fleet view has a fleet
    "demo-school-b": ("district-1", "gw-1"),
    "demo-school-c": ("district-2", "gw-annex"),
}


@dataclass
class DemoPages:
    workdir: Path
    gateway_port: int = field(default_factory=free_port)
    central_port: int = field(default_factory=free_port)
    password: str = field(default_factory=lambda: secrets.token_urlsafe(9))
    names: list[str] = field(default_factory=list)  # the processes started for the pages

    @property
    def users_file(self) -> Path:
        return self.workdir / "web-users.json"

    def configure_gateway(self, raw: dict[str, Any]) -> None:
        """Turn on the demo gateway's pages (and create the demo admin, once per demo folder)."""
        raw["web"] = {"enabled": True, "port": self.gateway_port, "users_file": str(self.users_file),
                      "thresholds": {dev: limits for dev, limits in THRESHOLDS.items()
                                     if any(d.get("id") == dev for d in raw.get("devices", []))}}
        UserStore(self.users_file).add(DEMO_USER, "admin", self.password, replace=True)

    def processes(self, broker_port: int, broker_url: str, store_url: str,
                  central_config: Path | None = None) -> dict[str, list[str]]:
        """name -> argv of the other schools' gateways and of central's pages (with ``central_config``, the demo's
        central.yaml: its event store feeds the Equipment page)."""
        out: dict[str, list[str]] = {}
        for school, (district, gateway) in OTHER_SCHOOLS.items():
            folder = self.workdir / school
            folder.mkdir(parents=True, exist_ok=True)
            config = folder / "gateway.yaml"
            config.write_text(yaml.safe_dump({
                "school": school, "gateway": gateway, "district": district,
                "uplink": {"port": broker_port, "keepalive_s": 5, "health_interval_s": 10},
                "storage": {"path": str(folder / "outbox.sqlite"), "budget_mb": 16},
                "privacy": {"secret_file": str(folder / "school.key")},
                "devices": [{"id": "lab-probe", "driver": "synthetic", "room": "lab-1", "interval_s": 5, "values": 2},
                            {"id": "hall-probe", "driver": "synthetic", "room": "hall", "interval_s": 10,
                             "values": 1}],
            }, sort_keys=False))
            out[f"gateway-{school}"] = [sys.executable, "-m", "edugate.cli", "run", str(config)]
        out["central-pages"] = [sys.executable, "-m", "edugate.cli.main", "central", "--broker", broker_url,
                                "--store-url", store_url, "--port", str(self.central_port),
                                "--data-dir", str(self.workdir / "central"), "--users-file", str(self.users_file),
                                "--client-id", "demo-central",
                                *(["--config", str(central_config)] if central_config else [])]
        self.names = list(out)
        return out

    def stop(self, processes: dict[str, subprocess.Popen]) -> None:
        for name in self.names:
            proc = processes.get(name)
            if proc is not None and proc.poll() is None:
                proc.terminate()
        for name in self.names:
            proc = processes.get(name)
            if proc is not None:
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()

    def banner(self) -> str:
        gw = f"http://127.0.0.1:{self.gateway_port}"
        return (f"[bold]Pages[/] (log in as [bold]{DEMO_USER}[/], password [bold]{self.password}[/]):\n"
                f"  gateway status   {gw}/status\n"
                f"  live readings    {gw}/live?room=lab-1   (BLE probes, the micro:bit kit)\n"
                f"  model events     {gw}/live?room=class-10a (occupancy), {gw}/live?room=lab-2 (fridge anomaly)\n"
                f"  central fleet    http://127.0.0.1:{self.central_port}/fleet")
