"""A lab of BLE probes end to end: advertisement bytes -> bleak's BlueZ backend -> the shared scan -> the
real gateway (pipeline, outbox, uplink) -> Mosquitto -> ingest -> VictoriaMetrics; the wrong-key probe and
a silent probe show in the gateway's retained state at the broker."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from edugate.drivers.ble.scanner import scanners, use_backend
from edugate.gateway.config import parse_config
from edugate.gateway.runtime.gateway import Gateway
from edugate.simulators.ble_probes import Probe, ProbeRoom, SimulatedBlueZScanner, demo_probes, serve_air
from tests.e2e.conftest import ingest  # noqa: F401 - fixture
from tests.helpers import REPO, Collector, GatewayProcess, ingest_stats, wait_for_async
from tests.vmquery import export

pytestmark = pytest.mark.timeout(90)
KEY = bytes.fromhex("231d39c1d7cc1ab1aee224cd096db932")


@pytest.fixture(autouse=True)
def simulated_radio() -> Iterator[None]:
    previous = use_backend(SimulatedBlueZScanner)
    yield
    use_backend(previous)


async def test_probes_through_the_gateway_broker_and_store(mosquitto, victoria, ingest, tmp_path: Path) -> None:  # noqa: F811
    fridge = Probe("A4:C1:38:20:00:01", "bthome", {"temperature": 4.0, "humidity": 40.0, "battery": 88},
                   interval_s=0.2, repeats=3)
    incubator = Probe("A4:C1:38:20:00:02", "bthome", {"temperature": 37.0, "co2": 900, "battery": 95},
                      bind_key=KEY, interval_s=0.2, repeats=2)
    bench = Probe("A4:C1:38:20:00:03", "pvvx", {"temperature": 23.0, "humidity": 50.0, "battery": 70},
                  interval_s=0.2, repeats=1, loss=0.4)
    stranger = Probe("A4:C1:38:20:00:04", "bthome", {"temperature": 20.0}, bind_key=bytes(range(16)),
                     interval_s=0.2, repeats=1)
    cfg = parse_config(f"""
school: lab-school
gateway: gw-lab
uplink: {{port: {mosquitto.port}, health_interval_s: 3600}}
storage: {{path: {tmp_path / 'outbox.sqlite'}}}
privacy: {{secret_file: {tmp_path / 'school.key'}}}
devices:
  - {{id: fridge, driver: ble, room: chem-lab, address: "{fridge.address}", offline_after_s: 1.5}}
  - {{id: incubator, driver: ble, room: bio-lab, address: "{incubator.address}", bind_key: "{KEY.hex()}"}}
  - {{id: bench-th, driver: ble, room: chem-lab, address: "{bench.address}", format: pvvx}}
  - {{id: stranger, driver: ble, room: chem-lab, address: "{stranger.address}", bind_key: "{'ab' * 16}",
      offline_after_s: 1}}
