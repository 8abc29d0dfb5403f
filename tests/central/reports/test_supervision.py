"""``edugate report supervision``: from a real store and event store fed by a real ingest worker; its figures are
the open API's for the same period."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from edugate.central.api import keys
from edugate.central.api.app import Sources, build_api
from edugate.cli.main import app as edugate
from edugate.simulators.servers import Mosquitto, VictoriaMetrics
from tests.central.api import DISTRICTS, HEALTH_S, PSEUDONYMS, TZ, feed_city


def test_supervision_report_matches_the_api(tmp_path: Path, mosquitto: Mosquitto, victoria: VictoriaMetrics) -> None:
    feed_city(mosquitto, victoria.url, tmp_path / "events.sqlite")
    config = tmp_path / "central.yaml"
    config.write_text(yaml.safe_dump({
        "store": {"url": victoria.url}, "events": {"db": "events.sqlite"}, "pages": {"timezone": TZ},
        "api": {"keys_file": "api-keys.json", "districts": DISTRICTS, "health_interval_s": HEALTH_S}}))
    out = tmp_path / "reports"
    result = CliRunner().invoke(edugate, ["report", "supervision", "--period", "2026-H2", "--config", str(config),
                                          "--output-dir", str(out), "--json"])
    assert result.exit_code == 0, result.output
    html = (out / "supervision-2026-H2.html").read_text()
    assert "Supervision report 2026-H2" in html and "period in progress" in html  # 2026-H2 ends on 1 January
    assert "school-a" in html and "district-1" in html
    assert html.count('class="suppressed">&lt;5</td>') >= 3  # school-b's and school-c's taps, district-2's
    assert not any(p in html for p in PSEUDONYMS) and "gw-a" not in html
    report = json.loads((out / "supervision-2026-H2.json").read_text())
    assert report["complete"] is False

    key = keys.add(tmp_path / "api-keys.json", "auditor")
    from edugate.central.cli_common import central_config_or_exit

    cfg = central_config_or_exit(config)
    client = TestClient(build_api(Sources(cfg.store.url, cfg.events.db, TZ, cfg.api), cfg.api.keys_file))
    api = client.get("/api/v1/figures", params={"period": "2026-H2", "page_size": 1000},
                     headers={"X-API-Key": key}).json()

    def figures(items: list[dict]) -> list[tuple]:
        return [(r["level"], r["area"], r["indicator"], r["value"], r["status"]) for r in items]

    assert figures(report["items"]) == figures(api["items"])
    taps = {(r["area"]): r["value"] for r in report["items"] if r["indicator"] == "attendance_taps"}
    assert taps == {"city": 105, "district-1": 105, "district-2": None, "school-a": 100, "school-b": None,
                    "school-c": None}

    pytest.importorskip("openpyxl")
    import openpyxl

    book = openpyxl.load_workbook(out / "supervision-2026-H2.xlsx")
    assert book.sheetnames == ["city", "district", "school", "about"]
    sheet = [list(r) for r in book["school"].iter_rows(values_only=True)]
    assert sheet[0][:3] == ["school", "district", "attendance_taps (taps)"]
    assert [r[:3] for r in sheet[1:]] == [["school-a", "district-1", 100], ["school-b", "district-1", "<5"],
                                         ["school-c", "district-2", "<5"]]


def test_bad_period_says_so(tmp_path: Path) -> None:
    result = CliRunner().invoke(edugate, ["report", "supervision", "--period", "2026-H3", "-o", str(tmp_path)])
    assert result.exit_code == 2 and "use YYYY-MM-DD" in result.output
