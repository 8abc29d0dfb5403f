"""The operations centre API as an outside checker calls it: bad parameters and a broken event store give the
documented status codes and bodies (docs/api/README.md): 401, 404, 422, 503; never a 500, never a secret."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from edugate.central.api import keys as keyfile
from edugate.central.api.app import Sources, build_api
from edugate.central.config import ApiSection
from edugate.simulators.servers import VictoriaMetrics, free_port

TZ = "Asia/Ho_Chi_Minh"
SECRET = "S3cretPW"


def client(vm_url: str, tmp_path: Path, events_db: Path | None = None, events_dsn: str | None = None
           ) -> tuple[TestClient, str]:
    keys = tmp_path / "api-keys.json"
    key = keyfile.add(keys, "outside")
    api = build_api(Sources(vm_url, events_db, TZ, ApiSection(), events_dsn=events_dsn), keys)
    return TestClient(api, raise_server_exceptions=False), key


def test_an_event_log_that_is_not_one_is_a_503(victoria: VictoriaMetrics, tmp_path: Path) -> None:
    broken = tmp_path / "events.sqlite"
    broken.write_bytes(b"not an SQLite file\n" * 50)
    api, key = client(victoria.url, tmp_path, events_db=broken)
    answer = api.get("/api/v1/figures", params={"period": "2026-11-10"}, headers={"X-API-Key": key})
    assert answer.status_code == 503, answer.text
    assert answer.json() == {"detail": "the time-series store is not answering; try again later"}


def test_an_event_database_that_is_down_is_a_503_without_its_password(victoria: VictoriaMetrics,
                                                                       tmp_path: Path) -> None:
    pytest.importorskip("psycopg")
    dsn = f"postgresql://edu:{SECRET}@127.0.0.1:{free_port()}/edugate"
    api, key = client(victoria.url, tmp_path, events_dsn=dsn)
    answer = api.get("/api/v1/figures", params={"period": "2026-11-10"}, headers={"X-API-Key": key})
    assert answer.status_code == 503 and SECRET not in answer.text, answer.text


@pytest.mark.parametrize("params,headers,status,detail", [
    ({"period": "2026-11-10"}, {}, 401, "no valid X-API-Key header"),
    ({"period": "2026-11-10"}, {"X-API-Key": "eg_" + "x" * 10_000}, 401, "no valid X-API-Key header"),
    ({"period": "2026-11-10\n"}, None, 422, "period"),
    ({"period": "2026-11-10", "school": "x' OR 1=1--"}, None, 422, "school"),
    ({"period": "2026-11-10", "page_size": 10**9}, None, 422, "page_size"),
    ({"period": "2026-02-30"}, None, 404, "does not exist"),
    ({"period": "1999-01-01"}, None, 404, "nothing before 2000"),
    ({"period": "2099-01"}, None, 404, "has not begun"),
])
def test_bad_parameters_get_the_documented_answer(tmp_path: Path, params: dict, headers: dict | None, status: int,
                                                  detail: str) -> None:
    api, key = client(f"http://127.0.0.1:{free_port()}", tmp_path)
    answer = api.get("/api/v1/figures", params=params, headers={"X-API-Key": key} if headers is None else headers)
    assert answer.status_code == status, answer.text
    assert detail in str(answer.json()["detail"]), answer.text
