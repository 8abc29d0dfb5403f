"""The operations centre as ``edugate demo`` runs it: central.yaml and a key written, ``edugate api`` started as a
process on a free port (real HTTP), the schools' districts written to the store for the dashboards, and the
supervision report written from the same store and event store (the small city of tests/central/api, fed through
a real ingest worker). The whole demo with its API: the slow test at the end."""

from __future__ import annotations

import json
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from edugate.central.api.demo import DemoOperationsCentre
from edugate.simulators.servers import Mosquitto, VictoriaMetrics, wait_for_port
from tests.central.api import DAY, DISTRICTS, HEALTH_S, PSEUDONYMS, TZ, feed_city
from tests.helpers import wait_for
from tests.vmquery import sample_count

SCHOOLS = {school: district for district, schools in DISTRICTS.items() for school in schools}


def get(url: str, key: str | None) -> tuple[int, dict]:
    request = urllib.request.Request(url, headers={"X-API-Key": key} if key else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.fixture
def ioc(tmp_path: Path, mosquitto: Mosquitto, victoria: VictoriaMetrics) -> Iterator[DemoOperationsCentre]:
    feed_city(mosquitto, victoria.url, tmp_path / "events.sqlite")
    centre = DemoOperationsCentre(tmp_path / "central-ioc", victoria.url, tmp_path / "events.sqlite", SCHOOLS,
                                  HEALTH_S, TZ)
    centre.configure()
    log = (tmp_path / "api.log").open("wb")
    proc = subprocess.Popen(centre.argv(), stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for_port("127.0.0.1", centre.port, timeout=30, proc=proc)
        yield centre
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


def test_the_demo_api_answers_with_its_key_and_the_report_is_written(ioc: DemoOperationsCentre,
                                                                      victoria: VictoriaMetrics) -> None:
    assert get(f"{ioc.url}/api/v1/indicators", None)[0] == 401
    status, doc = get(f"{ioc.url}/api/v1/figures?period={DAY}&level=district&indicator=attendance_taps", ioc.key)
    assert status == 200, doc
    assert {r["area"]: r["value"] for r in doc["items"]} == {"district-1": 105, "district-2": None}
    # the API process writes each school's district for the Grafana dashboards
    wait_for(lambda: sample_count(victoria.url, "central_school_info") >= 3, 10, "the schools' districts")
    written = ioc.write_report(ioc.folder / "reports", "2026-11")
    assert [p.name for p in written] == ["supervision-2026-11.html", "supervision-2026-11.xlsx"]
    html = written[0].read_text()
    assert "Supervision report 2026-11" in html and "district-2" in html
    assert not any(p in html for p in PSEUDONYMS)
    assert "supervision report of the demo schools" in ioc.report_note(kept=True)
    assert "--workdir" in ioc.report_note(kept=False)


@pytest.mark.slow
def test_the_whole_demo_exposes_the_api_and_reports(tmp_path: Path) -> None:
    """``edugate demo``'s DemoSchool: its central API serves the demo schools' taps; the report is written."""
    from edugate.cli.demo import DemoSchool

    with DemoSchool(tmp_path / "demo") as demo:
        assert demo.ioc is not None
        wait_for_port("127.0.0.1", demo.ioc.port, timeout=30)
        period = "2026-H2"

        def taps() -> float | None:
            demo.check_processes()
            status, doc = get(f"{demo.ioc.url}/api/v1/figures?period={period}&level=city&indicator="
                              "attendance_taps", demo.ioc.key)
            assert status == 200, doc
            return doc["items"][0]["value"]

        wait_for(taps, 120, "the demo's attendance taps in the API (k = 5)", interval=2)
        written = demo.ioc.write_report(tmp_path / "reports", period)
        assert "demo-school" in written[0].read_text()
