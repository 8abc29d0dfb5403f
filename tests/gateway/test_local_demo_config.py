"""``config/local-demo.yaml``, the README's quick start, runs as shipped: no hardware, TLS or remote broker, its
data beside the checkout (issue 13, item 10)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from edugate.gateway.config import load_config
from edugate.simulators.servers import Mosquitto
from tests.helpers import REPO, Collector, wait_for

SHIPPED = REPO / "config" / "local-demo.yaml"


def test_everything_it_names_is_local() -> None:
    cfg = load_config(SHIPPED)
    assert cfg.uplink.broker_list == ["127.0.0.1:1883"] and cfg.uplink.tls is None
    assert cfg.storage.path == REPO / "var" / "local-demo" / "outbox.sqlite"  # /var/ is in .gitignore
    assert cfg.privacy.secret_file.parent == cfg.storage.path.parent
    assert {d.driver for d in cfg.devices} == {"synthetic"}
    assert "/etc/" not in SHIPPED.read_text() and "/var/lib" not in SHIPPED.read_text()


def test_it_runs_and_delivers(mosquitto: Mosquitto, tmp_path: Path) -> None:
    (tmp_path / "config").mkdir()
    config = tmp_path / "config" / "local-demo.yaml"  # a copy, so that its data lands in tmp_path/var
    text = SHIPPED.read_text()
    assert text.count("port: 1883") == 1
    config.write_text(text.replace("port: 1883", f"port: {mosquitto.port}"))
    collector = Collector(mosquitto.port).start()
    with (tmp_path / "gw.log").open("wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "edugate.cli.main", "run", str(config)], stdout=log,
                                stderr=subprocess.STDOUT, cwd=REPO, env=os.environ.copy())
    try:
        wait_for(lambda: {"sim-th", "sim-events"} <= {r["device"] for r in collector.records["telemetry"]}, 30,
                 "readings of both devices at the broker")
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, (tmp_path / "gw.log").read_text()
        collector.stop()
    assert (tmp_path / "var" / "local-demo" / "outbox.sqlite").exists()
    assert collector.states[0]["school"] == "local-school"
