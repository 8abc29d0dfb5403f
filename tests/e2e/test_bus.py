"""The bus profile end to end: GPS NMEA and a card reader on real ptys -> gateway -> broker -> store."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

from edugate.common.privacy import Pseudonymizer, load_or_create_key
from edugate.simulators.em4100 import EM4100Simulator
from edugate.simulators.gps_nmea import HCMC_ROUTE, GpsSimulator
from tests.helpers import Collector, GatewayProcess, send_command, wait_async
from tests.vmquery import export

ALICE, BOB = bytes.fromhex("0A0000AA01"), bytes.fromhex("0A0000BB02")


async def test_boarding_alighting_with_position_and_the_left_onboard_alert(
        mosquitto, victoria, ingest, central_key, tmp_path: Path) -> None:
    (tmp_path / "gw").mkdir()
    pseudonym = Pseudonymizer(load_or_create_key(tmp_path / "gw" / "school.key"))
    collector = Collector(mosquitto.port).start()
    cfg = {
        "school": "card-school", "gateway": "gw-cards",  # the names send() signs for
        "uplink": {"port": mosquitto.port, "health_interval_s": 3600},
        "downlink": {"enabled": True, "public_keys": [f"{central_key}.pub.pem"]},
        "bus": {"route_end_times": []},
        "devices": [
            {"id": "bus-gps", "driver": "gps-nmea", "room": "bus-07", "port": str(tmp_path / "ttyGPS"),
             "interval_s": 0.5},
            {"id": "bus-door", "driver": "em4100", "room": "bus-07", "role": "bus", "direction": "both",
             "port": str(tmp_path / "ttyDOOR"), "debounce_s": 0.3},
        ],
    }
    async with GpsSimulator(tmp_path / "ttyGPS", period_s=0.2, speed_kmh=40), \
            EM4100Simulator(tmp_path / "ttyDOOR") as door:
        gw = GatewayProcess(tmp_path / "gw", cfg).start()
        await wait_async(lambda: [r for r in collector.records["telemetry"]
                                  if r["device"] == "bus-gps" and r["values"].get("fix") == 1], 20, "a GPS fix")
        await wait_async(lambda: "bus-door (em4100 reader on" in gw.log() and ": reading cards" in gw.log(), 20,
                         "the door reader to open its port")
        loop = asyncio.get_running_loop()
        alice_boarded_at = loop.time()
        door.tap(ALICE)
        await wait_async(lambda: len(collector.records["event"]) >= 1, 20, "Alice's tap")
        door.tap(BOB)
        await wait_async(lambda: len(collector.records["event"]) >= 2, 20, "Bob's tap")
        # Alice's next tap must come after her card's debounce window (0.3 s): the time is the point here
        await asyncio.sleep(max(0.0, alice_boarded_at + 0.3 + 0.2 - loop.time()))
        door.tap(ALICE)  # Alice gets off; Bob stays on the bus
        await wait_async(lambda: len(collector.records["event"]) >= 3, 20, "three taps")
        answer = send_command(mosquitto.url, central_key, "card-school", "gw-cards", "bus.end_route", {})
        assert answer["status"] == "ok" and answer["result"] == {"left_onboard": 1}
        await wait_async(lambda: any(e["type"] == "bus_route_end" for e in collector.records["event"]), 20,
                         "the route summary")
        assert gw.stop() == 0
    events = sorted(collector.records["event"], key=lambda e: e["seq"])
    taps = [(e["data"]["card"], e["data"]["action"]) for e in events if e["type"] == "card_tap"]
    assert taps == [(pseudonym(ALICE), "board"), (pseudonym(BOB), "board"), (pseudonym(ALICE), "alight")]
    lats = [lat for lat, _ in HCMC_ROUTE]
    lons = [lon for _, lon in HCMC_ROUTE]
    for e in events[:3]:
        assert min(lats) - 0.01 <= e["data"]["lat"] <= max(lats) + 0.01
        assert min(lons) - 0.01 <= e["data"]["lon"] <= max(lons) + 0.01
    [alert] = [e for e in events if e["type"] == "bus_left_onboard"]
    assert alert["data"]["card"] == pseudonym(BOB) and alert["data"]["alert"] is True
    [summary] = [e for e in events if e["type"] == "bus_route_end"]
    assert summary["data"] | {} == {"reason": "command", "left_onboard": 1, "boarded": 2, "alighted": 1}

    def alert_stored() -> list | None:
        series = export(victoria.url, '{__name__="edugate_event_count",type="bus_left_onboard"}')
        return series or None

    [series] = await wait_async(alert_stored, 20, "the alert in VictoriaMetrics")
    assert series["metric"]["alert"] == "true" and series["metric"]["room"] == "bus-07"
    # central ops find who was left on board in the event log (the pseudonym; the school re-identifies it)
    argv = [sys.executable, "-m", "edugate.cli.main", "events", "--db", str(tmp_path / "events.sqlite"),
            "--type", "bus_left_onboard", "--since", "1h"]
    result = await asyncio.to_thread(subprocess.run, argv, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    [logged] = [json.loads(line) for line in result.stdout.splitlines()]
    assert logged["data"]["card"] == pseudonym(BOB) and logged["gateway"] == "gw-cards" and logged["room"] == "bus-07"
    collector.stop()
