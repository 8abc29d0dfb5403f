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

from edugate.cli.sim import SIMULATORS, discover
from tests.helpers import REPO, wait_for


def edugate(*args: str, **kwargs) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "edugate.cli.main", *args], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, **kwargs)


CURRENT = {"ble-probes", "camera", "display-serial", "em4100", "gps-nmea", "modbus", "pjlink", "pn532", "sip2",
           "station", "thermometer"}


def test_the_simulators_are_found_by_themselves() -> None:
    assert CURRENT <= set(SIMULATORS)  # every name that worked before still does
    helpers = {"servers", "postgres", "nats-cluster", "rabbitmq-cluster", "city", "serial-pty", "students",
               "fake-device", "kit-node", "classroom-demo", "library-demo"}
    assert not helpers & set(SIMULATORS)
    assert SIMULATORS["gps-nmea"] == ("gps_nmea", "A simulated GPS receiver on a school bus: NMEA 0183 sentences "
                                                  "on a pseudo-terminal.")


def test_a_new_simulator_needs_only_its_module(tmp_path: Path) -> None:
    (tmp_path / "tram_door.py").write_text('"""A tram door sensor. It opens.\n\nMore."""\n\ndef main() -> int:\n'
                                           '    return 0\n')
    (tmp_path / "no_doc.py").write_text("def main() -> int:\n    return 0\n")
    (tmp_path / "helper.py").write_text('"""A helper with a main of its own."""\nSIMULATOR = False\n\n'
                                        'def main() -> None:\n    pass\n')
    (tmp_path / "lib.py").write_text('"""No main here."""\n\ndef start() -> None:\n    pass\n')
    (tmp_path / "_private.py").write_text('"""Private."""\n\ndef main() -> None:\n    pass\n')
    assert discover([str(tmp_path)]) == {"tram-door": ("tram_door", "A tram door sensor.")}
    (tmp_path / "broken.py").write_text('"""Broken."""\ndef main(:\n')
    with pytest.raises(RuntimeError, match=r"broken\.py:2: cannot read this simulator module"):
        discover([str(tmp_path)])


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
