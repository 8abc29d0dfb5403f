"""The classrooms of the demo school: PJLink projectors and boards, RS-232 panels, and the school's inventory.

``edugate demo`` calls :func:`start_classrooms` with the demo config (a dict) before it writes the gateway's
config: each ``pjlink`` device gets a PJLink simulator (``edugate.simulators.pjlink``) on a free port, each
``display-serial`` device a panel or projector simulator on a pseudo-terminal (``edugate.simulators.
display_serial``), both as subprocesses through the demo's own ``spawn``; the ``assets`` section's inventory is
written as a CSV of equipment without electronics (docs/assets.md).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edugate.simulators.servers import free_port

INVENTORY = """asset_id,name,category,make,model,serial,room,tag,acquired
micro-01,Kính hiển vi,microscope,Olympus,CX23,OL-23-0091,lab-2,,2024-09
micro-02,Kính hiển vi,microscope,Olympus,CX23,OL-23-0092,lab-2,,2024-09
robot-01,Robot kit,robotics,LEGO,Spike Prime,,lab-1,,2025-01
vr-01,VR headset,vr,Meta,Quest 3,,library,,2025-03
"""


def start_classrooms(raw: dict[str, Any], workdir: Path, spawn: Callable[[str, list[str]], None]) -> list[str]:
    """Point the classroom devices of ``raw`` at simulators and start them; write the inventory. Returns the
    process names (for the demo to stop). The first device of each kind starts on, the others off."""
    names: list[str] = []
    for n, dev in enumerate(d for d in raw.get("devices", []) if d.get("driver") == "pjlink"):
        dev["port"] = free_port()
        name = f"pjlink-{dev['id']}"
        make = ["--make", "Epson", "--model", "EB-992F"] if n == 0 else ["--make", "Panel", "--model", "IFP-75"]
        spawn(name, [sys.executable, "-m", "edugate.simulators.pjlink", "--port", str(dev["port"]), "--name",
                     dev["id"], "--serial", f"SN4352{n:06d}", "--hours-per-s", str(1 / 60), *make]
              + (["--on"] if n == 0 else []))
        names.append(name)
    for n, dev in enumerate(d for d in raw.get("devices", []) if d.get("driver") == "display-serial"):
        dev["port"] = str(workdir / f"tty-{dev['id']}")
        name = f"display-{dev['id']}"
        spawn(name, [sys.executable, "-m", "edugate.simulators.display_serial", "--link", dev["port"], "--family",
                     str(dev.get("profile", "lg-panel"))] + (["--on"] if n == 0 else []))
        names.append(name)
    assets = raw.get("assets")
    if isinstance(assets, dict) and "inventory_csv" in assets:
        inventory = workdir / "inventory.csv"
        inventory.write_text(INVENTORY, encoding="utf-8")
        assets["inventory_csv"] = str(inventory)
        assets["state_file"] = str(workdir / "assets.json")
    return names
