"""Property-based checks of both apps against their own OpenAPI schema (schemathesis + hypothesis), logged in.

Every operation gets generated inputs, valid and invalid; a response must be documented, match its declared
schema and content type, and never be a server error. ``/api/live`` (an endless event stream) is checked by
the browser tests instead.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from schemathesis.schemas import BaseSchema

from edugate.simulators.servers import VictoriaMetrics
from tests.web.fakes import central_app, gateway_app

_TMP = Path(tempfile.mkdtemp(prefix="edugate-openapi-"))
GATEWAY, _, _ = gateway_app(_TMP)
CENTRAL, CENTRAL_STATE = central_app(_TMP, "http://127.0.0.1:9")  # the store URL is set by the fixture below


def _schema(app: FastAPI) -> BaseSchema:
    # /logout revokes the one session every case uses (tests/web/test_login_security.py tests it)
    schema = schemathesis.openapi.from_dict(app.openapi()).exclude(path="/api/live").exclude(path="/logout")
    schema.app = app
    return schema


def _login(app: FastAPI) -> dict[str, str]:
    client = TestClient(app, follow_redirects=False)
    answer = client.post("/login", data={"username": "alice", "password": "alice-admin-pw-1", "next": "/"})
    cookie = "; ".join(f"{k}={v}" for k, v in answer.cookies.items())
    html = client.get("/status" if "gateway" in app.title else "/fleet", headers={"Cookie": cookie}).text
    token = html.split('name="csrf-token" content="')[1].split('"')[0]
    return {"Cookie": cookie, "X-CSRF-Token": token}


gateway_schema = _schema(GATEWAY)
central_schema = _schema(CENTRAL)
# Starlette answers a method no route of a path takes (OPTIONS /login) with the Allow header of the first route
# of that path only (GET, not GET and POST); browsers never send those, so that one check is left out.
EXCLUDED = [schemathesis.checks.allow_header_conformance]
PROFILE = settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VictoriaMetrics]:
    vm = VictoriaMetrics(tmp_path_factory.mktemp("openapi-vm"))
    vm.start()
    CENTRAL_STATE.store.url = vm.url
    yield vm
    vm.stop()


@pytest.fixture(scope="module")
def gateway_session() -> dict[str, str]:
    return _login(GATEWAY)


@pytest.fixture(scope="module")
def central_session() -> dict[str, str]:
    return _login(CENTRAL)


@gateway_schema.parametrize()
@PROFILE
def test_gateway_api(case: schemathesis.Case, gateway_session: dict[str, str]) -> None:
    case.call_and_validate(headers=gateway_session, excluded_checks=EXCLUDED)


@central_schema.parametrize()
@PROFILE
def test_central_api(case: schemathesis.Case, store: VictoriaMetrics,
                     central_session: dict[str, str]) -> None:
    case.call_and_validate(headers=central_session, excluded_checks=EXCLUDED)
