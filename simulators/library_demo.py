"""The library of the demo school: a SIP2 library system, a gate and a self-check station, all simulated.

``edugate demo`` calls :func:`start_library` with the demo config (a dict) before it writes the
gateway's config: the library devices' SIP2 settings, ports and patrons file are pointed at simulators
started as subprocesses (through the demo's own ``spawn``), the SIP2 passwords are written to a file and
the demo card is mapped to a demo patron in ``library-patrons.csv`` under the demo's school key.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edugate.common.privacy import Pseudonymizer, load_or_create_key
from edugate.simulators.servers import free_port

GATE, SELFCHECK = "library-gate", "library-selfcheck"
DEMO_CARDS = {"0A1B2C3D4E": "P00001", "0F00BA4411": "P00002"}  # card UID -> the library's patron barcode
DEMO_ITEMS = ["30112000000017", "30112000000024", "30112000000031", "30112000000048", "30112000000055"]
PASSWORD = "demo-secret"


def start_library(raw: dict[str, Any], workdir: Path, spawn: Callable[[str, list[str]], None]) -> list[str]:
    """Rewrite the library devices of ``raw`` for the simulators and start them; returns the process names
    (for the demo to stop). Does nothing if the config has no library device."""
    devices = [d for d in raw.get("devices", []) if d.get("driver") in (GATE, SELFCHECK)]
    if not devices:
        return []
    port = free_port()
    password_file = workdir / "sip2.password"
    password_file.write_text(PASSWORD + "\n")
    password_file.chmod(0o600)
    key_file = Path(raw.get("privacy", {}).get("secret_file", workdir / "school.key"))
    pseudonym = Pseudonymizer(load_or_create_key(key_file))
    patrons = workdir / "library-patrons.csv"
    patrons.write_text("student_id,pseudonym\n" + "".join(f"{patron},{pseudonym(bytes.fromhex(uid))}\n"
                                                          for uid, patron in DEMO_CARDS.items()))
    logins: list[str] = []
    names: list[str] = []
    for dev in devices:
        sip2 = dict(dev["sip2"])
        sip2.update(host="127.0.0.1", port=port, login_password_file=str(password_file), charset="utf-8")
        sip2.setdefault("login_user", f"edugate-{dev['id']}")
        logins += ["--login", f"{sip2['login_user']}:{PASSWORD}"]
        dev["sip2"] = sip2
        dev["port"] = str(workdir / f"tty-{dev['id']}")
        items = [arg for item in DEMO_ITEMS for arg in ("--item", item)]
        if dev["driver"] == SELFCHECK:
            dev["patrons_file"] = str(patrons)
            cards = [arg for uid in DEMO_CARDS for arg in ("--card", uid)]
            argv = ["selfcheck", "--link", dev["port"], *items[:4], *cards, "--every", "8"]
        else:
            argv = ["gate", "--link", dev["port"], *items, "--every", "2"]
        spawn(f"sim-{dev['id']}", [sys.executable, "-m", "edugate.simulators.station", *argv])
        names.append(f"sim-{dev['id']}")
    spawn("sim-sip2", [sys.executable, "-m", "edugate.simulators.sip2", "--port", str(port), *logins])
    return [*names, "sim-sip2"]
