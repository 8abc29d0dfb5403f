"""The operations centre's Grafana dashboards (config/grafana/dashboards/operations-centre/): well formed, on the
provisioned datasource, and EVERY query (variables and panel targets) runs on a real VictoriaMetrics holding the
tests' small city, sent through a real ingest worker, and returns series; the per-district figures are the open
API's. No Grafana needed: the queries go to VictoriaMetrics' Prometheus API as Grafana would send them."""

from __future__ import annotations

import json
import re
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edugate.central.config import StoreSection
from edugate.central.indicators import areas
from edugate.simulators.servers import Mosquitto, VictoriaMetrics
from tests.central import Publisher, topic
from tests.central.api import DISTRICTS, HEALTH_S, T0, _event, feed_city, running_worker
from tests.helpers import REPO, wait_for
from tests.vmquery import sample_count

GRAFANA = REPO / "config" / "grafana"
DASHBOARDS = sorted((GRAFANA / "dashboards" / "operations-centre").glob("*.json"))
DAY_MS = 86_400_000
END_S = (T0 + DAY_MS) / 1000 - 0.001  # the demo day's last millisecond: a dashboard range of that day
ALARMS = 6


def variables(district: str) -> dict[str, str]:
    return {"district": district, "school": ".*", "k": "5", "health_interval_s": str(int(HEALTH_S)),
            "__range": "1d", "__range_s": "86400", "__interval": "1d", "__rate_interval": "1d"}


def fill(expr: str, values: dict[str, str]) -> str:
    return re.sub(r"\$(\w+)", lambda m: values[m.group(1)], expr)


def get(url: str, path: str, **params: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{url}{path}?{urllib.parse.urlencode(params)}", timeout=10) as resp:
        answer: dict[str, Any] = json.loads(resp.read())
    assert answer["status"] == "success", answer
    return answer


def targets(board: dict[str, Any]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    for panel in board["panels"]:
        for target in panel["targets"]:
            yield panel, target


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("ioc-grafana")
    broker, vm = Mosquitto(tmp / "mosquitto"), VictoriaMetrics(tmp / "victoria")
    broker.start()
    vm.start()
    try:
        feed_city(broker, vm.url, tmp / "events.sqlite")
        # the city has no gate alarm and only a class of one's attendance summary: school-a's too
        with running_worker(broker, vm.url, tmp / "events.sqlite"):
            publisher = Publisher(broker.host, broker.port, "pub-more")
            publisher.publish(topic("school-a", "gw-a", "event"), [
                _event(90_000 + i, T0 + 15 * 3600_000 + i, "gate_alarm", {"reason": "not_loaned"}, "gate-1")
                for i in range(ALARMS)] + [
                _event(91_000 + i, T0 + (8 + i) * 3600_000, "attendance_summary",
                       {"date": "2026-11-10", "period": f"p{i + 1}", "present": 28, "late": 1}) for i in range(3)])
            publisher.close()
            wait_for(lambda: sample_count(vm.url, 'edugate_event_count{type=~"gate_alarm|attendance_summary"}')
                     == ALARMS + 4, 20, "the gate alarms and summaries in the store")
        assert areas.write(StoreSection(url=vm.url), DISTRICTS, T0 + 12 * 3600_000) == 3
        vm.flush()
        yield vm.url
    finally:
        vm.stop()
        broker.stop()


def test_dashboards_are_valid_and_use_the_provisioned_datasource() -> None:
    assert [p.name for p in DASHBOARDS] == ["edugate-operations-centre.json"]
    for path in DASHBOARDS:
        board = json.loads(path.read_text())
        assert board["title"].startswith("EduGate") and board["uid"]
        ids = [panel["id"] for panel in board["panels"]]
        assert len(ids) == len(set(ids)), path.name
        for panel, target in targets(board):
            assert panel["datasource"]["uid"] == target["datasource"]["uid"] == "edugate-vm", panel["title"]
            assert 0 <= panel["gridPos"]["x"] and panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24
        declared = {v["name"] for v in board["templating"]["list"]}
        used = {m for _, t in targets(board) for m in re.findall(r"\$(\w+)", t["expr"])}
        assert used - {"__range", "__range_s", "__interval", "__rate_interval"} <= declared, path.name


@pytest.mark.parametrize("district", [".*", "district-1"])
def test_every_query_runs_and_returns_series(store: str, district: str) -> None:
    values = variables(district)
    for path in DASHBOARDS:
        board = json.loads(path.read_text())
        for variable in board["templating"]["list"]:
            if variable["type"] != "query":
                continue
            match = re.fullmatch(r"label_values\((.*), (\w+)\)", fill(variable["query"]["query"], values))
            assert match, variable["name"]
            found = get(store, f"/api/v1/label/{match.group(2)}/values", **{"match[]": match.group(1)})["data"]
            assert found, (path.name, variable["name"])
        for panel, target in targets(board):
            expr = fill(target["expr"], values)
            if target.get("instant"):
                result = get(store, "/api/v1/query", query=expr, time=f"{END_S:.3f}")["data"]["result"]
            else:
                result = get(store, "/api/v1/query_range", query=expr, start=f"{END_S - 86400:.3f}",
                             end=f"{END_S + 86400:.3f}", step="86400")["data"]["result"]
            assert result, f"{path.name}: {panel['title']!r} ({target['refId']}) finds nothing: {expr}"


def test_district_figures_are_the_apis(store: str) -> None:
    """The same definitions as the catalogue: district-1's taps 105 (true 105), district-2's class of one not
    shown, completeness 75 % and 9.7 % (tests/central/api/test_api.py has the same numbers from the API)."""
    board = json.loads(DASHBOARDS[0].read_text())
    by_title = {panel["title"]: panel["targets"][0]["expr"] for panel in board["panels"]}

    def per_district(title: str) -> dict[str, float]:
        expr = fill(by_title[title], variables(".*"))
        result = get(store, "/api/v1/query", query=expr, time=f"{END_S:.3f}")["data"]["result"]
        return {r["metric"]["district"]: round(float(r["value"][1]), 1) for r in result}

    assert per_district("Attendance taps per district") == {"district-1": 105}
    assert per_district("Data completeness per district") == {"district-1": 75, "district-2": 9.7}
    assert per_district("Devices online per district") == {"district-1": 75, "district-2": 75}
    (table,) = [panel for panel in board["panels"] if panel["type"] == "table"]
    completeness = fill(table["targets"][-1]["expr"], variables(".*"))
    result = get(store, "/api/v1/query", query=completeness, time=f"{END_S:.3f}")["data"]["result"]
    assert {r["metric"]["school"]: (r["metric"]["district"], round(float(r["value"][1]), 1)) for r in result} == {
        "school-a": ("district-1", 50), "school-b": ("district-1", 100), "school-c": ("district-2", 9.7)}


def test_the_school_districts_series(tmp_path: Path) -> None:
    assert areas.lines({"d-2": ["s-b", "s-a"], "d-1": ["s-c"]}, 5) == [
        "central_school,district=d-1,school=s-c info=1 5", "central_school,district=d-2,school=s-a info=1 5",
        "central_school,district=d-2,school=s-b info=1 5"]
