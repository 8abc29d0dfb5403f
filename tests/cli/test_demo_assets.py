"""The demo school's classrooms and asset registry: every device of ``edugate demo`` becomes an asset in
central's event store, the PJLink projector and board and the RS-232 panel (their simulators over TCP and a pty)
with what their protocols reveal, the Modbus sensor with its Read Device Identification, and the inventory
CSV's equipment. The whole demo runs (about 30 s): marked slow, run by name."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from edugate.cli.demo import DemoSchool
from tests.helpers import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]


def _assets(db: Path) -> dict[str, dict[str, Any]]:
    if not db.exists():
        return {}
    conn = sqlite3.connect(db)
    try:
        rows = conn.execute("SELECT data FROM events WHERE type = 'asset' ORDER BY ts, seq").fetchall()
    except sqlite3.OperationalError:  # ingest has not created the table yet
        return {}
    finally:
        conn.close()
    return {(d := orjson.loads(row[0]))["asset"]: d for row in rows}  # the newest record of each asset wins


def test_every_demo_device_is_an_asset_with_its_identity(tmp_path: Path) -> None:
    with DemoSchool(tmp_path / "demo") as demo:
        devices = [d["id"] for d in yaml.safe_load(demo.gateway_config.read_text())["devices"]]
        db = tmp_path / "demo" / "central-events.sqlite"

        def complete() -> dict[str, dict[str, Any]]:
            assets = _assets(db)
            identified = all(assets.get(a, {}).get(k) for a, k in (
                ("c10a-projector", "serial"), ("c10b-board", "serial"), ("c11a-panel", "make"), ("lab1-th", "make")))
            return assets if identified and set(devices) <= set(assets) else {}

        assets = wait_for(complete, 90, "every demo device as an asset, the classrooms' with their identity",
                          interval=1)
    assert (assets["c10a-projector"]["make"], assets["c10a-projector"]["model"]) == ("Epson", "EB-992F")
    assert (assets["c10b-board"]["make"], assets["c10b-board"]["model"]) == ("Panel", "IFP-75")
    assert assets["c11a-panel"]["driver"] == "display-serial"
    assert assets["lab1-th"]["make"] == "EduSim"  # Modbus 43/14 from the simulator
    inventory = {a for a, d in assets.items() if d["source"] == "inventory"}
    assert inventory == {"micro-01", "micro-02", "robot-01", "vr-01"}
