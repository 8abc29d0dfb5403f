"""The open API against a real VictoriaMetrics and event store, fed by a real ingest worker over Mosquitto."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from edugate.central.api.app import Sources, build_api, openapi_document
from edugate.central.config import CentralConfig
from edugate.central.indicators.catalogue import CATALOGUE
from edugate.cli.main import app as edugate
from edugate.simulators.servers import Mosquitto, VictoriaMetrics
from tests.central.api import DAY, GATEWAYS, PSEUDONYMS, TZ, central_config, feed_city
from tests.helpers import REPO


@dataclass
class City:
    vm: VictoriaMetrics
    events_db: Path
    keys_file: Path
    key: str

    def config(self, **api: object) -> CentralConfig:
        return central_config(self.vm.url, self.events_db, self.keys_file, **api)

    def client(self, **api: object) -> TestClient:
        cfg = self.config(**api)
        return TestClient(build_api(Sources(cfg.store.url, cfg.events.db, TZ, cfg.api), self.keys_file))


def add_key(keys_file: Path, name: str) -> str:
    result = CliRunner().invoke(edugate, ["api-key", "add", name, "--keys-file", str(keys_file)])
    assert result.exit_code == 0, result.output
    return result.stdout.strip().splitlines()[0]


@pytest.fixture(scope="module")
def city(tmp_path_factory: pytest.TempPathFactory) -> Iterator[City]:
    tmp = tmp_path_factory.mktemp("ioc")
    broker, vm = Mosquitto(tmp / "mosquitto"), VictoriaMetrics(tmp / "victoria")
    broker.start()
    vm.start()
    try:
        feed_city(broker, vm.url, tmp / "events.sqlite")
        keys_file = tmp / "api-keys.json"
        yield City(vm, tmp / "events.sqlite", keys_file, add_key(keys_file, "city-ioc"))
    finally:
        vm.stop()
        broker.stop()


def figures(client: TestClient, key: str, **params: object) -> dict:
    answer = client.get("/api/v1/figures", params={"period": DAY, "page_size": 1000, **params},
                        headers={"X-API-Key": key})
    assert answer.status_code == 200, answer.text
    return answer.json()


def value(doc: dict, area: str, indicator: str) -> tuple[float | None, str]:
    (row,) = [r for r in doc["items"] if r["area"] == area and r["indicator"] == indicator]
    return row["value"], row["status"]


def test_figures_per_school_district_and_city_anonymised(city: City) -> None:
    doc = figures(city.client(), city.key)
    assert doc["k"] == 5 and doc["round_to"] == 5 and doc["total"] == len(doc["items"])
    # counts of children's actions: 102 -> 100, below k suppressed, the class of one suppressed at every level
    assert value(doc, "school-a", "attendance_taps") == (100, "ok")
    assert value(doc, "school-b", "attendance_taps") == (None, "suppressed")
    assert value(doc, "district-1", "attendance_taps") == (105, "ok")  # 105 true: a multiple of 5
    assert value(doc, "school-c", "attendance_taps") == (None, "suppressed")
    assert value(doc, "district-2", "attendance_taps") == (None, "suppressed")
    assert value(doc, "school-c", "attendance_present") == (None, "suppressed")
    assert value(doc, "district-2", "attendance_present") == (None, "suppressed")
    assert value(doc, "city", "attendance_taps") == (105, "ok")  # 106 true
    assert value(doc, "school-a", "library_visitors") == (110, "ok")  # 111 true
    assert value(doc, "school-a", "library_loans") == (5, "ok")  # 7 true
    assert value(doc, "school-b", "library_loans") == (0, "ok")
    # equipment and gateways are not personal: exact
    assert value(doc, "school-a", "alerts_raised") == (2, "ok")
    assert value(doc, "school-a", "alert_clear_minutes") == (45, "ok")  # median of 30 and 60
    assert value(doc, "school-b", "alert_clear_minutes") == (None, "no_data")
    assert value(doc, "school-a", "equipment_on_record") == (2, "ok")
    assert value(doc, "school-a", "equipment_in_use") == (1, "ok")
    assert value(doc, "school-a", "equipment_power_on_hours") == (3.5, "ok")  # the day's last usage, not 2 + 3.5
    assert value(doc, "district-1", "lab_sessions") == (1, "ok")
    assert value(doc, "school-b", "equipment_on_record") == (0, "ok")
    assert value(doc, "school-a", "data_completeness_pct") == (50, "ok")
    assert value(doc, "school-b", "data_completeness_pct") == (100, "ok")
    assert value(doc, "school-c", "data_completeness_pct") == (9.7, "ok")
    assert value(doc, "district-1", "data_completeness_pct") == (75, "ok")
    assert value(doc, "city", "data_completeness_pct") == (53.2, "ok")  # (72 + 144 + 14) / (3 x 144)
    assert value(doc, "school-a", "gateway_online_pct") == (50, "ok")
    assert value(doc, "city", "device_online_pct") == (75, "ok")
    assert {r["district"] for r in doc["items"] if r["level"] == "school"} == {"district-1", "district-2"}


def test_nothing_personal_or_technical_leaves(city: City) -> None:
    client = city.client()
    body = json.dumps(figures(client, city.key)) + figures_csv(client, city.key)
    for secret in (*PSEUDONYMS, *GATEWAYS.values(), "door-1", "desk-1", "lab1-co2", "room-1", "_gateway", "p:",
                   "teacher", "pendulum", "board-1", "proj-1"):
        assert secret not in body


def figures_csv(client: TestClient, key: str, **params: object) -> str:
    answer = client.get("/api/v1/figures", params={"period": DAY, "format": "csv", "page_size": 1000, **params},
                        headers={"X-API-Key": key})
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/csv")
    return answer.text


def test_overlapping_queries_cannot_be_differenced(city: City) -> None:
    client = city.client()
    every = figures(client, city.key)
    # a filter selects rows; it never changes a figure: the district is the same whatever the school filter
    for params in ({"school": "school-a"}, {"district": "district-1"}, {"level": "district"},
                   {"indicator": "attendance_taps"}):
        for row in figures(client, city.key, **params)["items"]:
            assert row in every["items"]
    # every published count of children's actions is a multiple of k: no sum or difference of them is 1..k-1
    for row in every["items"]:
        if row["unit"] in ("taps", "student-periods", "visits", "loans", "alarms") and row["value"] is not None:
            assert row["value"] % 5 == 0, row
    district = value(every, "district-1", "attendance_taps")[0]
    school_a = value(every, "school-a", "attendance_taps")[0]
    assert district is not None and school_a is not None and district - school_a != 3  # school-b's true count
    # the week and the month holding the day: the same rule, so week - day never gives school-b's 3 either
    week = figures(client, city.key, period="2026-W46", school="school-b", indicator="attendance_taps")
    assert week["items"][0]["status"] == "suppressed"


def test_paging_csv_and_filters(city: City) -> None:
    client = city.client()
    whole = figures(client, city.key)
    first = figures(client, city.key, page_size=7)
    second = figures(client, city.key, page_size=7, page=2)
    assert first["total"] == whole["total"] and first["items"] + second["items"] == whole["items"][:14]
    rows = list(csv.DictReader(io.StringIO(figures_csv(client, city.key, level="school", school="school-a"))))
    assert {r["area"] for r in rows} == {"school-a"} and len(rows) == len(CATALOGUE)
    assert {r["indicator"]: r["value"] for r in rows}["attendance_taps"] == "100.0"
    only = figures(client, city.key, district="district-2", level="school")
    assert {r["area"] for r in only["items"]} == {"school-c"}


def test_keys_and_rate_limit(city: City, tmp_path: Path) -> None:
    client = city.client(rate_per_minute=3)
    assert client.get("/api/v1/indicators").status_code == 401
    assert client.get("/api/v1/indicators", headers={"X-API-Key": "eg_wrong"}).status_code == 401
    statuses = [client.get("/api/v1/indicators", headers={"X-API-Key": city.key}).status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    limited = client.get("/api/v1/indicators", headers={"X-API-Key": city.key})
    assert limited.status_code == 429 and int(limited.headers["Retry-After"]) >= 1
    other = add_key(city.keys_file, "open-data")  # another consumer has its own bucket; keys reload on change
    assert client.get("/api/v1/indicators", headers={"X-API-Key": other}).status_code == 200
    assert json.loads(city.keys_file.read_text())["keys"]["open-data"]["sha256"] != other  # stored hashed only
    assert other not in city.keys_file.read_text()
    listed = CliRunner().invoke(edugate, ["api-key", "list", "--keys-file", str(city.keys_file)])
    assert [line.split("\t")[0] for line in listed.stdout.splitlines()] == ["city-ioc", "open-data"]
    removed = CliRunner().invoke(edugate, ["api-key", "remove", "open-data", "--keys-file", str(city.keys_file)])
    assert removed.exit_code == 0
    assert client.get("/api/v1/indicators", headers={"X-API-Key": other}).status_code == 401


def test_bad_period_and_store_down(city: City, tmp_path: Path) -> None:
    client = city.client()
    for period, words in (("2026-02-30", "does not exist"), ("2099-01", "has not begun"), ("1999-H1", "before")):
        answer = client.get("/api/v1/figures", params={"period": period}, headers={"X-API-Key": city.key})
        assert answer.status_code == 404 and words in answer.json()["detail"], answer.text
    cfg = central_config("http://127.0.0.1:9", city.events_db, city.keys_file)
    down = TestClient(build_api(Sources(cfg.store.url, None, TZ, cfg.api), city.keys_file))
    answer = down.get("/api/v1/figures", params={"period": DAY}, headers={"X-API-Key": city.key})
    assert answer.status_code == 503 and "not answering" in answer.json()["detail"]


def test_published_openapi_document_is_current() -> None:
    published = json.loads((REPO / "docs/api/openapi.json").read_text())
    assert published == openapi_document(), "run: python -m edugate.central.api.app --openapi > docs/api/openapi.json"


def test_event_store_missing_is_a_clear_503(city: City, tmp_path: Path) -> None:
    cfg = central_config(city.vm.url, tmp_path / "nowhere.sqlite", city.keys_file)
    client = TestClient(build_api(Sources(cfg.store.url, cfg.events.db, TZ, cfg.api), city.keys_file))
    answer = client.get("/api/v1/figures", params={"period": DAY}, headers={"X-API-Key": city.key})
    assert answer.status_code == 503 and not (tmp_path / "nowhere.sqlite").exists()
    config = tmp_path / "central.yaml"
    config.write_text(f"store: {{url: '{city.vm.url}'}}\nevents: {{db: nowhere.sqlite}}\n")
    result = CliRunner().invoke(edugate, ["report", "supervision", "--period", DAY, "-c", str(config),
                                          "-o", str(tmp_path)])
    assert result.exit_code == 2 and "nowhere.sqlite: no such file" in result.output


def test_the_shared_postgresql_event_database_gives_the_same_figures(city: City) -> None:
    """central.yaml events.postgres_dsn (the city-scale event database) instead of the SQLite file."""
    try:
        from edugate.central.eventstore_pg import PgEventStore
        from edugate.simulators.postgres import Postgres, pg_bindir
        pg_bindir()
    except (ImportError, FileNotFoundError) as exc:
        pytest.skip(f"PostgreSQL or psycopg missing: {exc}")
    from edugate.central.eventstore import EventStore

    server = Postgres().start()
    try:
        sqlite, pg = EventStore(city.events_db), PgEventStore(server.dsn)
        for ev in sqlite.query(limit=100_000):
            record = {k: ev[k] for k in ("seq", "ts", "device", "room", "type", "data")} | {"kind": "event"}
            pg.add(ev["school"], ev["gateway"], [record])
        sqlite.close()
        pg.close()
        cfg = city.config()
        from_pg = TestClient(build_api(Sources(cfg.store.url, None, TZ, cfg.api, server.dsn), city.keys_file))
        assert figures(from_pg, city.key)["items"] == figures(city.client(), city.key)["items"]
        assert value(figures(from_pg, city.key), "school-a", "alert_clear_minutes") == (45, "ok")
    finally:
        server.cleanup()
