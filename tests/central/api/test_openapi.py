"""The open API against its own OpenAPI schema (schemathesis + hypothesis), with a key and a real (empty) store.

Every operation gets generated inputs, valid and invalid; a response must be documented, match its declared
schema and content type, and never be a server error. Without a key every operation answers 401.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings

from edugate.central.api import keys
from edugate.central.api.app import Sources, build_api
from edugate.central.config import ApiSection
from edugate.simulators.servers import VictoriaMetrics

_TMP = Path(tempfile.mkdtemp(prefix="edugate-api-openapi-"))
KEYS = _TMP / "api-keys.json"
KEY = keys.add(KEYS, "schemathesis")
SOURCES = Sources("http://127.0.0.1:9", None, "Asia/Ho_Chi_Minh",
                  ApiSection(keys_file=KEYS, rate_per_minute=100_000, districts={"district-1": ["school-a"]}))
APP = build_api(SOURCES, KEYS)
schema = schemathesis.openapi.from_dict(APP.openapi())
schema.app = APP
PROFILE = settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VictoriaMetrics]:
    vm = VictoriaMetrics(tmp_path_factory.mktemp("api-openapi-vm"))
    vm.start()
    SOURCES.store_url = vm.url
    yield vm
    vm.stop()


@schema.parametrize()
@PROFILE
def test_api_conforms_to_its_schema(case: schemathesis.Case, store: VictoriaMetrics) -> None:
    case.call_and_validate(headers={"X-API-Key": KEY})


def test_every_operation_needs_a_key(store: VictoriaMetrics) -> None:
    client = TestClient(APP)
    for path in APP.openapi()["paths"]:
        assert client.get(path, params={"period": "2026-11"}).status_code == 401
