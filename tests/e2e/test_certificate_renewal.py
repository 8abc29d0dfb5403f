"""Renewing a gateway's certificate over the downlink (issue 18), through the real parts: a Mosquitto with the mTLS
listener and the ACL generated from the CA's records, a real ``edugate run`` connected with a certificate that
lapses in five days, and ``edugate renew-certificate`` (central, a subprocess) connected as the command sender.
The gateway's key never leaves it; the renewed certificate is issued by the same CA, installed atomically, recorded,
and used by the gateway's next connection after a broker restart. A certificate that is not for the gateway is
refused with the reason, and the file stays as it was."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from edugate.central.command_tools import send_envelope, write_keypair
from edugate.common.provisioning import load_certificate, load_private_key, new_key, write_pem
from edugate.contract.commands import sign_command
from edugate.gateway.downlink.commands import load_private_key as load_command_key
from tests.helpers import REPO, GatewayProcess, wait_for
from tests.pki import ProvisionedBroker, provisioned_broker

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[ProvisionedBroker]:
    with provisioned_broker(tmp_path, [("s1", "gw-a")]) as broker:
        yield broker


def _gateway(fleet: ProvisionedBroker, tmp_path: Path, central_pub: Path) -> GatewayProcess:
    bundle = fleet.gateways["s1/gw-a"]
    assert bundle.cert is not None
    # a certificate about to lapse: the same key, five days left
    write_pem(fleet.ca.issue("s1/gw-a", load_private_key(bundle.key).public_key(), days=5), bundle.cert)
    return GatewayProcess(tmp_path / "gw", {
        "school": "s1", "gateway": "gw-a",
        "uplink": {"brokers": [f"localhost:{fleet.tls_port}"], "reconnect_max_s": 0.5,
                   "tls": {"ca_file": str(fleet.ca.folder / "ca.pem"), "cert_file": str(bundle.cert),
                           "key_file": str(bundle.key)}},
        "downlink": {"enabled": True, "public_keys": [str(central_pub)]},
    })


def _connections(gw: GatewayProcess) -> int:
    return gw.log().count("uplink connected to")


def _renew(fleet: ProvisionedBroker, key: Path, *args: str) -> subprocess.CompletedProcess[str]:
    sender = fleet.central["sender-1"]
    return subprocess.run([sys.executable, "-m", "edugate.cli.main", "renew-certificate", "--ca", str(fleet.ca.folder),
                           "--key", str(key), "--broker", f"mqtts://localhost:{fleet.tls_port}",
                           "--ca-file", str(fleet.ca.folder / "ca.pem"), "--tls-cert", str(sender.cert),
                           "--tls-key", str(sender.key), "--timeout", "20", *args],
                          capture_output=True, text=True, cwd=REPO, timeout=120)


def test_a_lapsing_certificate_is_renewed_over_the_downlink(fleet: ProvisionedBroker, tmp_path: Path) -> None:
    key, pub, _ = write_keypair(tmp_path / "central" / "cmd")
    gw = _gateway(fleet, tmp_path, pub).start()
    bundle = fleet.gateways["s1/gw-a"]
    assert bundle.cert is not None
    key_before = bundle.key.read_bytes()
    old = load_certificate(bundle.cert)
    try:
        wait_for(lambda: _connections(gw) >= 1, 30, "the gateway connected over mTLS")
        done = _renew(fleet, key, "--expiring-within", "30")  # finds it in the CA's records, as cron would
        assert done.returncode == 0, done.stderr + gw.log()[-3000:]
        [line] = done.stdout.splitlines()
        result = json.loads(line)
        new = load_certificate(bundle.cert)
        assert result["school"] == "s1" and result["serial"] == f"{new.serial_number:x}"
        assert (new.not_valid_after_utc - old.not_valid_after_utc).days > 300
        assert new.public_key() == old.public_key() and bundle.key.read_bytes() == key_before  # the key stayed
        assert load_certificate(bundle.cert.with_name(bundle.cert.name + ".previous")) == old
        assert fleet.ca.records()[-1].serial == f"{new.serial_number:x}"  # recorded like any other
        assert _renew(fleet, key, "--expiring-within", "30").returncode == 0  # nothing lapses soon any more
        # the next connection uses the renewed certificate: the broker restarts, the gateway is back
        before = _connections(gw)
        fleet.broker.stop()
        fleet.broker.start()
        wait_for(lambda: _connections(gw) > before, 30, "the gateway reconnected with the renewed certificate")
    finally:
        assert gw.stop() == 0


def test_a_certificate_not_for_this_gateway_is_refused(fleet: ProvisionedBroker, tmp_path: Path) -> None:
    key, pub, _ = write_keypair(tmp_path / "central" / "cmd")
    gw = _gateway(fleet, tmp_path, pub).start()
    bundle = fleet.gateways["s1/gw-a"]
    assert bundle.cert is not None
    before = bundle.cert.read_bytes()
    stranger = fleet.ca.issue("s1/gw-a", new_key().public_key())  # the right name, another key
    pem = write_pem(stranger, tmp_path / "stranger.pem").read_text()
    try:
        wait_for(lambda: _connections(gw) >= 1, 30, "the gateway connected over mTLS")
        answer = _send(fleet, key, {"cert": pem})
        assert answer["status"] != "ok" and "not for this gateway's key" in answer["reason"], answer
        assert bundle.cert.read_bytes() == before
    finally:
        assert gw.stop() == 0


def _send(fleet: ProvisionedBroker, key: Path, args: dict[str, str]) -> dict:
    """``cert.install`` signed by central and sent as the command sender (mTLS, its ACL)."""
    envelope = sign_command(load_command_key(key), school="s1", gateway="gw-a", name="cert.install", args=args,
                            ttl_s=60)
    answer = send_envelope(envelope, fleet.config(fleet.central["sender-1"]), 20)
    assert answer is not None
    return answer
