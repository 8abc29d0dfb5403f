"""Presence rates (``presence_rate_pct``): the rule on true figures (the numerator anonymised before dividing), and
through the open API from a real store fed by a real ingest worker (the small city of tests/central/api plus
school-a's attendance summaries)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from edugate.central.api import keys
from edugate.central.api.app import Sources, build_api
from edugate.central.indicators.anonymise import Rule, rows
from edugate.central.indicators.catalogue import BY_NAME
from edugate.central.indicators.compute import Figures
from edugate.central.indicators.periods import parse_period
from edugate.simulators.servers import Mosquitto, VictoriaMetrics
from tests.central import Publisher, topic
from tests.central.api import DAY, T0, TZ, _event, central_config, feed_city, running_worker
from tests.helpers import wait_for
from tests.vmquery import sample_count

RATE = BY_NAME["presence_rate_pct"]
NOW = dt.datetime(2026, 12, 2, tzinfo=dt.UTC)
EXPECTED = {"school-a": {"room-1": 30}, "school-c": {"room-1": 1}}


def school(present: float, expected: float) -> Figures:
    figures = Figures(has_data=True)
    figures.components.update({"gateways": 1, "present_known": present, "expected_present": expected})
    return figures


def rate(items: list[dict], area: str) -> tuple[float | None, str]:
    (row,) = [r for r in items if r["area"] == area and r["indicator"] == "presence_rate_pct"]
    return row["value"], row["status"]


def test_the_numerator_is_anonymised_before_dividing() -> None:
    period = parse_period(DAY, TZ)
    items = rows({"a": school(84, 90), "b": school(3, 30), "c": school(0, 30), "d": school(2, 3),
                  "e": school(0, 0)}, {"d1": ["a", "b"], "d2": ["c", "d", "e"]}, period, NOW, Rule())
    assert rate(items, "a") == (94.4, "ok")  # 85 / 90, not the true 93.3: 84 is published as 85
    assert rate(items, "b") == (None, "suppressed")  # 3 present: hidden, and so is its rate
    assert rate(items, "c") == (0, "ok")  # nobody came
    assert rate(items, "d") == (None, "suppressed")  # a class of 3: the expected total is below k
    assert rate(items, "e") == (None, "no_data")
    assert rate(items, "d1") == (70.8, "ok")  # (84 + 3 -> 85) / 120
    assert rate(items, "city") == (58.8, "ok")  # (84 + 3 + 0 + 2 -> 90) / 153
    # every published rate x its expected total is a multiple of k: nothing finer than the counts leaks
    for area, expected in (("a", 90), ("d1", 120), ("city", 153)):
        value = rate(items, area)[0]
        assert value is not None and round(value * expected / 100) % 5 == 0


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, str]]:
    tmp = tmp_path_factory.mktemp("presence")
    broker, vm = Mosquitto(tmp / "mosquitto"), VictoriaMetrics(tmp / "victoria")
    broker.start()
    vm.start()
    try:
        feed_city(broker, vm.url, tmp / "events.sqlite")
        with running_worker(broker, vm.url, tmp / "events.sqlite"):  # school-a: 3 periods of room-1, 28 present
            publisher = Publisher(broker.host, broker.port, "pub-summaries")
            publisher.publish(topic("school-a", "gw-a", "event"), [
                _event(91_000 + i, T0 + (8 + i) * 3600_000, "attendance_summary",
                       {"date": DAY, "period": f"p{i + 1}", "present": 28, "late": 1}) for i in range(3)])
            publisher.close()
            wait_for(lambda: sample_count(vm.url, 'edugate_event_present{type="attendance_summary"}') == 4, 20,
                     "the summaries in the store")
        cfg = central_config(vm.url, tmp / "events.sqlite", tmp / "keys.json", expected_students=EXPECTED)
        key = keys.add(tmp / "keys.json", "ioc")
        yield TestClient(build_api(Sources(cfg.store.url, cfg.events.db, TZ, cfg.api), tmp / "keys.json")), key
    finally:
        vm.stop()
        broker.stop()


def test_presence_rates_through_the_api(client: tuple[TestClient, str]) -> None:
    test_client, key = client
    answer = test_client.get("/api/v1/figures", params={"period": DAY, "indicator": "presence_rate_pct"},
                             headers={"X-API-Key": key})
    assert answer.status_code == 200, answer.text
    items = answer.json()["items"]
    assert rate(items, "school-a") == (94.4, "ok")  # 84 of 3 x 30 -> 85 / 90
    assert rate(items, "school-b") == (None, "no_data")  # no room of it listed
    assert rate(items, "school-c") == (None, "suppressed")  # the class of one
    assert rate(items, "district-2") == (None, "suppressed")
    assert rate(items, "district-1") == (94.4, "ok")
    assert rate(items, "city") == (93.4, "ok")  # 84 + 1 -> 85 / 91
