"""``edugate sim NAME ...`` runs the device simulators from the installed command (issue 13, item 11)."""

from __future__ import annotations

import os
import re
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edugate.cli.sim import SIMULATORS
from tests.helpers import REPO, wait_for


def edugate(*args: str, **kwargs) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "edugate.cli.main", *args], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, **kwargs)


def test_every_simulator_with_a_main_has_a_command() -> None:
    with_main = {p.stem for p in (REPO / "simulators").glob("*.py") if re.search(r"^def main\(", p.read_text(), re.M)}
    assert {module for module, _ in SIMULATORS.values()} == with_main


@pytest.mark.parametrize("name", list(SIMULATORS))
def test_help_is_the_simulators_own(name: str) -> None:
    proc = edugate("sim", name, "--help")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err.decode()
    assert out.decode().startswith("usage: ") and "--" in out.decode()


def test_em4100_simulator_sends_card_frames(tmp_path: Path) -> None:
    link = tmp_path / "ttyRFID"
    proc = edugate("sim", "em4100", "--link", str(link), "--card", "0A1B2C3D4E", "--every", "0.2")
    try:
        wait_for(link.exists, 20, "the simulator's pseudo-terminal")
        fd = os.open(link, os.O_RDONLY | os.O_NOCTTY)
        try:
            data = b""
            deadline = time.monotonic() + 10
            while b"\x03" not in data and time.monotonic() < deadline:
                if select.select([fd], [], [], 0.5)[0]:
                    data += os.read(fd, 64)
        finally:
            os.close(fd)
        assert re.search(rb"\x020A1B2C3D4E[0-9A-F]{2}\x03", data), data
    finally:
        proc.terminate()
        proc.wait(10)


def test_an_unknown_simulator_is_refused() -> None:
    proc = edugate("sim", "toaster")
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2 and "toaster" in err.decode()
