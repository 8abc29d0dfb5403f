"""``edugate run --log-level DEBUG`` is EduGate's debug log, not pymodbus's wire dumps: third-party libraries stay
at INFO unless ``--library-log-level`` asks for more (issue 13, item 12)."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from edugate.simulators.servers import free_port
from tests.helpers import REPO, outbox_ready, outbox_state, wait_for


@pytest.fixture
def modbus_port(tmp_path: Path):
    port = free_port()
    with (tmp_path / "modbus.log").open("wb") as log:
        sim = subprocess.Popen([sys.executable, "-m", "edugate.simulators.modbus", "--port", str(port),
                                "--units", "1", "--profile", "lab-th"], stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
    yield port
    sim.terminate()
    sim.wait(10)


def committed(outbox: Path) -> int:
    """Records the outbox has committed so far (0 while it is being created)."""
    try:
        return outbox_state(outbox)[0] - 1 if outbox_ready(outbox) else 0
    except sqlite3.OperationalError:  # its tables are still being made, or a write holds the lock
        return 0


def run_gateway(tmp_path: Path, modbus_port: int, *options: str) -> str:
    """Run a gateway polling the simulated Modbus sensor until 10 readings are committed; return its log."""
    work = tmp_path / ("gw" + "".join(o.strip("-") for o in options))
    work.mkdir()
    config = {"school": "s", "gateway": "g", "uplink": {"port": free_port()},  # no broker: not needed here
              "storage": {"path": str(work / "outbox.sqlite")}, "privacy": {"secret_file": str(work / "school.key")},
              "devices": [{"id": "th", "driver": "modbus", "host": "127.0.0.1", "port": modbus_port, "unit": 1,
                           "profile": "lab-th", "poll_interval_s": 0.05}]}
    (work / "gw.yaml").write_text(yaml.safe_dump(config))
    with (work / "gw.log").open("wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "edugate.cli.main", "run", str(work / "gw.yaml"), *options],
                                stdout=log, stderr=subprocess.STDOUT, cwd=REPO, env=os.environ.copy())
    try:
        wait_for(lambda: committed(work / "outbox.sqlite") > 10, 30, "10 readings committed")
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    return (work / "gw.log").read_text()


def test_debug_is_edugates_debug_not_the_libraries(tmp_path: Path, modbus_port: int) -> None:
    log = run_gateway(tmp_path, modbus_port, "--log-level", "DEBUG")
    assert not [line for line in log.splitlines() if " pymodbus" in line], log  # the next test is the control
    assert "gateway stopped" in log


def test_library_debug_when_asked(tmp_path: Path, modbus_port: int) -> None:
    log = run_gateway(tmp_path, modbus_port, "--log-level", "DEBUG", "--library-log-level", "DEBUG")
    assert len([line for line in log.splitlines() if " DEBUG   pymodbus" in line]) > 10, log[-2000:]
