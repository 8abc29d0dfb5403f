"""``ingest.amqp`` in ``central.yaml``: validated like the rest (what and where), the password kept in a file and
put into the URLs only when the worker connects (no servers needed here; the worker itself is tested against a
real node in ``test_rabbitmq_worker.py``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from edugate.central.config import load_central_config
from edugate.central.ingest.amqp_worker import with_password
from edugate.common.yamlconfig import ConfigError


def test_an_amqp_section_is_read_and_its_password_file_resolved(tmp_path: Path) -> None:
    path = tmp_path / "central.yaml"
    path.write_text("ingest:\n  transport: amqp\n  amqp:\n    servers: ['amqp://edugate@central-1:5672/']\n"
                    "    password_file: secrets/amqp.password\n")
    cfg = load_central_config(path)
    assert cfg.ingest.transport == "amqp"
    assert cfg.ingest.amqp.password_file == (tmp_path / "secrets" / "amqp.password").resolve()
    assert cfg.ingest.amqp.replicas == 3 and cfg.ingest.amqp.queue == "edugate-ingest"


def test_a_server_that_is_not_amqp_is_refused_with_its_place(tmp_path: Path) -> None:
    path = tmp_path / "central.yaml"
    path.write_text("ingest:\n  transport: amqp\n  amqp:\n    servers: ['amqp://a:5672/', 'mqtt://b:1883']\n")
    with pytest.raises(ConfigError) as err:
        load_central_config(path)
    text = str(err.value)
    assert "ingest.amqp.servers" in text and "servers[1] 'mqtt://b:1883'" in text and ":4:" in text, text


def test_the_password_goes_into_the_url_quoted() -> None:
    assert with_password("amqp://edugate@central-1:5672/", "p@ss:/") == "amqp://edugate:p%40ss%3A%2F@central-1:5672/"
    assert with_password("amqp://edugate@central-1:5672/", None) == "amqp://edugate@central-1:5672/"
    with pytest.raises(ValueError, match="needs a user"):
        with_password("amqp://central-1:5672/", "secret")