""")
    collector = Collector(mosquitto.port).start()
    await wait_for_async(lambda: ingest_stats(tmp_path / "ingest.stats.json").get("subscribed"), 20,
                         "the ingest worker subscribed")
    gw = Gateway(cfg)

    def telemetry(device: str) -> list[dict]:
        return sorted((r for r in collector.records["telemetry"] if r["device"] == device), key=lambda r: r["seq"])

    async with ProbeRoom("hci0", [fridge, incubator, bench, stranger], others_per_s=300,
                         wait_for_listener=True) as room:
        task = asyncio.create_task(gw.run())
        try:
            await wait_for_async(lambda: all(len(telemetry(d)) >= 10 for d in ("fridge", "incubator", "bench-th")),
                                 30, "10 readings of each readable probe at the broker")
            [scan] = scanners().values()
            assert len(room.scanners) == 1 and scan.stats.others > 0
            room.silence(fridge.address)

            def fridge_offline() -> bool:
                return bool(collector.states) and collector.states[-1]["devices"]["fridge"]["state"] == "offline"

            while not fridge_offline():  # the retained state is republished with the health record
                await gw.report_health()
                await wait_for_async(lambda: collector.states, 5, "a state document")
                await asyncio.sleep(0.2)
            state = collector.states[-1]["devices"]
            assert state["fridge"]["last_error"].startswith("fridge (A4:C1:38:20:00:01): silent for ")
            assert state["stranger"]["state"] == "offline"
            assert "wrong bind_key?" in state["stranger"]["last_error"]
            assert state["incubator"]["state"] == "online" and state["bench-th"]["state"] == "online"
            room.silence(fridge.address, False)
            await wait_for_async(lambda: gw.drivers["fridge"].health.state == "online", 10, "the fridge back")
            counters = {d: dict(gw.drivers[d].health.counters) for d in gw.drivers}
        finally:
            gw.stop()
            await asyncio.wait_for(task, 30)
    assert counters["stranger"]["wrong_key"] >= 5 and telemetry("stranger") == []
    assert counters["fridge"]["duplicates"] >= 2 * 10 - 3 and counters["fridge"]["outages"] == 1
    assert counters["bench-th"].get("missed_packets", 0) >= 1  # 40 % lost: gaps in the PVVX counter

    for device, probe in (("fridge", fridge), ("incubator", incubator)):
        got = telemetry(device)
        assert len({r["seq"] for r in got}) == len(got)
        # each packet once, in order, the values the probe sent, the room from the config
        sent = probe.sent_packets[:len(got)]
        assert [r["values"]["temperature"] for r in got] == [p["temperature"] for p in sent]
        assert {r["room"] for r in got} == {"chem-lab" if device == "fridge" else "bio-lab"}
    assert [r["values"]["co2"] for r in telemetry("incubator")] == \
        [p["co2"] for p in incubator.sent_packets[:len(telemetry("incubator"))]]

    def stored() -> list | None:
        series = export(victoria.url, '{__name__="edugate_temperature",device="incubator"}')
        return series if series and len(series[0]["values"]) >= len(telemetry("incubator")) else None

    [series] = await wait_for_async(stored, 30, "the incubator's temperatures in VictoriaMetrics")
    assert series["metric"]["room"] == "bio-lab" and series["metric"]["school"] == "lab-school"
    assert sorted(series["values"]) == sorted(r["values"]["temperature"] for r in telemetry("incubator"))
    collector.stop()


async def test_edugate_run_with_the_sample_config_hears_a_simulated_lab_in_another_process(
        mosquitto, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``edugate run drivers/ble/sample.yaml`` in a subprocess, its scan fed over a socket by the demo lab
    (the same way the demo and IT staff without probes run it)."""
    use_backend(None)  # the subprocess chooses its backend from the environment
    monkeypatch.setenv("EDUGATE_BLE_BACKEND", "edugate.simulators.ble_probes:SocketBlueZScanner")
    monkeypatch.setenv("EDUGATE_BLE_AIR", str(tmp_path / "air.sock"))
    sample = yaml.safe_load((REPO / "drivers" / "ble" / "sample.yaml").read_text())
    devices = [*sample["devices"], {"id": "lab2-stranger", "driver": "ble", "room": "lab-2",
                                    "address": "A4:C1:38:10:00:06", "bind_key": KEY.hex()}]
    cfg = {"school": sample["school"], "gateway": sample["gateway"],
           "uplink": {"port": mosquitto.port, "health_interval_s": 3600}, "devices": devices}
    collector = Collector(mosquitto.port).start()
    async with ProbeRoom("hci0", demo_probes(), others_per_s=100) as room:
        server = await serve_air(room, tmp_path / "air.sock")
        async with server:
            gw = GatewayProcess(tmp_path / "gw", cfg).start()
            try:
                def heard() -> set[str]:
                    return {r["device"] for r in collector.records["telemetry"]}

                await wait_for_async(lambda: {"lab1-fridge", "lab1-incubator", "lab2-bench-th"} <= heard(), 30,
                                     "readings of the sample's three probes")
                await wait_for_async(lambda: "lab2-stranger (A4:C1:38:10:00:06): decryption failed: wrong "
                                     "bind_key?" in gw.log(), 10, "the wrong key logged naming the probe")
            finally:
                assert gw.stop() == 0
    assert "lab2-stranger" not in heard()
    fridge = [r for r in collector.records["telemetry"] if r["device"] == "lab1-fridge"]
    assert {"temperature", "humidity", "battery", "rssi"} <= set(fridge[0]["values"])
    assert 2.0 <= fridge[0]["values"]["temperature"] <= 6.0 and fridge[0]["room"] == "lab-1"
    assert not any(address in gw.log() for address in room.others)
    collector.stop()
