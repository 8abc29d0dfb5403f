"""A config, or a file it names, that is not UTF-8 text (a binary file, random bytes, a Latin-1 file) gets
``file:line: message`` and exit code 2 from ``edugate check``, ``run``, ``migrate``, ``central-check`` and central's
``ingest --config``, never a traceback (issue 13, defect 1)."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO

NOT_TEXT = {
    "random bytes": bytes(random.Random(13).randrange(256) for _ in range(600)),
    "latin-1": "school: trường\ngateway: gw-1\n".encode("latin-1", errors="replace").replace(b"?", b"\xf0"),
    "an ELF binary": b"\x7fELF\x02\x01\x01\x00" + bytes(range(256)) * 2,
    "NUL bytes": b"school: a\x00\x00\ngateway: g\n",
}


def edugate(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edugate.cli.main", *args], capture_output=True, text=True,
                          cwd=REPO, timeout=60)


def assert_clear_refusal(result: subprocess.CompletedProcess[str], path: Path) -> None:
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    first = result.stderr.splitlines()[0]
    assert first.startswith(f"{path}:"), first
    assert "not UTF-8 text" in first or "invalid YAML" in first, first


@pytest.mark.parametrize("command", ["check", "run", "central-check"])
@pytest.mark.parametrize("what", list(NOT_TEXT))
def test_a_config_that_is_not_text(tmp_path: Path, command: str, what: str) -> None:
    path = tmp_path / "config.yaml"
    path.write_bytes(NOT_TEXT[what])
    assert_clear_refusal(edugate(command, str(path)), path)


@pytest.mark.parametrize("command", [["migrate"], ["ingest", "--config"]], ids=" ".join)
def test_the_other_commands_that_read_a_config(tmp_path: Path, command: list[str]) -> None:
    path = tmp_path / "config.yaml"
    path.write_bytes(NOT_TEXT["latin-1"])
    assert_clear_refusal(edugate(*command, str(path)), path)
    assert path.read_bytes() == NOT_TEXT["latin-1"], "left as it was"


def test_a_school_key_file_that_is_not_text(tmp_path: Path) -> None:
    key = tmp_path / "school.key"
    key.write_bytes(NOT_TEXT["random bytes"][:64])
    os.chmod(key, 0o600)
    config = tmp_path / "gateway.yaml"
    config.write_text(f"school: s\ngateway: g\nstorage: {{path: {tmp_path}/outbox.sqlite}}\n"
                      f"privacy: {{secret_file: {key}}}\ndevices:\n  - {{id: a, driver: synthetic}}\n")
    result = edugate("run", str(config))
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    assert f"{key}: not a hex-encoded key (not UTF-8 text" in result.stderr, result.stderr
    assert not (tmp_path / "outbox.sqlite").exists(), "nothing is started"


def test_an_ingest_password_file_that_is_not_text(tmp_path: Path) -> None:
    secret = tmp_path / "mqtt.password"
    secret.write_bytes(NOT_TEXT["latin-1"])
    result = subprocess.run([sys.executable, "-m", "edugate.cli.main", "ingest", "--client-id", "ingest-1", "--broker",
                             "mqtt://127.0.0.1:9", "--username", "u", "--password-file", str(secret)],
                            capture_output=True, text=True, cwd=REPO, timeout=60,
                            env=os.environ | {"COLUMNS": "400"})  # the error box does not wrap the path
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert f"--password-file: {secret} is not UTF-8 text" in result.stderr, result.stderr


@pytest.mark.parametrize("what", ["not text", "missing"])
def test_a_gateway_password_file_that_cannot_be_used(tmp_path: Path, what: str) -> None:
    secret = tmp_path / "mqtt.pass"
    if what == "not text":
        secret.write_bytes(NOT_TEXT["latin-1"])
    config = tmp_path / "gateway.yaml"
    config.write_text(f"school: s\ngateway: g\nstorage: {{path: {tmp_path}/outbox.sqlite}}\n"
                      f"uplink: {{host: 127.0.0.1, port: 9, username: u, password_file: {secret}}}\n"
                      "devices:\n  - {id: a, driver: synthetic}\n")
    result = edugate("run", str(config))
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    why = "is not UTF-8 text (byte 0xf0" if what == "not text" else "No such file or directory"
    assert result.stderr.startswith(f"{config}: uplink.password_file: ") and why in result.stderr, result.stderr
    assert not (tmp_path / "outbox.sqlite").exists(), "nothing is started"
