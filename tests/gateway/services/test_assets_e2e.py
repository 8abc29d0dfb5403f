"""The asset registry through the real gateway (``edugate run``) and broker: a simulated PJLink projector
over real TCP becomes an asset with the make, model, serial and firmware it reports, the school's inventory
CSV adds equipment without electronics, the day's usage is forwarded as records, the energy rule fires when
the projector is on outside school hours, and the registry survives a restart."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from edugate.simulators.pjlink import PJLinkSimulator, ProjectorState
from tests.helpers import Collector, GatewayProcess, wait_for_async

pytestmark = pytest.mark.timeout(90)

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


async def test_projector_and_inventory_become_assets_with_usage_and_the_energy_rule(mosquitto,
                                                                                    tmp_path: Path) -> None:
    inventory = tmp_path / "inventory.csv"
    inventory.write_text("asset_id,name,category,make,model,room\n"
                         "micro-01,Microscope,microscope,Olympus,CX23,lab-2\n"
                         "bad id,Robot,robotics,,,stem-lab\n")
    not_today = WEEKDAYS[(dt.datetime.now(ZoneInfo("Asia/Ho_Chi_Minh")).weekday() + 3) % 7]
    async with PJLinkSimulator(state=ProjectorState(power=1, make="Epson", model="EB-992F", serial="X4KJ1234",
                                                    firmware="1.02"), hours_per_s=20.0) as sim:
        sim._on_since = None  # lamp hours count from the first power on below
        collector = Collector(mosquitto.port).start()
        cfg = {
            "school": "class-school", "gateway": "gw-a",
            "uplink": {"port": mosquitto.port, "health_interval_s": 3600},
            "devices": [{"id": "room101-projector", "driver": "pjlink", "room": "room-101", "host": "127.0.0.1",
                         "port": sim.port, "poll_s": 1, "timeout_s": 1}],
            "assets": {"inventory_csv": str(inventory), "report_every_s": 1,
                       "energy": {"days": [not_today], "start": "07:00", "end": "17:00", "grace_min": 0}},
        }
        gw = GatewayProcess(tmp_path / "gw", cfg).start()

        def events(kind: str) -> list[dict]:
            return [e for e in collector.records["event"] if e["type"] == kind]

        try:
            def identified() -> list[dict]:
                return [e for e in events("asset") if e["data"].get("serial") == "X4KJ1234"]

            [asset] = await wait_for_async(identified, 20, "the projector as an asset with its serial")
            assert asset["device"] == "room101-projector" and asset["room"] == "room-101"
            assert {k: asset["data"][k] for k in ("source", "driver", "make", "model", "firmware")} == {
                "source": "device", "driver": "pjlink", "make": "Epson", "model": "EB-992F", "firmware": "1.02"}
            [micro] = await wait_for_async(lambda: [e for e in events("asset") if e["data"]["asset"] == "micro-01"],
                                           20, "the microscope from the inventory")
            assert micro["device"] == "_gateway" and micro["data"]["source"] == "inventory"
            assert micro["data"]["room"] == "lab-2" and micro["data"]["model"] == "CX23"
            assert "inventory.csv:3: asset_id 'bad id' must be lower-case" in gw.log()

            [left_on] = await wait_for_async(lambda: events("energy_left_on"), 20, "the energy rule firing")
            assert left_on["device"] == "room101-projector" and left_on["data"]["reason"] == "outside school hours"
            assert left_on["data"]["school_hours"] == f"07:00-17:00 {not_today}"

            await wait_for_async(lambda: [e for e in events("asset_usage") if e["data"]["readings"] >= 3], 20,
                                 "the day's usage as records")
            sim.set_power(False)
            [off] = await wait_for_async(lambda: events("energy_switched_off"), 20, "switched off")
            assert off["data"]["asset"] == "room101-projector" and off["data"]["minutes_on"] >= 0

            def usage_with_on_time() -> list[dict]:
                return [e for e in events("asset_usage") if e["data"]["power_on_h"] > 0]

            usage = (await wait_for_async(usage_with_on_time, 20, "power-on time in the usage"))[-1]["data"]
            assert usage["asset"] == "room101-projector" and usage["lamp_h"] is not None
        finally:
            code = gw.stop()
            assert code == 0, gw.log()[-3000:]
        saved = json.loads((tmp_path / "gw" / "assets.json").read_text())
        assert {a["asset"]: a["serial"] for a in saved["assets"]} == {"room101-projector": "X4KJ1234"}

        # a restart: the registry is kept, the projector is not announced again
        announced = len([e for e in events("asset") if e["data"]["asset"] == "room101-projector"])
        before = len(collector.records["telemetry"])
        gw = GatewayProcess(tmp_path / "gw", cfg).start()
        try:
            await wait_for_async(lambda: [r for r in collector.records["telemetry"][before:]
                                          if r["device"] == "room101-projector"], 20, "readings after the restart")
            assert len([e for e in events("asset") if e["data"]["asset"] == "room101-projector"]) == announced
        finally:
            assert gw.stop() == 0, gw.log()[-3000:]
            collector.stop()
