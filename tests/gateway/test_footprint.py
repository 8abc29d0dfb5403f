"""What a running gateway loads: only what its config needs (``bench/idle.py`` measures the RSS this keeps small).

A gateway runs for months on a 1 GB board. ``edugate run`` with a plain config (no downlink, no models, no pages)
must not load the libraries of features it does not use: cryptography (signed commands), numpy and onnxruntime
(the models), jinja2/fastapi/uvicorn (the pages), nor any of central's code. The test runs the real command under
``python -X importtime``, which writes a line for every module imported, waits until the gateway has opened its
outbox and tried its broker, and reads the modules from that log.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import wait_for

UNWANTED = ("cryptography", "numpy", "onnxruntime", "jinja2", "fastapi", "uvicorn", "starlette", "influxdb_client",
            "typer_cli", "openpyxl", "psycopg", "nats")
IMPORTED = re.compile(r"^import time:\s+\d+ \|\s+\d+ \|\s*([\w.]+)$", re.M)


def _imported_by_a_running_gateway(tmp_path: Path, extra: str = "") -> set[str]:
    config = tmp_path / "gateway.yaml"
    config.write_text(f"school: s1\ngateway: gw1\nuplink: {{host: 127.0.0.1, port: 1}}\n"
                      f"storage: {{path: {tmp_path / 'outbox.sqlite'}}}\n{extra}")
    log = tmp_path / "gateway.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-X", "importtime", "-m", "edugate.cli", "run", str(config)],
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: "cannot reach the broker" in log.read_text(errors="replace") or proc.poll() is not None,
                 60, "the gateway running and trying its broker")
        assert proc.poll() is None, log.read_text(errors="replace")[-3000:]
    finally:
        proc.terminate()
        proc.wait(20)
    return set(IMPORTED.findall(log.read_text(errors="replace")))


def test_a_plain_gateway_loads_no_library_it_does_not_use(tmp_path: Path) -> None:
    modules = _imported_by_a_running_gateway(tmp_path)
    assert "edugate.gateway.runtime.outbox" in modules and "aiomqtt" in modules  # the log did list the imports
    unwanted = sorted(m for m in modules if m.split(".")[0] in UNWANTED or m.startswith("edugate.central"))
    assert not unwanted, f"a gateway without downlink, models or pages loaded: {unwanted}"
    assert not any(m.startswith("edugate.gateway.services.models") for m in modules)
    assert not any(m.startswith("edugate.drivers.") and m.endswith(".driver") for m in modules)  # no device, no driver


@pytest.mark.parametrize(("section", "library"), [
    ("downlink: {enabled: true, public_keys: [KEY]}\n", "cryptography"),
    ("models: {occupancy: []}\n", "onnxruntime"),
])
def test_a_feature_loads_its_library_when_configured(tmp_path: Path, section: str, library: str) -> None:
    if "KEY" in section:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        key = tmp_path / "central.pub"
        key.write_bytes(Ed25519PrivateKey.generate().public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
        section = section.replace("KEY", str(key))
    assert library in {m.split(".")[0] for m in _imported_by_a_running_gateway(tmp_path, section)}
