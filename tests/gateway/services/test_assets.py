"""The asset registry service: assets from devices and the inventory CSV, identity from protocol records,
usage per asset and day, the energy rule, and the state kept across restarts."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import os
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from edugate.contract.records import Event
from edugate.drivers.pjlink.driver import PJLinkConfig
from edugate.drivers.synthetic.driver import SyntheticDeviceConfig
from edugate.gateway.services.assets import AssetsConfig, AssetsService, read_inventory
from edugate.gateway.services.base import ServiceSetup
from tests.drivers.fakes import FakeEmit, until

TZ = ZoneInfo("Asia/Ho_Chi_Minh")
DEVICES = [PJLinkConfig(id="room101-projector", driver="pjlink", room="room-101", host="10.0.0.5"),
           SyntheticDeviceConfig.model_validate({"id": "lab-sensor", "driver": "synthetic", "room": "lab-1"})]


def ms(day: str, hhmm: str) -> int:
    return int(dt.datetime.fromisoformat(f"{day}T{hhmm}").replace(tzinfo=TZ).timestamp() * 1000)


def service(tmp_path: Path, **options: object) -> AssetsService:
    cfg = AssetsConfig.model_validate({"state_file": str(tmp_path / "assets.json"), **options})
    svc = AssetsService.from_config(ServiceSetup.of(cfg, DEVICES, "Asia/Ho_Chi_Minh", tmp_path))
    assert isinstance(svc, AssetsService)
    return svc


def reading(ts: int, **values: object) -> dict:
    return {"kind": "telemetry", "device": "room101-projector", "room": "room-101", "ts": ts, "values": values}


def event(ts: int, kind: str, data: dict, device: str = "room101-projector", room: str = "room-101") -> dict:
    return {"kind": "event", "device": device, "room": room, "ts": ts, "type": kind, "data": data}


def test_off_without_its_section(tmp_path: Path) -> None:
    assert AssetsService.from_config(ServiceSetup.of(None, DEVICES, "Asia/Ho_Chi_Minh", tmp_path)) is None


async def test_every_device_is_an_asset_with_what_its_protocol_reveals(tmp_path: Path) -> None:
    svc, emit = service(tmp_path), FakeEmit()
    task = asyncio.create_task(svc.run(emit))
    try:
        first = {(await emit.next()).device, (await emit.next()).device}
        assert first == {"room101-projector", "lab-sensor"}  # announced at start, before any record
        t0 = ms("2026-03-02", "08:00")
        svc.stage(event(t0, "device_info", {"protocol": "pjlink", "make": "Epson", "model": "EB-992F",
                                             "serial": "X4KJ1234", "firmware": "1.02", "host": "10.0.0.5"}))
        info = await emit.next()
        assert isinstance(info, Event) and info.type == "asset" and info.device == "room101-projector"
        assert info.data == {"asset": "room101-projector", "source": "device", "driver": "pjlink",
                             "room": "room-101", "make": "Epson", "model": "EB-992F", "serial": "X4KJ1234",
                             "firmware": "1.02", "first_seen": t0}
        svc.stage(event(t0 + 1000, "device_info", {"make": "Epson", "model": "EB-992F", "serial": "X4KJ1234",
                                                    "firmware": "1.02"}))
        svc.stage(event(t0 + 2000, "kit_hello", {"board": "microbit-v2", "firmware": "1.0.0", "node_id": "k7"},
                        device="lab-sensor", room="lab-1"))
        kit = await emit.next()
        assert isinstance(kit, Event) and kit.device == "lab-sensor"
        assert (kit.data["model"], kit.data["firmware"], kit.data["serial"]) == ("microbit-v2", "1.0.0", "k7")
        await asyncio.sleep(0.1)
        assert [e.type for e in emit.events].count("asset") == 4  # 2 at start, 2 identities; no repeat
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    # a restart keeps the registry: first seen, identity; nothing is announced again
    saved = json.loads((tmp_path / "assets.json").read_text())
    assert {a["asset"]: a["serial"] for a in saved["assets"]} == {"room101-projector": "X4KJ1234", "lab-sensor": "k7"}
    again, emit2 = service(tmp_path), FakeEmit()
    assert again.assets["room101-projector"].first_seen == t0 and again.assets["room101-projector"].make == "Epson"
    task = asyncio.create_task(again.run(emit2))
    await asyncio.sleep(0.2)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert not emit2.items


async def test_power_on_hours_and_lamp_hours_per_day(tmp_path: Path) -> None:
    svc, emit = service(tmp_path, max_gap_s=600), FakeEmit()
    day = "2026-03-02"
    t = ms(day, "07:00")
    for minute in range(0, 91, 1):  # on 07:00-08:30, one reading a minute
        svc.stage(reading(t + minute * 60_000, power=1, power_on=True, lamp_hours=1200 + minute // 60))
    svc.stage(reading(t + 91 * 60_000, power=0, power_on=False, lamp_hours=1201))
    svc.stage(reading(ms(day, "13:00"), power=1, power_on=True, lamp_hours=1201))
    svc.stage(reading(ms(day, "13:30"), power=1, power_on=True, lamp_hours=1202))  # a 30 min gap: not counted
    svc.stage(reading(ms("2026-03-03", "00:10"), power=1, power_on=True, lamp_hours=1210))  # the next local day
    usage = svc.usage[("room101-projector", day)].record("room101-projector", day)
    assert usage["power_on_h"] == 1.5 and usage["lamp_h"] == 2 and usage["readings"] == 94
    assert usage["last_seen"] == ms(day, "13:30")
    assert svc.usage[("room101-projector", "2026-03-03")].readings == 1
    assert await svc.report(emit) == 2
    records = [e.data for e in emit.events if e.type == "asset_usage"]
    assert [(r["day"], r["power_on_h"]) for r in records] == [("2026-03-02", 1.5), ("2026-03-03", 0.0)]
    assert await svc.report(emit) == 0  # nothing changed since


def test_the_energy_rule(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    svc = service(tmp_path, energy={"days": ["mon", "tue", "wed", "thu", "fri"], "start": "07:00", "end": "17:00",
                                    "grace_min": 15})
    day = "2026-03-02"  # a Monday
    for minute in range(0, 60, 5):  # in school hours: no event
        svc.stage(reading(ms(day, "16:00") + minute * 60_000, power=1, power_on=True))
    for minute in range(0, 30, 5):  # still on after 17:00
        svc.stage(reading(ms(day, "17:00") + minute * 60_000, power=1, power_on=True))
    events = svc._queue
    assert [e.type for e in events] == ["energy_left_on"]
    left = events[0]
    assert left.device == "room101-projector" and left.data["since"] == ms(day, "17:00")
    assert left.data["minutes"] == 15.0 and left.data["school_hours"] == "07:00-17:00 mon,tue,wed,thu,fri"
    svc.stage(reading(ms(day, "17:40"), power=0, power_on=False))
    assert [e.type for e in events] == ["energy_left_on", "energy_switched_off"]
    assert events[1].data == {"asset": "room101-projector", "minutes_on": 40.0, "reason": "outside school hours"}
    svc.stage(reading(ms("2026-03-07", "10:00"), power=1, power_on=True))  # Saturday: outside at once
    svc.stage(reading(ms("2026-03-07", "10:20"), power=1, power_on=True))
    assert [e.type for e in events][-1] == "energy_left_on"
    assert any(r["left_on"] for r in svc.status()["assets"])


def test_inventory_csv_rows_and_their_problems(tmp_path: Path) -> None:
    csv_file = tmp_path / "inventory.csv"
    csv_file.write_text("asset_id,name,category,room,tag\n"
                        "micro-01,Microscope Olympus CX23,microscope,lab-2,\n"
                        "Bad Id,Robot kit,robotics,stem-lab,\n"
                        "vr-01,,vr,library,\n"
                        "micro-01,Microscope again,microscope,lab-2,\n"
                        "robot-01,LEGO Spike Prime,robotics,stem-lab,BLE:AA:BB:CC:DD:EE:01,extra\n"
                        "room101-projector,Projector,projector,room-101,\n")
    assets, problems = read_inventory(csv_file)
    assert list(assets) == ["micro-01", "room101-projector"] and assets["micro-01"].room == "lab-2"
    assert [str(p) for p in problems] == [
        "line 3: asset_id 'Bad Id' must be lower-case letters, digits, _ and - (e.g. micro-07)",
        "line 4: vr-01: name is empty",
        "line 5: micro-01: listed twice (the first row is kept)",
        "line 6: 1 value(s) more than the header has columns"]
    svc = service(tmp_path, inventory_csv=str(csv_file))
    status = svc.status()
    assert status["inventory"] == 1 and status["devices"] == 2
    assert "line 0: room101-projector: is a device of this gateway; the row is skipped" in \
        status["inventory_problems"]
    (tmp_path / "bad.csv").write_text("id,title\nx,y\n")
    assert [str(p) for p in read_inventory(tmp_path / "bad.csv")[1]] == [
        "line 1: missing column(s) asset_id, name; unknown column(s) id, title (columns: asset_id,name,category,"
        "make,model,serial,room,tag,acquired)"]


async def test_a_changed_inventory_is_read_again_and_a_missing_one_keeps_the_last(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    csv_file = tmp_path / "inventory.csv"
    csv_file.write_text("asset_id,name\nmicro-01,Microscope\n")
    svc, emit = service(tmp_path, inventory_csv=str(csv_file)), FakeEmit()
    task = asyncio.create_task(svc.run(emit))
    try:
        await until(lambda: [e for e in emit.events if e.data.get("asset") == "micro-01"], "micro-01 announced")
        assert [e.device for e in emit.events if e.data.get("asset") == "micro-01"] == ["_gateway"]
        csv_file.write_text("asset_id,name\nmicro-01,Microscope\nvr-01,VR headset\n")
        os.utime(csv_file, (1, 1))
        svc._read_inventory()
        await until(lambda: [e for e in emit.events if e.data.get("asset") == "vr-01"], "vr-01 announced")
        caplog.set_level(logging.ERROR)
        csv_file.unlink()
        svc._read_inventory()
        assert svc.status()["inventory"] == 2 and "No such file" in svc.status()["inventory_error"]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_an_identity_learnt_while_its_asset_record_is_being_sent_is_sent_too(tmp_path: Path) -> None:
    """The demo's second PJLink board answered its first poll while its first ``asset`` record was being
    committed: the identity must not be lost (it was, when the pending mark was cleared after the commit)."""
    svc, emit = service(tmp_path), FakeEmit(delay_s=0.05)
    task = asyncio.create_task(svc.run(emit))
    try:
        await until(lambda: len(emit.called_at) == 2, "the projector's asset record on its way")  # sorted: 2nd
        svc.stage(event(ms("2026-03-02", "08:00"), "device_info", {"make": "Panel", "model": "IFP-75",
                                                                   "serial": "SN1"}))
        await until(lambda: [e for e in emit.events if e.type == "asset" and e.data.get("serial") == "SN1"],
                    "the identity announced")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
