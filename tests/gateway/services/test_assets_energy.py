"""The energy rule's second trigger (a room empty for N minutes: occupancy model, people readings, no taps),
the school's opt-in switch-off (``power off`` through the real PJLink driver to the simulator over TCP, the
answer recorded as ``energy_auto_off``), and inventory items marked present by their BLE tag."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from edugate.contract.records import Event
from edugate.drivers.base import DeviceConfig
from edugate.drivers.ble.config import BleProbeConfig
from edugate.drivers.pjlink.driver import PJLinkConfig, PJLinkDriver
from edugate.drivers.synthetic.driver import SyntheticDeviceConfig
from edugate.drivers.wedge.driver import WedgeConfig
from edugate.gateway.services.assets import AssetsConfig, AssetsService
from edugate.gateway.services.base import ServiceSetup
from edugate.simulators.pjlink import PJLinkSimulator, ProjectorState
from tests.drivers.fakes import FakeEmit
from tests.helpers import wait_for_async

TZ = ZoneInfo("Asia/Ho_Chi_Minh")
MONDAY = "2026-03-02"
PROJECTOR = "room101-projector"


def ms(hhmm: str, day: str = MONDAY) -> int:
    return int(dt.datetime.fromisoformat(f"{day}T{hhmm}").replace(tzinfo=TZ).timestamp() * 1000)


def service(tmp_path: Path, devices: list[DeviceConfig], **options: Any) -> AssetsService:
    cfg = AssetsConfig.model_validate({"state_file": str(tmp_path / "assets.json"), **options})
    svc = AssetsService.from_config(ServiceSetup.of(cfg, devices, "Asia/Ho_Chi_Minh", tmp_path))
    assert isinstance(svc, AssetsService)
    return svc


def projector(port: int = 4352) -> PJLinkConfig:
    return PJLinkConfig(id=PROJECTOR, driver="pjlink", room="room-101", host="127.0.0.1", port=port, timeout_s=2)


def power(ts: int, on: bool = True) -> dict:
    return {"kind": "telemetry", "device": PROJECTOR, "room": "room-101", "ts": ts,
            "values": {"power": int(on), "power_on": on}}


def people(ts: int, n: int, room: str = "room-101") -> dict:
    return {"kind": "telemetry", "device": "cam-101", "room": room, "ts": ts, "values": {"people": n}}


def occupancy(ts: int, occupied: bool) -> dict:
    return {"kind": "event", "device": "env-101", "room": "room-101", "ts": ts, "type": "occupancy",
            "data": {"occupied": occupied, "people": 3 if occupied else 0}}


def tap(ts: int, room: str = "room-101") -> dict:
    return {"kind": "event", "device": "door-101", "room": room, "ts": ts, "type": "card_tap",
            "data": {"card": "p1-00", "role": "attendance"}}


ENERGY = {"days": ["mon", "tue", "wed", "thu", "fri"], "start": "07:00", "end": "17:00", "grace_min": 15,
          "empty_min": 20}


def test_a_room_empty_for_n_minutes_by_the_cameras_people_reading(tmp_path: Path) -> None:
    svc = service(tmp_path, [projector()], energy=ENERGY)
    svc.stage(people(ms("09:00"), 25))
    for minute in range(0, 30, 5):
        svc.stage(power(ms("09:00") + minute * 60_000))
    assert not svc._queue  # a class is in the room
    svc.stage(people(ms("09:40"), 0))  # the class left at 09:40; the board stays on
    svc.stage(people(ms("09:50"), 0))  # still empty: the room is empty since 09:40, not 09:50
    for minute in range(30, 65, 5):
        svc.stage(power(ms("09:00") + minute * 60_000))
    [left] = list(svc._queue)
    assert left.type == "energy_left_on" and left.device == PROJECTOR
    assert left.data["reason"] == "room empty" and left.data["since"] == ms("09:40")
    assert (left.data["minutes"], left.data["signal"], left.data["room"]) == (20.0, "people", "room-101")
    svc.stage(power(ms("10:05")))
    assert len(svc._queue) == 1  # once per episode
    svc.stage(power(ms("10:10"), on=False))
    assert svc._queue[-1].type == "energy_switched_off" and svc._queue[-1].data["minutes_on"] == 30.0


def test_the_occupancy_model_and_someone_coming_back(tmp_path: Path) -> None:
    svc = service(tmp_path, [projector()], energy=ENERGY)
    svc.stage(power(ms("08:00")))
    svc.stage(occupancy(ms("08:01"), False))
    svc.stage(power(ms("08:15")))
    svc.stage(occupancy(ms("08:16"), True))  # back before 20 minutes
    svc.stage(power(ms("08:30")))
    svc.stage(occupancy(ms("08:31"), False))
    svc.stage(power(ms("08:45")))
    assert not svc._queue
    svc.stage(power(ms("08:51")))
    [left] = list(svc._queue)
    assert left.data["since"] == ms("08:31") and left.data["signal"] == "occupancy"


def test_no_taps_counts_only_in_rooms_with_a_reader_and_from_power_on(tmp_path: Path) -> None:
    reader = WedgeConfig.model_validate({"id": "door-101", "driver": "wedge", "room": "room-101",
                                         "device_path": "/dev/input/event7"})
    lab = PJLinkConfig(id="lab-projector", driver="pjlink", room="lab-9", host="127.0.0.1")
    svc = service(tmp_path, [projector(), reader, lab], energy=ENERGY | {"empty_from": ["taps"]})
    svc.stage(tap(ms("08:00")))
    svc.stage(power(ms("09:00")))  # switched on at 09:00, an hour after the last tap: counted from 09:00
    svc.stage(power(ms("09:19")))
    assert not svc._queue
    svc.stage({**power(ms("09:30")), "device": "lab-projector", "room": "lab-9"})
    svc.stage({**power(ms("10:30")), "device": "lab-projector", "room": "lab-9"})  # lab-9 has no reader
    svc.stage(power(ms("09:20")))
    assert [(e.device, e.data["signal"], e.data["since"]) for e in svc._queue] == [(PROJECTOR, "taps", ms("09:00"))]


def test_without_empty_min_only_school_hours_count(tmp_path: Path) -> None:
    svc = service(tmp_path, [projector()], energy={k: v for k, v in ENERGY.items() if k != "empty_min"})
    svc.stage(people(ms("09:00"), 0))
    for minute in range(0, 120, 10):
        svc.stage(power(ms("09:00") + minute * 60_000))
    assert not svc._queue


async def test_switch_off_through_the_pjlink_driver_over_tcp(tmp_path: Path) -> None:
    async with PJLinkSimulator(password="sesame", state=ProjectorState(power=1)) as sim:
        secret = tmp_path / "pjlink.pw"
        secret.write_text("sesame\n")
        cfg = projector(sim.port).model_copy(update={"password_file": secret})
        driver = PJLinkDriver(cfg)
        svc = service(tmp_path, [cfg], energy=ENERGY | {"switch_off": True, "grace_min": 0})
        svc.use_devices({PROJECTOR: driver}.get)
        emit = FakeEmit()
        task = asyncio.create_task(svc.run(emit))
        try:
            svc.stage(power(ms("18:00")))  # on after school hours: raised at once (grace 0), switched off
            off = await wait_for_async(lambda: [e for e in emit.events if e.type == "energy_auto_off"], 10,
                                       "the switch-off")
            assert off[0].device == PROJECTOR
            assert off[0].data == {"asset": PROJECTOR, "reason": "outside school hours", "command": "power off",
                                   "result": "ok"}
            assert sim.state.power in (0, 2) and "POWR" in sim.commands  # off (or cooling down)

            sim.state.power = 1  # on again, and now the projector refuses: the failure is recorded, not raised
            sim.state.refuse["POWR"] = "ERR3"
            svc.stage(power(ms("18:10"), on=False))
            svc.stage(power(ms("18:20")))
            failed = await wait_for_async(lambda: [e for e in emit.events if e.type == "energy_auto_off"][1:], 10,
                                          "a refusal")
            assert failed[0].data["result"] == "failed" and "ERR3" in failed[0].data["error"]
            assert svc.status()["switch_offs"] == 1 and svc.status()["switch_off_failures"] == 1
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await driver.close()


async def test_switch_off_of_a_device_that_cannot_or_is_not_running(tmp_path: Path) -> None:
    sensor = SyntheticDeviceConfig.model_validate({"id": "lab-sensor", "driver": "synthetic", "room": "lab-1"})
    svc = service(tmp_path, [projector(), sensor], energy=ENERGY | {"switch_off": True, "grace_min": 0})
    svc.use_devices(lambda device: None)  # nothing running (the device is disabled)
    emit = FakeEmit()
    task = asyncio.create_task(svc.run(emit))
    try:
        svc.stage(power(ms("18:00")))
        svc.stage({**power(ms("18:00")), "device": "lab-sensor", "room": "lab-1"})  # a sensor saying power_on
        def answers() -> list[dict]:
            found = [e.data for e in emit.events if e.type == "energy_auto_off"]
            return found if len(found) == 2 else []

        found = await wait_for_async(answers, 10, "two answers")
        assert {(d["asset"], d["result"]) for d in found} == {(PROJECTOR, "failed"), ("lab-sensor", "skipped")}
        assert {d["error"] for d in found} == {"the device is not running on this gateway",
                                               "the synthetic driver has no power command"}
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_an_inventory_item_is_present_when_its_ble_tag_is_heard(tmp_path: Path) -> None:
    inventory = tmp_path / "inventory.csv"
    inventory.write_text("asset_id,name,room,tag\nrobot-01,LEGO Spike Prime,stem-lab,BLE:c4:7f:51:00:00:01\n"
                         "micro-01,Microscope,lab-2,\nvr-01,VR headset,library,BLE:C4:7F:51:00:00\n")
    tag = BleProbeConfig.model_validate({"id": "tag-robot-01", "driver": "ble", "room": "stem-lab",
                                         "address": "C4:7F:51:00:00:01"})
    svc = service(tmp_path, [tag], inventory_csv=str(inventory))
    assert "tag-robot-01" not in svc.assets  # the BLE device is the robot kit's tag, not an asset of its own
    assert svc.inventory.problems[0].message.startswith("vr-01: tag 'BLE:C4:7F:51:00:00' is not a BLE address")
    robot = next(r for r in svc.status()["assets"] if r["asset"] == "robot-01")
    assert robot["missing"] and robot["last_seen"] is None  # tagged, never heard
    t = ms("10:00")
    svc.stage({"kind": "telemetry", "device": "tag-robot-01", "room": "stem-lab", "ts": t,
               "values": {"battery": 90, "rssi": -70}})
    svc.stage({"kind": "telemetry", "device": "tag-robot-01", "room": "stem-lab", "ts": t + 60_000,
               "values": {"battery": 90, "rssi": -71}})
    usage = svc.usage[("robot-01", MONDAY)].record("robot-01", MONDAY)
    assert (usage["seen"], usage["readings"], usage["last_seen"], usage["powered"]) == (2, 0, t + 60_000, False)
    status = {r["asset"]: r for r in svc.status()["assets"]}
    assert status["robot-01"]["first_seen"] == t and not status["micro-01"]["missing"]  # untagged: never missing
    emit = FakeEmit()
    assert await svc.report(emit) == 1
    [record] = emit.events
    assert isinstance(record, Event) and record.device == "_gateway" and record.data["asset"] == "robot-01"
    svc.save()
    again = service(tmp_path, [tag], inventory_csv=str(inventory))  # sightings survive a restart
    assert again.inventory.assets["robot-01"].first_seen == t
