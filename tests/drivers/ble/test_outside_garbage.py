"""Outside check of the BLE probe driver: random service data under a probe's address (a broken probe, or
someone imitating it) is counted, never fatal; readings the pipeline refuses are logged a few times, not once
per advertisement (a probe sending nonsense several times a second must not flood the journal)."""

from __future__ import annotations

import logging
import random
from typing import Any

import pytest

from edugate.contract.records import Item, Rejected
from edugate.drivers.base import DeviceState
from edugate.simulators.ble_probes import ATC_UUID, BTHOME_UUID, ProbeRoom, bthome_service_data
from tests.drivers.ble.test_driver import Probes, probe_config, simulated_radio  # noqa: F401 - fixture
from tests.helpers import wait_for_async

pytestmark = pytest.mark.timeout(60)
ADDRESS = "A4:C1:38:00:00:21"


async def _listening(room: ProbeRoom, run: Probes) -> None:
    """Until the driver hears its probe: a warm-up advertisement sent until it is handled."""
    driver = run.drivers["p"]

    async def heard() -> bool:
        room.send(ADDRESS, {BTHOME_UUID: bthome_service_data(ADDRESS, {"temperature": 1.0})})
        return driver.health.counters.get("adverts", 0) > 0
    await wait_for_async(heard, 10, "the driver to hear its probe", interval=0.1)
    driver.health.counters.clear()


class Refusing(Probes):
    """The pipeline refuses every reading (as it does a value out of its rules)."""

    async def emit(self, item: Item) -> dict[str, Any]:
        self.items.append(item)
        raise Rejected(f"{item.device!r}: refused by the test")  # type: ignore[union-attr]


async def test_random_service_data_is_counted_and_the_probe_still_reads() -> None:
    noise = random.Random(11)
    async with ProbeRoom("hci0", [], wait_for_listener=True) as room, Probes(probe_config("p", ADDRESS)) as run:
        await _listening(room, run)
        for i in range(300):
            uuid = BTHOME_UUID if i % 2 else ATC_UUID
            room.send(ADDRESS, {uuid: noise.randbytes(noise.randrange(0, 40))})
        driver = run.drivers["p"]
        await wait_for_async(lambda: sum(driver.health.counters.get(k, 0) for k in ("adverts", "dropped")) >= 300, 10,
                             "300 adverts handled or dropped (counted)")
        room.send(ADDRESS, {BTHOME_UUID: bthome_service_data(ADDRESS, {"temperature": 21.5})})
        await wait_for_async(lambda: any(r.values.get("temperature") == 21.5 for r in run.readings("p")), 10,
                             "a good advertisement after the noise")
        assert driver.health.state == DeviceState.ONLINE


async def test_refused_readings_are_logged_a_few_times_not_once_each(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="edugate.drivers.ble.driver")
    async with ProbeRoom("hci0", [], wait_for_listener=True) as room, Refusing(probe_config("p", ADDRESS)) as run:
        await _listening(room, run)
        for packet in range(40):  # 40 distinct packets (other temperatures): none is a repeat the driver would drop
            room.send(ADDRESS, {BTHOME_UUID: bthome_service_data(ADDRESS, {"temperature": 30 + packet / 10})})
        driver = run.drivers["p"]
        await wait_for_async(lambda: driver.health.counters.get("rejected", 0) >= 40, 10, "40 refusals counted")
    lines = [r.getMessage() for r in caplog.records if "reading rejected" in r.getMessage()]
    assert 1 <= len(lines) <= 5, f"{len(lines)} log lines for 40 refused readings"
    assert all("p " in line or line.startswith("p") for line in lines), lines
