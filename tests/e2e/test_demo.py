"""The demo (the README's first command) runs the demo school end to end and central sees every device."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from edugate.cli.demo import DEMO_CONFIG, DemoSchool
from tests.helpers import REPO, wait_for


def test_demo_school_reaches_central(tmp_path: Path) -> None:
    devices = {d["id"] for d in yaml.safe_load(DEMO_CONFIG.read_text())["devices"] if d["driver"] == "modbus"}
    with DemoSchool(tmp_path / "demo") as demo:
        def every_device_seen() -> bool:
            demo.check_processes()
            latest, _, online = demo.central_view()
            return set(latest) >= devices and online.get("gw-main") == 1

        wait_for(every_device_seen, 60, "every demo device and the gateway online in the store", interval=1)
        assert demo.push_allowlist_when_online()["status"] == "ok"
        taps = wait_for(lambda: (t := demo.taps()) and "attendance" in t and any(k.startswith("door/") for k in t)
                        and t, 60, "attendance and door taps stored centrally", interval=1)
        assert sum(taps.values()) >= 2
        library = wait_for(lambda: (lib := demo.library()).get("visitors_in") and lib.get("loan") and lib, 60,
                           "library visitors and loans stored centrally", interval=1)
        assert library["visitors_in"] >= 1
        latest, _, _ = demo.central_view()
        assert 300 <= latest["lab1-co2"]["co2"] <= 5000
        assert 0 <= latest["lab1-ph"]["ph"] <= 14
    # stopping leaves nothing running
    assert all(p.poll() is not None for p in demo.processes.values())
    assert not demo.broker.running and not demo.store.running


def test_demo_command_runs_for_a_while_and_exits_cleanly(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "edugate.cli.main", "demo", "--duration", "12",
                             "--workdir", str(tmp_path / "d")], capture_output=True, text=True, cwd=REPO,
                            timeout=120)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "What central has received from demo-school" in result.stdout
    assert "gw-main: online" in result.stdout
    assert "allow-list (signed command): ok" in result.stdout
