"""An ``attendance`` reader on a gateway without a ``timetable:`` sends taps without period or lateness: ``edugate
check`` and ``edugate run`` say so, with the reader's line, instead of passing silently (issue 13, defect 6)."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest

from edugate.gateway.config import config_warnings, load_config
from edugate.gateway.runtime.gateway import Gateway
from tests.helpers import REPO

HEAD = """school: thcs-a
gateway: gw-1
storage: {{path: {tmp}/outbox.sqlite}}
privacy: {{secret_file: {tmp}/school.key}}
"""
READERS = """devices:
  - id: lab-door
    driver: em4100
    role: door
    port: /tmp/edugate-test-ttyA
  - id: r10a
    driver: em4100
    room: class-10a
    port: /tmp/edugate-test-ttyB
  - id: r10b
    driver: em4100
    role: attendance
    port: /tmp/edugate-test-ttyC
    enabled: false
"""
TIMETABLE = """timetable:
  periods:
    - {name: P1, start: "07:00", end: "07:45"}
"""
WARNING = ("devices[1].role: warning: attendance reader 'r10a' on a gateway without a 'timetable:': its taps are "
           "sent without period or lateness and no attendance summaries are made (add a timetable, or give the "
           "reader another role)")


def write(tmp_path: Path, *parts: str) -> Path:
    path = tmp_path / "gateway.yaml"
    path.write_text(HEAD.format(tmp=tmp_path) + "".join(parts))
    return path


def check(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edugate.cli.main", "check", str(path)], capture_output=True,
                          text=True, cwd=REPO, timeout=60)


def test_check_warns_about_an_attendance_reader_without_a_timetable(tmp_path: Path) -> None:
    path = write(tmp_path, READERS)
    result = check(path)
    assert result.returncode == 0, result.stderr  # a documented mode (taps only), not an error
    assert f"{path}:10: {WARNING}" in result.stderr.splitlines()
    assert result.stderr.count("warning:") == 1, "a door and a disabled reader need no timetable"
    assert ": OK: " in result.stdout


def test_no_warning_with_a_timetable(tmp_path: Path) -> None:
    path = write(tmp_path, TIMETABLE, READERS)
    result = check(path)
    assert result.returncode == 0 and "warning" not in result.stderr, result.stderr
    assert config_warnings(load_config(path)) == []


def test_the_gateway_logs_it_when_it_starts(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="edugate.gateway.runtime.gateway")
    Gateway(load_config(write(tmp_path, READERS)))
    assert [r.getMessage() for r in caplog.records if "timetable" in r.getMessage()] == \
        [WARNING.replace("warning: ", "")]


@pytest.mark.parametrize("path", sorted(p.relative_to(REPO) for p in [
    *REPO.glob("config/*.yaml"), *REPO.glob("drivers/*/sample.yaml"), REPO / "cli" / "demo-school.yaml"]
    if p.name != "central.yaml"), ids=str)
def test_the_shipped_configs_give_no_warning(path: Path) -> None:
    assert config_warnings(load_config(REPO / path)) == []
