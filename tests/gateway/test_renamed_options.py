"""One name per setting across drivers (issue 19): the old names (``serial_port`` of the GPS receiver,
``backoff_max_s`` of the card readers, ``poll_s`` of the displays) are still read, and reported as deprecated at
their line by ``edugate check`` and in the gateway's log; both names at once is an error."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from edugate.gateway.config import ConfigError, config_warnings, load_config, load_warnings

OLD = """\
school: s1
gateway: bus-07
storage: {{path: {data}/outbox.sqlite}}
devices:
  - id: bus-gps
    driver: gps-nmea
    serial_port: /dev/serial0
    backoff_max_s: 5
  - id: room-12-board
    driver: pjlink
    host: 127.0.0.1
    poll_s: 20
"""


def test_old_names_are_read_and_reported_at_their_lines(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(OLD.format(data=tmp_path))
    cfg = load_config(path)
    gps, board = cfg.devices
    assert (gps.port, gps.reopen_max_s, board.poll_interval_s) == ("/dev/serial0", 5, 20)  # type: ignore[attr-defined]
    assert [str(w).replace(f"{path}:", "") for w in load_warnings(path, cfg)] == [
        "7: devices[0].serial_port: warning: 'serial_port' is the old name of 'port': rename it (the old name is "
        "still read, and will not be in EduGate 1.0)",
        "8: devices[0].backoff_max_s: warning: 'backoff_max_s' is the old name of 'reopen_max_s': rename it (the "
        "old name is still read, and will not be in EduGate 1.0)",
        "12: devices[1].poll_s: warning: 'poll_s' is the old name of 'poll_interval_s': rename it (the old name is "
        "still read, and will not be in EduGate 1.0)"]
    result = subprocess.run([sys.executable, "-m", "edugate.cli.main", "check", str(path)], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert f"{path}:7: devices[0].serial_port: warning: 'serial_port' is the old name of 'port'" in result.stderr


def test_new_names_give_no_warning(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(OLD.format(data=tmp_path).replace("serial_port", "port").replace("backoff_max_s", "reopen_max_s")
                    .replace("poll_s", "poll_interval_s"))
    assert config_warnings(load_config(path)) == []


def test_both_names_at_once_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(OLD.format(data=tmp_path).replace("    backoff_max_s: 5\n", "    port: /dev/ttyUSB0\n"))
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert [str(p).replace(f"{path}:", "") for p in err.value.problems] == [
        "5: devices[0]: 'serial_port' and 'port' are one setting ('serial_port' is its old name): keep 'port'"]


def test_migrate_renames_old_options_in_place_keeping_comments(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text("# the bus gateway\n" + OLD.format(data=tmp_path).replace("poll_s: 20", "poll_s: 20  # seconds"))

    def migrate(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "edugate.cli.main", "migrate", *args, str(path)],
                              capture_output=True, text=True, timeout=120)

    before = path.read_text()
    check = migrate("--check")
    assert check.returncode == 1 and path.read_text() == before, check.stderr
    assert f"{path}:8: 'serial_port' -> 'port': would be renamed" in check.stdout
    done = migrate()
    assert done.returncode == 0, done.stderr
    text = path.read_text()
    assert "    port: /dev/serial0\n    reopen_max_s: 5\n" in text and "    poll_interval_s: 20  # seconds\n" in text
    assert text.startswith("# the bus gateway\nschema_version: 1\n")
    assert config_warnings(load_config(path)) == []
    assert migrate().stdout.count("renamed") == 0  # nothing left to do
