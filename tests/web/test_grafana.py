"""The shipped Grafana dashboards load, point at the provisioned datasource, and every query works on
VictoriaMetrics holding what the ingest writes (queries with the dashboards' variables filled in)."""

from __future__ import annotations

import json
import re
import time
import urllib.parse
import urllib.request
from typing import Any

import pytest
import yaml

from edugate.simulators.servers import VictoriaMetrics
from tests.helpers import REPO

GRAFANA = REPO / "config" / "grafana"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))
VALUES = {"school": "thpt-a", "gateway": "gw-1", "room": ".*", "device": ".*", "__interval": "1m",
          "__rate_interval": "1m", "__range": "1h"}


def _targets(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    return [(panel["title"], target["expr"]) for panel in dashboard["panels"] for target in panel["targets"]]


def _fill(expr: str) -> str:
    return re.sub(r"\$(\w+)", lambda m: VALUES[m.group(1)], expr)


def _get(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.loads(resp.read())


def test_dashboards_are_valid_and_use_the_provisioned_datasource() -> None:
    assert [p.name for p in DASHBOARDS] == ["edugate-fleet.json", "edugate-gateway.json"]
    datasource = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "edugate.yaml").read_text())
    uid = datasource["datasources"][0]["uid"]
    assert datasource["datasources"][0]["type"] == "prometheus"
    provider = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "edugate.yaml").read_text())
    assert provider["providers"][0]["type"] == "file"
    uids = set()
    for path in DASHBOARDS:
        board = json.loads(path.read_text())
        assert board["uid"] not in uids and board["title"].startswith("EduGate")
        uids.add(board["uid"])
        ids = [panel["id"] for panel in board["panels"]]
        assert len(ids) == len(set(ids)), f"{path.name}: duplicate panel ids"
        for panel in board["panels"]:
            assert panel["datasource"]["uid"] == uid, panel["title"]
            assert panel["targets"] and all(t["datasource"]["uid"] == uid for t in panel["targets"])
            grid = panel["gridPos"]
            assert 0 <= grid["x"] and grid["x"] + grid["w"] <= 24, panel["title"]
        for variable in board["templating"]["list"]:
            assert variable["datasource"]["uid"] == uid
            assert variable["query"]["query"].startswith("label_values(")
        used = {m for _, expr in _targets(board) for m in re.findall(r"\$(\w+)", expr)}
        declared = {v["name"] for v in board["templating"]["list"]}
        assert used - {"__interval", "__rate_interval", "__range"} <= declared, path.name


@pytest.fixture
def store_with_a_gateway(victoria: VictoriaMetrics) -> VictoriaMetrics:
    now = int(time.time() * 1000)
    lines = []
    for i in range(30):  # ten minutes of what the ingest writes for one gateway
        ts = now - (30 - i) * 20_000
        lines += [f"edugate_gateway,school=thpt-a,gateway=gw-1 online=1 {ts}",
                  f"edugate,school=thpt-a,gateway=gw-1,device=_gateway outbox_records={i},outbox_events=0,"
                  f"outbox_bytes=4096,outbox_budget_bytes=268435456,devices_online=1,devices_offline=1,"
                  f"cpu_percent=2.5,rss_bytes=90000000,telemetry_thinned=0,pipeline_rejected=0,skipped_polls=0 {ts}",
                  f"edugate,school=thpt-a,gateway=gw-1,device=lab1-th,room=lab-1 temperature=22.{i % 10} {ts}"]
    lines.append(f"edugate_event,school=thpt-a,gateway=gw-1,device=bus-1,type=bus_left_onboard,alert=true "
                 f"count=1 {now - 60_000}")
    request = urllib.request.Request(f"{victoria.url}/api/v2/write?precision=ms", data="\n".join(lines).encode(),
                                     method="POST")
    urllib.request.urlopen(request, timeout=10).read()
    victoria.flush()
    return victoria


def test_every_query_runs_and_the_main_ones_find_the_gateway(store_with_a_gateway: VictoriaMetrics) -> None:
    url = store_with_a_gateway.url
    for path in DASHBOARDS:
        board = json.loads(path.read_text())
        for variable in board["templating"]["list"]:
            match = re.fullmatch(r"label_values\((.*), (\w+)\)", _fill(variable["query"]["query"]))
            assert match, variable["name"]
            answer = _get(f"{url}/api/v1/label/{match.group(2)}/values?" +
                          urllib.parse.urlencode({"match[]": match.group(1)}))
            assert answer["status"] == "success" and answer["data"], (path.name, variable["name"])
        for title, expr in _targets(board):
            answer = _get(f"{url}/api/v1/query?" + urllib.parse.urlencode({"query": _fill(expr)}))
            assert answer["status"] == "success", (path.name, title, answer)
            assert answer["data"]["result"], f"{path.name}: {title!r} finds nothing: {_fill(expr)}"
