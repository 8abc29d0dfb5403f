"""A password file that cannot be used (missing, a folder, not text, empty) gives one clear error naming the option
and the file, from :func:`edugate.common.mqtt.read_password_file`, at every caller: the gateway (``run``,
``doctor``), central's ingest, pages and ``send`` (HSMALL 2). Never a bare UnicodeDecodeError/OSError."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edugate.cli.main import app
from edugate.common.mqtt import BrokerConfig, PasswordFileError, read_password_file

BAD = {
    "missing": (None, "cannot read {path}: No such file or directory"),
    "a folder": ("dir", "cannot read {path}: Is a directory"),
    "not text": (b"pass\xff\n", "{path} is not UTF-8 text (byte 0xff at offset 4)"),
    "empty": (b" \n", "{path} is empty"),
}


def _make(tmp_path: Path, what: str) -> Path:
    path = tmp_path / "mqtt.pass"
    content = BAD[what][0]
    if content == "dir":
        path.mkdir()
    elif isinstance(content, bytes):
        path.write_bytes(content)
    return path


@pytest.mark.parametrize("what", list(BAD))
def test_the_error_names_the_option_and_the_file(tmp_path: Path, what: str) -> None:
    path = _make(tmp_path, what)
    with pytest.raises(PasswordFileError) as caught:
        BrokerConfig(password_file=path).password("uplink.password_file")
    assert str(caught.value).startswith("uplink.password_file: " + BAD[what][1].format(path=path))
    assert isinstance(caught.value, ValueError)  # callers that report ValueErrors as bad input keep working


def test_a_good_file_and_none(tmp_path: Path) -> None:
    (tmp_path / "p").write_text("  s3cret-ü \n")
    assert read_password_file(tmp_path / "p") == "s3cret-ü"
    assert BrokerConfig().password() is None


def _central_yaml(tmp_path: Path, secret: Path) -> Path:
    config = tmp_path / "central.yaml"
    config.write_text(f"broker:\n  brokers: ['127.0.0.1:9']\n  username: u\n  password_file: {secret}\n")
    return config


@pytest.mark.parametrize("command", ["ingest", "central", "send"])
@pytest.mark.parametrize("given", ["option", "config"])
def test_every_central_caller_says_which_option_and_file(tmp_path: Path, command: str, given: str) -> None:
    secret = _make(tmp_path, "not text")
    args = [command]
    if given == "option":
        args += ["--broker", "mqtt://127.0.0.1:9", "--username", "u", "--password-file", str(secret)]
        option = "--password-file"
    else:
        args += ["--config", str(_central_yaml(tmp_path, secret))]
        option = "broker.password_file"
    if command == "ingest":
        args += ["--client-id", "ingest-1"]
    if command == "central":
        args += ["--data-dir", str(tmp_path / "data")]
    if command == "send":
        envelope = tmp_path / "cmd.json"
        envelope.write_text(json.dumps({"id": "c1", "name": "ping", "target": {"school": "s", "gateway": "g"}}))
        args += ["--envelope", str(envelope), "--timeout", "0.1"]
    result = CliRunner().invoke(app, args, env={"COLUMNS": "400"})
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert f"{option}: {secret} is not UTF-8 text (byte 0xff at offset 4)" in result.output, result.output
    assert not (tmp_path / "data").exists(), "the pages did not start"


async def test_gateway_doctor_names_uplink_password_file(tmp_path: Path) -> None:
    secret = _make(tmp_path, "empty")
    config = tmp_path / "gateway.yaml"
    config.write_text(f"school: s\ngateway: g\nstorage: {{path: {tmp_path}/outbox.sqlite}}\n"
                      f"uplink: {{host: 127.0.0.1, port: 9, username: u, password_file: {secret}}}\n"
                      "devices:\n  - {id: a, driver: synthetic}\n")
    from edugate.gateway.config import load_config
    from edugate.gateway.doctor.checks import check_broker

    results = await check_broker(load_config(config), 1.0)
    assert any(f"uplink.password_file: {secret} is empty" in r.message for r in results), results


def test_central_doctor_names_broker_password_file(tmp_path: Path) -> None:
    secret = _make(tmp_path, "missing")
    result = CliRunner().invoke(app, ["central-doctor", "--config", str(_central_yaml(tmp_path, secret))],
                                env={"COLUMNS": "400"})
    assert result.exit_code == 2, result.output
    assert f"broker.password_file: cannot read {secret}: No such file or directory" in result.output, result.output
