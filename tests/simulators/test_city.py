"""The simulated city, CI-sized: 50 gateways from one process through a real Mosquitto and a real ingest worker
into VictoriaMetrics; a morning tap peak, a library peak and a school outage on the way. Every sensor reading the broker
acknowledged is in the store once, and the ledger says exactly what was sent (the full city: bench/city.py)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator

import pytest

from edugate.central.ingest.worker import IngestConfig, IngestWorker
from edugate.simulators.city import City, CityPlan, missing_in_store, stored_counts
from edugate.simulators.servers import Mosquitto, VictoriaMetrics
from tests.helpers import wait_for

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def worker(mosquitto: Mosquitto, victoria: VictoriaMetrics) -> Iterator[IngestWorker]:
    ingest = IngestWorker(IngestConfig(client_id="city-ingest", broker_port=mosquitto.port, store_url=victoria.url,
                                       summary_interval_s=0))
    thread = threading.Thread(target=ingest.run, name="ingest")
    thread.start()
    assert ingest.subscribed.wait(10), "the worker did not subscribe"
    yield ingest
    ingest.stop()
    thread.join(20)


def test_fifty_gateways_with_a_tap_peak_a_library_peak_and_an_outage_lose_nothing(
        mosquitto: Mosquitto, victoria: VictoriaMetrics, worker: IngestWorker) -> None:
    plan = CityPlan(brokers=(f"127.0.0.1:{mosquitto.port}",), gateways=50, districts=5, sensors_per_gateway=2,
                    telemetry_interval_s=0.2, health_interval_s=1.0, students_per_school=20, connect_spread_s=0.5,
                    reconnect_first_s=0.1, reconnect_max_s=0.5)

    visits = 0

    async def scenario() -> City:
        nonlocal visits
        city = City(plan)
        async with city:
            await city.wait_connected(within_s=10)
            taps = city.morning_peak("d02", window_s=1.0)
            assert taps == 10 * 20
            visits = city.library_peak(visitors_per_school=10, window_s=1.0, share=0.5)
            city.outage(city.gateways[:5], 1.0)  # five schools lose their uplink: a backlog builds up
            await asyncio.sleep(0.5)
            assert city.connected_count() == 45
            await asyncio.sleep(1.5)
            await city.wait_connected(within_s=10)
            await city.wait_sent(within_s=10)
        return city

    city = asyncio.run(scenario())
    assert all(g.ledger.made == g.ledger.acked for g in city.gateways)  # nothing left unsent at the clean stop
    assert all(g.ledger.connects == (2 if g.index < 5 else 1) for g in city.gateways)
    assert sum(g.ledger.events["card_tap"] for g in city.gateways) == 200
    acked_readings = sum(n for g in city.gateways for d, n in g.ledger.telemetry.items() if d.startswith("env-"))
    assert acked_readings > 50 * 2 * 5  # at least a second of telemetry from every gateway
    wait_for(lambda: worker.stats.records >= city.acked_records(), 20, "the worker to take every record")
    missing: dict[str, int] = {}

    def all_stored() -> bool:  # the last writes may still be on their way: ask until they landed
        missing.clear()
        missing.update(missing_in_store(city, victoria.url, window_s=120))
        return not missing

    with contextlib.suppress(AssertionError, TimeoutError):
        wait_for(all_stored, 10, "every acknowledged reading in the store", interval=0.2)
    assert missing == {}, "acknowledged minus stored readings per school"
    taps = stored_counts(victoria.url, "edugate_event_count", plan.prefix, 120, 'type="card_tap"')
    assert sum(taps.values()) == 200
    loans = stored_counts(victoria.url, "edugate_event_count", plan.prefix, 120, 'type="library_loan"')
    assert sum(loans.values()) == sum(g.ledger.events["library_loan"] for g in city.gateways)
    gate_counts = stored_counts(victoria.url, "edugate_visitors_in", plan.prefix, 120)
    assert sum(gate_counts.values()) == visits == sum(g.ledger.telemetry["libgate-1"] for g in city.gateways) > 0
