"""An RS-232 panel end to end: the simulated LG panel on a real pty -> the real gateway (``edugate run``) ->
Mosquitto, a signed power command back, and the asset registry recording it; unplugged and replugged."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from edugate.simulators.display_serial import SerialDisplay
from tests.e2e.conftest import central_key  # noqa: F401 - fixture
from tests.helpers import Collector, GatewayProcess, send_command, wait_for_async

pytestmark = pytest.mark.timeout(90)


async def test_panel_through_gateway_and_broker(mosquitto, central_key, tmp_path: Path) -> None:  # noqa: F811
    async with SerialDisplay(tmp_path / "ttyPANEL", "lg-panel") as panel:
        collector = Collector(mosquitto.port).start()
        cfg = {
            "school": "class-school", "gateway": "gw-b",
            "uplink": {"port": mosquitto.port, "health_interval_s": 1},
            "downlink": {"enabled": True, "public_keys": [f"{central_key}.pub.pem"]},
            "devices": [{"id": "room201-panel", "driver": "display-serial", "room": "room-201",
                         "port": str(panel.link), "profile": "lg-panel", "poll_interval_s": 1, "reply_timeout_s": 0.5,
                         "reopen_max_s": 0.5}],
            "assets": {"report_every_s": 1},
        }
        gw = GatewayProcess(tmp_path / "gw", cfg).start()

        def readings() -> list[dict]:
            return [r for r in collector.records["telemetry"] if r["device"] == "room201-panel"]

        def state() -> dict:
            docs = [s for s in collector.states if s and s.get("devices")]
            return docs[-1]["devices"]["room201-panel"] if docs else {}

        try:
            first = (await wait_for_async(readings, 20, "panel readings at the broker"))[0]
            assert first["room"] == "room-201" and first["values"]["power_on"] is False
            answer = await asyncio.to_thread(send_command, mosquitto.url, central_key, "class-school", "gw-b",
                                             "device.command", {"device": "room201-panel", "name": "power",
                                                                "args": {"value": "on"}})
            assert answer["status"] == "ok", answer
            assert panel.power == 1 and "ka 01 01" in panel.received
            await wait_for_async(lambda: [r for r in readings() if r["values"]["power_on"]], 20, "power on")
            [asset] = await wait_for_async(
                lambda: [e for e in collector.records["event"] if e["type"] == "asset"
                         and e["data"].get("make") == "LG"], 20, "the panel as an asset")
            assert asset["data"]["driver"] == "display-serial" and asset["data"]["room"] == "room-201"

            panel.port.unplug()
            await wait_for_async(lambda: state().get("state") == "offline", 20, "offline when unplugged")
            error = str(state().get("last_error"))  # lost while in use, or not back yet when reopened
            assert "device disconnected" in error or "cannot open the serial port" in error, error
            panel.port.plug()
            await wait_for_async(lambda: state().get("state") == "online", 20, "online after the replug")
            assert "back online after" in gw.log()
        finally:
            assert gw.stop() == 0, gw.log()[-3000:]
            collector.stop()
