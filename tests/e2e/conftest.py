"""Fixtures of the end-to-end tests: a central ingest worker, central's command-signing key."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from edugate.simulators.servers import Mosquitto, VictoriaMetrics
from tests.helpers import REPO, ingest_stats, wait_for


@pytest.fixture
def ingest(mosquitto: Mosquitto, victoria: VictoriaMetrics, tmp_path: Path,
           request: pytest.FixtureRequest) -> Iterator[Path]:
    """An ``edugate ingest`` worker subprocess (a plain subscription, central's single-node default; parametrize
    with a group name for a ``$share`` one, which Mosquitto does not restore after its restart) that also keeps
    the event log ``events.sqlite`` and writes its counters every 50 ms to ``ingest.stats.json`` beside its log
    (read them with ``tests.helpers.ingest_stats``); yields the path of its log."""
    group = getattr(request, "param", "")
    log_path = tmp_path / "ingest.log"
    stats_path = tmp_path / "ingest.stats.json"
    with log_path.open("wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "edugate.central.cli_ingest", "--client-id", "ingest-e2e",
                                 "--broker", mosquitto.url, "--store-url", victoria.url, "--group", group,
                                 "--events-db", str(tmp_path / "events.sqlite"),
                                 "--stats-file", str(stats_path), "--stats-interval", "0.05"],
                                stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
    # a subscription keeps nothing published before it first exists: gateways start after the worker subscribed
    wait_for(lambda: proc.poll() is not None or ingest_stats(stats_path).get("subscribed"), 30,
             "the ingest worker to subscribe")
    assert proc.poll() is None, log_path.read_text(errors="replace")
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
