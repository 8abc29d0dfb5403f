"""Outside check of config loading: hostile or broken files get ``file:line: message`` problems (exit code 2
through ``edugate check``), never a traceback, a stall or a memory blow-up."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from edugate.common.yamlconfig import MAX_CONFIG_BYTES, ConfigError
from edugate.gateway.config import load_config, parse_config
from tests.helpers import REPO

HEAD = "school: s\ngateway: g\n"
BOMB = "".join(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9) if i else ', '.join(['lol'] * 9)}]\n" for i in range(9))


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "site.yaml")
    return [str(p) for p in caught.value.problems]


def test_an_alias_bomb_is_refused_at_once_with_its_line() -> None:
    started = time.monotonic()
    assert problems(HEAD + BOMB) == ["site.yaml:1: the YAML holds more than 200000 values, counting what its "
                                     "anchors and aliases (&name / *name) repeat: a config needs far fewer (aliases "
                                     "nested in each other?)"]
    assert time.monotonic() - started < 2, "the bomb took seconds to refuse"


def test_deep_nesting_and_control_characters_are_problems_not_tracebacks() -> None:
    assert problems(HEAD + "x: " + "[" * 20000 + "]" * 20000 + "\n") == [
        "site.yaml:3: mappings and lists nested more than 64 deep: a config needs a few levels (a bracket left open?)"]
    assert problems(HEAD + "name: a\x00b\n") == [
        "site.yaml:3: invalid YAML: character '\\x00' (0x00) is not allowed in a YAML file (a binary file?)"]


def test_a_huge_file_is_refused_without_reading_it(tmp_path: Path) -> None:
    big = tmp_path / "site.yaml"
    big.write_text(HEAD + ("# padding\n" * (MAX_CONFIG_BYTES // 10 + 1)))
    with pytest.raises(ConfigError, match="is too big for a config"):
        load_config(big)
    with pytest.raises(ConfigError, match="is too big for a config"):  # an endless "file"
        load_config(Path("/dev/zero"))


def test_an_empty_file_names_its_first_line() -> None:
    assert problems("") == ["site.yaml:1: school: Field required", "site.yaml:1: gateway: Field required"]
    assert problems("# only a comment\n") == ["site.yaml:1: school: Field required",
                                               "site.yaml:1: gateway: Field required"]


def test_two_devices_on_one_serial_port_and_a_port_with_a_nul(tmp_path: Path) -> None:
    link = tmp_path / "by-id-reader"
    link.symlink_to("/dev/ttyUSB7")  # a stable name and the kernel name are one port
    found = problems(HEAD + "devices:\n"
                     "  - {id: a, driver: em4100, room: r, role: library, port: /dev/ttyUSB7}\n"
                     "  - {id: b, driver: kit, room: r, port: /dev/ttyUSB9, enabled: false}\n"
                     "  - {id: c, driver: kit, room: r, port: /dev/ttyUSB9}\n"
                     f"  - {{id: d, driver: wedge, room: r, role: library, source: serial, port: {link}}}\n"
                     '  - {id: e, driver: kit, room: r, port: "/dev/tty\\0X"}\n')
    assert found == [
        f"site.yaml:7: devices[3].port: serial port '{link}' is already used by devices[0] ('a'): one device per "
        "serial port (it is opened exclusively)",
        "site.yaml:8: devices[4].port: '/dev/tty\\x00X' has a control character (a NUL, a tab, a line break) in it: "
        "not a device path"]


def test_edugate_check_exits_2_with_file_line_messages(tmp_path: Path) -> None:
    bomb, listed = tmp_path / "bomb.yaml", tmp_path / "list.yaml"
    bomb.write_text(HEAD + BOMB)
    listed.write_text("- a\n- b\n")
    for path, first in ((bomb, f"{bomb}:1: the YAML holds"), (listed, f"{listed}:1: the file must be a YAML")):
        done = subprocess.run([sys.executable, "-m", "edugate.cli", "check", str(path)], capture_output=True,
                              text=True, cwd=REPO, timeout=30)
        assert done.returncode == 2, done.stdout + done.stderr
        assert (done.stdout + done.stderr).startswith(first), done.stdout + done.stderr
        assert "Traceback" not in done.stdout + done.stderr


def test_a_driver_that_is_not_a_name_is_a_problem_not_a_traceback() -> None:
    found = problems(HEAD + "devices:\n  - {id: a, driver: [wedge], room: r}\n  - {id: b, driver: null}\n"
                     "  - {id: c, driver: {x: 1}}\n")
    assert [p.split(": give")[0] for p in found] == [
        "site.yaml:4: devices[0].driver: 'driver' is a list", "site.yaml:5: devices[1].driver: 'driver' is empty",
        "site.yaml:6: devices[2].driver: 'driver' is a dict"]
