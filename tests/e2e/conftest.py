"""Fixtures of the end-to-end tests: a central ingest worker, central's command-signing key."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from edugate.simulators.servers import Mosquitto, VictoriaMetrics
from tests.helpers import REPO


@pytest.fixture
def ingest(mosquitto: Mosquitto, victoria: VictoriaMetrics, tmp_path: Path,
           request: pytest.FixtureRequest) -> Iterator[Path]:
    """An ``edugate ingest`` worker subprocess (shared group by default; parametrize with '' for a plain
    subscription) that also keeps the event log ``events.sqlite``; yields the path of its log."""
    group = getattr(request, "param", "edugate-ingest")
    log_path = tmp_path / "ingest.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "edugate.central.cli_ingest", "--client-id", "ingest-e2e",
                                 "--broker", mosquitto.url, "--store-url", victoria.url, "--group", group,
                                 "--events-db", str(tmp_path / "events.sqlite")],
                                stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
    yield log_path
    proc.terminate()
    proc.wait(timeout=20)


@pytest.fixture
def central_key(tmp_path: Path) -> Path:
    """Central's Ed25519 command key pair (``<path>.pem`` and ``<path>.pub.pem``)."""
    out = tmp_path / "central" / "cmd"
    out.parent.mkdir()
    subprocess.run([sys.executable, "-m", "edugate.central.command_tools", "keygen", "--out", str(out)], check=True,
                   capture_output=True, cwd=REPO)
    return out
