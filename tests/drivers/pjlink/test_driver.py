"""The PJLink driver against the simulated projector over real TCP: polling, identity, commands, password,
garbled answers, a vanished and a mute device, class 2 notifications."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from edugate.contract.records import Event, Reading
from edugate.drivers.base import CommandError, DeviceState
from edugate.drivers.pjlink.driver import PJLinkConfig, PJLinkDriver
from edugate.simulators.pjlink import PJLinkSimulator, ProjectorState
from edugate.simulators.servers import free_port
from tests.drivers.fakes import FakeEmit, until


@asynccontextmanager
async def running(port: int, tmp_path: Path, password: str | None = None,
                  **options: object) -> AsyncIterator[tuple[PJLinkDriver, FakeEmit]]:
    cfg: dict[str, object] = {"id": "proj-101", "driver": "pjlink", "room": "room-101", "host": "127.0.0.1",
                              "port": port, "poll_interval_s": 1, "timeout_s": 1, "reconnect_max_s": 1, **options}
    if password is not None:
        (tmp_path / "pjlink.pass").write_text(password + "\n")
        cfg["password_file"] = str(tmp_path / "pjlink.pass")
    driver, emit = PJLinkDriver(PJLinkConfig.model_validate(cfg)), FakeEmit()
    task = asyncio.create_task(driver.run(emit))
    try:
        yield driver, emit
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await driver.close()
    assert driver.health.state is DeviceState.STOPPED


def readings(emit: FakeEmit) -> list[dict]:
    return [dict(r.values) for _, r in emit.readings]


async def test_status_identity_and_commands_with_a_password(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with PJLinkSimulator(password="sesame", hours_per_s=100.0) as sim, \
            running(sim.port, tmp_path, "sesame") as (driver, emit):
        info = await emit.next()
        assert isinstance(info, Event) and info.type == "device_info"
        assert info.data == {"protocol": "pjlink", "host": "127.0.0.1", "pjlink_class": 2, "make": "EduSim",
                             "model": "PJ-2000 WXGA", "info": "laser-free test projector", "name": "room-101",
                             "serial": "SN4352000123", "firmware": "1.04"}
        first = await emit.next()
        assert isinstance(first, Reading)
        assert first.values == {"power": 0, "power_on": False, "video_mute": False, "audio_mute": False,
                                "error_fan": 0, "error_lamp": 0, "error_temperature": 0, "error_cover": 0,
                                "error_filter": 0, "error_other": 0, "errors": 0, "lamp_hours": 1200,
                                "lamp_on": False, "filter_hours": 310}
        assert driver.health.state is DeviceState.ONLINE
        assert driver.health.counters.get("unanswered.INPT") == 1  # ERR3: no input while off
        assert await driver.command("power", {"value": "on"}) == {"command": "power", "value": "on", "result": "OK"}
        await until(lambda: any(r.get("power_on") for r in readings(emit)), "a reading with the power on")
        assert await driver.command("input", {"value": "51"}) == {"command": "input", "value": "51", "result": "OK"}
        await until(lambda: readings(emit)[-1].get("input") == "51", "the new input in a reading")
        await until(lambda: readings(emit)[-1]["lamp_hours"] > 1200, "lamp hours counting while on")
        with pytest.raises(CommandError, match=r"refused input 19: ERR2 \(out of parameter\)"):
            await driver.command("input", {"value": "19"})
        with pytest.raises(CommandError, match="power takes 'on' or 'off'"):
            await driver.command("power", {"value": "standby"})
        with pytest.raises(CommandError, match="accepts the commands power and input"):
            await driver.command("freeze", {})
        assert [e.type for e in emit.events] == ["device_info"]  # the identity did not change: sent once
    assert sim.auth_failures == 0
    assert "sesame" not in caplog.text


async def test_a_wrong_password_is_clear_counted_and_recovers(tmp_path: Path,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    async with PJLinkSimulator(password="sesame") as sim, running(sim.port, tmp_path, "open-up") as (driver, emit):
        await until(lambda: driver.health.counters.get("auth_failures", 0) >= 2, "two refused logins")
        assert driver.health.state is DeviceState.OFFLINE
        assert "wrong PJLink password (the device answered PJLINK ERRA)" in (driver.health.last_error or "")
        assert not emit.items and sim.auth_failures >= 2
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "PJLINK ERRA" in r.message]
        assert len(warnings) == 1  # one warning per outage and cause
        (tmp_path / "pjlink.pass").write_text("sesame\n")  # IT staff fix the file: no restart needed
        await until(lambda: emit.readings, "a reading once the password is right", within_s=5)
        assert driver.health.state is DeviceState.ONLINE
    assert "open-up" not in caplog.text and "sesame" not in caplog.text


async def test_no_password_configured_says_so(tmp_path: Path) -> None:
    async with PJLinkSimulator(password="sesame") as sim, running(sim.port, tmp_path) as (driver, _):
        await until(lambda: driver.health.counters.get("auth_failures"), "a refused login")
        assert "asks for a PJLink password and none is configured (password_file)" in (driver.health.last_error or "")


async def test_garbled_answers_are_counted_and_polling_goes_on(tmp_path: Path,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    async with PJLinkSimulator() as sim, running(sim.port, tmp_path) as (driver, emit):
        await until(lambda: emit.readings, "a first reading")
        sim.garble(1)
        await until(lambda: driver.health.counters.get("garbled"), "the garbled answer counted")
        assert "garbled PJLink answer" in (driver.health.last_error or "")
        n = len(emit.readings)
        await until(lambda: len(emit.readings) > n, "readings again after the garbage")
        assert driver.health.state is DeviceState.ONLINE
    assert any("garbled PJLink answer '%1P\\\\x8fWR" in r.message for r in caplog.records)


async def test_a_vanished_device_goes_offline_once_and_comes_back(tmp_path: Path,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    port = free_port()
    sim = PJLinkSimulator(port=port)
    await sim.start()
    try:
        async with running(port, tmp_path) as (driver, emit):
            await until(lambda: emit.readings, "a first reading")
            await sim.stop()
            await until(lambda: driver.health.state is DeviceState.OFFLINE, "the device offline")
            assert "connection refused" in (driver.health.last_error or "")
            assert driver.health.counters["outages"] == 1
            await sim.start()
            n = len(emit.readings)
            await until(lambda: len(emit.readings) > n, "readings after the device is back", within_s=6)
            assert driver.health.state is DeviceState.ONLINE
            # after an outage the driver asks again who the device is; unchanged: no second device_info
            assert [e.type for e in emit.events] == ["device_info"]
    finally:
        await sim.stop()
    assert sum("connection refused" in r.message and r.levelno == logging.WARNING for r in caplog.records) == 1
    assert any("back online after" in r.message for r in caplog.records)


async def test_a_mute_device_times_out(tmp_path: Path) -> None:
    async with PJLinkSimulator() as sim, running(sim.port, tmp_path) as (driver, emit):
        sim.silent = True
        await until(lambda: driver.health.state is DeviceState.OFFLINE, "the silent device offline")
        assert "no answer (no greeting within 1 s)" in (driver.health.last_error or "")
        sim.silent = False
        await until(lambda: emit.readings, "readings once it answers", within_s=6)


async def test_a_flat_panel_without_lamp_and_class_1(tmp_path: Path) -> None:
    state = ProjectorState(lamp=False, make="Panel", model="IFP-75", power=1)
    async with PJLinkSimulator(pjlink_class=1, state=state) as sim, running(sim.port, tmp_path) as (driver, emit):
        info = await emit.next()
        assert isinstance(info, Event) and info.data["pjlink_class"] == 1
        assert "serial" not in info.data and "firmware" not in info.data  # class 2 queries are not sent
        reading = await emit.next()
        assert isinstance(reading, Reading)
        assert "lamp_hours" not in reading.values and "filter_hours" not in reading.values
        assert reading.values["input"] == "31" and reading.values["power_on"] is True
        assert driver.health.counters["unanswered.LAMP"] == 1
    assert "SNUM" not in sim.commands and "FILT" not in sim.commands


async def test_a_device_failure_is_counted_but_status_goes_on(tmp_path: Path) -> None:
    state = ProjectorState(errors="020000", refuse={"AVMT": "ERR4"})
    async with PJLinkSimulator(state=state) as sim, running(sim.port, tmp_path) as (driver, emit):
        await emit.next()
        reading = await emit.next()
        assert isinstance(reading, Reading) and reading.values["error_lamp"] == 2 and reading.values["errors"] == 2
        assert "video_mute" not in reading.values
        assert driver.health.counters["device_errors"] >= 1
        assert "AVMT: ERR4 (projector/display failure)" in (driver.health.last_error or "")
        assert sim.connections >= 1


async def test_class_2_notifications_trigger_a_poll(tmp_path: Path) -> None:
    notify = free_port()
    async with PJLinkSimulator(notify_port=notify) as sim, \
            running(sim.port, tmp_path, poll_interval_s=600, notify_port=notify) as (driver, emit):
        await until(lambda: emit.readings, "a first reading")
        sim.set_power(True)  # the remote control: the device notifies the controller
        await until(lambda: readings(emit)[-1]["power_on"] is True, "a reading at once, not after 600 s")
        assert driver.health.counters["notifications"] == 1
