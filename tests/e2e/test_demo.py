"""The demo (the README's first command) runs the demo school end to end and central sees every device."""

from __future__ import annotations

import json
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
        # the library desk's serial wedge (a second 13.56 MHz reader family beside the PN532) is read too
        wait_for(lambda: demo.query('count_over_time(edugate_event_count{school="demo-school",type="card_tap",'
                                    'device="library-desk"}[1h])'), 60, "a tap at the library desk's wedge",
                 interval=1)
        library = wait_for(lambda: (lib := demo.library()).get("visitors_in") and lib.get("loan") and lib, 60,
                           "library visitors and loans stored centrally", interval=1)
        assert library["visitors_in"] >= 1
        latest, _, _ = demo.central_view()
        assert 300 <= latest["lab1-co2"]["co2"] <= 5000
        assert 0 <= latest["lab1-ph"]["ph"] <= 14

        # the new parts (issues 14, 15, 17): a BLE probe and the kit report, the model stage's events arrive
        lab = wait_for(lambda: (v := demo.central_view()[0]) and {"lab1-fridge-probe", "lab2-bench-th",
                                                                    "lab1-microbit"} <= set(v) and v, 60,
                       "BLE probe and kit readings stored centrally", interval=1)
        assert 2 <= lab["lab1-fridge-probe"]["temperature"] <= 6  # the probe's set point is 4 °C
        assert -100 < lab["lab1-fridge-probe"]["rssi"] < 0
        assert 15 <= lab["lab1-microbit"]["temperature"] <= 25 and "light" in lab["lab1-microbit"]
        assert set(lab["c10a-env"]) >= {"co2", "temp", "humidity", "light"}
        # occupancy after 15 polls of class 10A's sensor; the fridge door opens 40 polls in
        events = wait_for(lambda: (e := demo.events()) and "occupancy/c10a-env" in e and "anomaly/lab2-fridge" in e
                          and e, 90, "occupancy and anomaly events stored centrally", interval=1)
        assert events["kit_hello/lab1-microbit"] >= 1
        assert all(feed.played >= 40 for feed in demo.feeds)
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
    # the parts whose extra is installed here (the test extras hold them all) say that they run
    assert "on-device models: anomaly (lab2-fridge" in result.stdout
    assert "BLE probes: 3 in a simulated lab" in result.stdout
    assert "lab kit lab1-microbit" in result.stdout
    assert "left out" not in result.stdout


def test_demo_leaves_out_what_a_missing_extra_would_run(tmp_path: Path) -> None:
    """A [gateway,central] install (the wheel check): no models section, no BLE probes, one line each; the
    devices the models would score still report (simulated values instead of the models' data)."""
    code = f"""
import importlib.util, json, pathlib
real = importlib.util.find_spec
importlib.util.find_spec = lambda name, *a: None if name in ("numpy", "onnxruntime", "bleak") else real(name, *a)
from edugate.cli.demo import DemoSchool
demo = DemoSchool(pathlib.Path({str(tmp_path / "d")!r}))
try:
    demo.start()
    print("RESULT", json.dumps({{"notes": demo.notes, "feeds": len(demo.feeds),
                                "config": __import__("yaml").safe_load(demo.gateway_config.read_text())}}))
finally:
    demo.stop()
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    out = json.loads(result.stdout.split("RESULT ", 1)[1])
    notes = "\n".join(out["notes"])
    assert "on-device models left out: the [ml] extra is not installed (no numpy, onnxruntime" in notes
    assert "BLE probes left out (lab1-fridge-probe, lab1-co2-probe, lab2-bench-th): the [ble] extra" in notes
    assert "models" not in out["config"] and out["feeds"] == 0
    assert not [d for d in out["config"]["devices"] if d["driver"] == "ble"]
    assert {"lab2-fridge", "c10a-env", "lab1-microbit"} <= {d["id"] for d in out["config"]["devices"]}
