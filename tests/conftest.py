"""Shared fixtures: real servers on free loopback ports, in a per-test directory."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from edugate.simulators.servers import Mosquitto, VictoriaMetrics
from tests.helpers import RUNNING, reap_running

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    """A private Mosquitto broker with persistence; ``.stop()`` / ``.start()`` keep its port."""
    broker = Mosquitto(tmp_path / "mosquitto")
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture
def victoria(tmp_path: Path) -> Iterator[VictoriaMetrics]:
    """A private VictoriaMetrics with deduplication (-dedup.minScrapeInterval=1ms)."""
    vm = VictoriaMetrics(tmp_path / "victoria")
    vm.start()
    yield vm
    vm.stop()


@pytest.fixture(autouse=True)
def _no_gateway_outlives_its_test() -> Iterator[None]:
    """A test that fails before its ``GatewayProcess.stop()`` would leave the gateway running (and its CPU and
    ports taken) for the rest of the run: kill it."""
    before = set(RUNNING)  # a module- or session-scoped fixture's gateways were started before this
    yield
    reap_running(keep=before)
