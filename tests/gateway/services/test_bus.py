"""The school bus: boarding, alighting with the position, the left-on-board alert."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from edugate.contract.records import Reading
from edugate.gateway.runtime.clock import Clock
from edugate.gateway.runtime.outbox import Outbox
from edugate.gateway.runtime.pipeline import Pipeline
from edugate.gateway.services.bus import BusConfig, BusRoute
from tests.gateway.services.cards import ALICE, BOB, TZ, local, tap


async def test_bus_boarding_alighting_with_position_and_left_onboard_alert(outbox: Outbox, tmp_path: Path) -> None:
    state = tmp_path / "bus.json"
    bus = BusRoute(BusConfig(route_end_times=[dt.time(8, 0)]), TZ, state, ["bus-reader"])
    rooms = {"bus-reader": "bus-12", "bus-gps": "bus-12"}
    pipe = Pipeline(outbox, Clock("always"), rooms, rules=[bus.stage])
    await pipe.submit(Reading("bus-gps", {"lat": 10.77621, "lon": 106.70098, "fix": 1, "speed_kmh": 0}))
    board = await pipe.submit(tap("bus-reader", ALICE, "bus", "both"))
    assert board["data"].items() >= {"action": "board", "lat": 10.77621, "lon": 106.70098}.items()
    await pipe.submit(tap("bus-reader", BOB, "bus", "both"))
    await pipe.submit(Reading("bus-gps", {"lat": 10.80001, "lon": 106.71002, "fix": 1}))
    await pipe.submit(Reading("bus-gps", {"fix": 0}))  # a lost fix keeps the last good position
    alight = await pipe.submit(tap("bus-reader", ALICE, "bus", "both"))
    assert alight["data"].items() >= {"action": "alight", "lat": 10.80001}.items()
    # the gateway restarts mid-route: Bob is still on board
    bus2 = BusRoute(BusConfig(route_end_times=[dt.time(8, 0)]), TZ, state, ["bus-reader"])
    assert list(bus2.onboard) == [BOB]
    assert not bus2.due(local(7, 59)) and bus2.due(local(8, 1)) and not bus2.due(local(8, 2))
    events = bus2.end_route("scheduled")
    alerts = [e for e in events if e.type == "bus_left_onboard"]
    assert [a.data["card"] for a in alerts] == [BOB] and alerts[0].data["alert"] is True
    assert events[-1].type == "bus_route_end" and events[-1].data["left_onboard"] == 1
    for e in events:
        await pipe.submit(e)
    assert bus2.onboard == {} and BusRoute(BusConfig(), TZ, state, ["bus-reader"]).onboard == {}
