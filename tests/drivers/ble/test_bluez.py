"""The probes through bleak's real BlueZ backend: D-Bus signals, as bluetoothd sends them, on a private
``dbus-daemon``. Only bluetoothd and the radio are replaced (``simulators.ble_probes.FakeBlueZ``)."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from edugate.contract.records import Reading
from edugate.drivers.base import DeviceState
from edugate.drivers.ble.scanner import scanners, use_backend
from edugate.simulators.ble_probes import FakeBlueZ, Probe, ProbeRoom
from tests.drivers.ble.test_driver import KEY, Probes, probe_config
from tests.helpers import wait_for_async

pytestmark = pytest.mark.timeout(60)

BUS_CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"""


@pytest.fixture
def system_bus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A private dbus-daemon, made the system bus of this process (where bleak looks for BlueZ)."""
    daemon = shutil.which("dbus-daemon")
    if daemon is None:
        pytest.skip("dbus-daemon is not installed (Debian package dbus-daemon)")
    config = tmp_path / "bus.conf"
    config.write_text(BUS_CONFIG.format(socket=tmp_path / "bus.sock"))
    proc = subprocess.Popen([daemon, "--config-file", str(config), "--nofork", "--print-address"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert proc.stdout is not None
    address = proc.stdout.readline().decode().strip()
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", address)
    previous = use_backend(None)  # bleak's own BlueZ backend
    yield address
    use_backend(previous)
    proc.terminate()
    proc.wait(timeout=10)


async def test_probes_heard_through_bleaks_bluez_backend_once_bluez_runs(system_bus: str) -> None:
    fridge = Probe("A4:C1:38:40:00:01", values={"temperature": 4.0, "humidity": 41.0, "battery": 80},
                   interval_s=0.1, repeats=3)
    incubator = Probe("A4:C1:38:40:00:02", values={"temperature": 37.0, "battery": 90}, bind_key=KEY,
                      interval_s=0.1, repeats=2)
    bench = Probe("A4:C1:38:40:00:03", "atc1441", interval_s=0.1, repeats=2)
    async with ProbeRoom("hci0", [fridge, incubator, bench], others_per_s=100) as room, Probes(
            probe_config("fridge", fridge.address), probe_config("incubator", incubator.address, bind_key=KEY.hex()),
            probe_config("bench", bench.address)) as run:
        # bluetoothd not running yet: every probe says so, with what to do
        await wait_for_async(lambda: all(d.health.state == DeviceState.OFFLINE for d in run.drivers.values()), 10,
                             "offline without BlueZ")
        assert run.drivers["fridge"].health.last_error == (
            "fridge (A4:C1:38:40:00:01): Bluetooth adapter hci0 cannot scan: org.freedesktop.DBus.Error."
            "ServiceUnknown (BlueZ is not running: apt install bluez; systemctl enable --now bluetooth); retrying")
        bluez = await FakeBlueZ(system_bus).start()
        room.add_bluez(bluez)
        try:
            await wait_for_async(lambda: all(len(run.readings(d)) >= 6 for d in run.drivers), 20,
                                 "6 readings of each probe through D-Bus")
            assert bluez.discovering == 1 and bluez.calls.count("StartDiscovery") == 1, bluez.calls
            [shared] = scanners().values()
            assert shared.stats.others > 0 and shared.stats.scan_starts == 1
            states = {d.health.state for d in run.drivers.values()}
        finally:
            room.bluez.remove(bluez)
    assert states == {DeviceState.ONLINE}
    for device, probe in (("fridge", fridge), ("incubator", incubator), ("bench", bench)):
        got: list[Reading] = run.readings(device)
        sent = [p["temperature"] for p in probe.sent_packets]  # from the start, while BlueZ was not running too
        heard = [r.values["temperature"] for r in got]
        # each packet once, in order, none lost: a run of consecutive packets the probe sent
        assert any(sent[i:i + len(heard)] == heard for i in range(len(sent))), (heard, sent)
        # BlueZ signals each repeat (RSSI changed): counted once. The first packet may have begun before
        # discovery started and the last one's repeats may come after the stop: (len - 2) full packets at least
        assert run.drivers[device].health.counters["duplicates"] >= (len(got) - 2) * (probe.repeats - 1)
    await wait_for_async(lambda: "StopDiscovery" in bluez.calls, 10, "the scan stopped with the last probe")
    bluez.stop()
