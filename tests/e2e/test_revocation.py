"""Revoking a gateway's certificate (issue 18: CRL) against a real Mosquitto with the mTLS listener: after
``edugate provision revoke`` and a broker restart, the revoked gateway's certificate is refused at the TLS
handshake, another gateway still gets in, and the ACL no longer names the
revoked identity."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import aiomqtt
import pytest

from edugate.common.mqtt import BrokerConfig, aiomqtt_client
from tests.helpers import REPO
from tests.pki import ProvisionedBroker, provisioned_broker


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[ProvisionedBroker]:
    with provisioned_broker(tmp_path, [("s1", "gw-a"), ("s2", "gw-b")]) as broker:
        yield broker


async def _publish(cfg: BrokerConfig, topic: str) -> None:
    async with aiomqtt_client(cfg, identifier=topic.split("/")[3], timeout=5) as client:
        await client.publish(topic, b"x", qos=1)


def test_a_revoked_gateway_is_refused_and_the_others_are_not(fleet: ProvisionedBroker,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    a, b = fleet.gateways["s1/gw-a"], fleet.gateways["s2/gw-b"]
    asyncio.run(_publish(fleet.config(a), "edu/v1/s1/gw-a/telemetry"))  # in, before
    done = subprocess.run([sys.executable, "-m", "edugate.cli.main", "provision", "revoke", "--ca",
                           str(fleet.ca.folder), "--school", "s1", "--gateway", "gw-a", "--broker-folder",
                           str(fleet.folder), "--reason", "stolen"],
                          capture_output=True, text=True, cwd=REPO, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "revoked 1 certificate(s)" in done.stdout
    acl = (fleet.folder / "acl").read_text()
    assert "user s1/gw-a" not in acl and "user s2/gw-b" in acl
    fleet.broker.stop()
    fleet.broker.start()
    with pytest.raises(aiomqtt.MqttError):
        asyncio.run(_publish(fleet.config(a), "edu/v1/s1/gw-a/telemetry"))
    assert fleet.log().count("certificate verify failed") == 1
    # the client may read the broker's TLS alert before the socket closes (TLS 1.3 races it); if so, it says why
    alerts = [r.getMessage() for r in caplog.records if "ALERT" in r.getMessage()]
    assert all("CERTIFICATE_REVOKED" in alert for alert in alerts), alerts
    asyncio.run(_publish(fleet.config(b), "edu/v1/s2/gw-b/telemetry"))  # still in
    again = subprocess.run([sys.executable, "-m", "edugate.cli.main", "provision", "revoke", "--ca",
                            str(fleet.ca.folder), "--school", "s9", "--gateway", "gw-x", "--broker-folder",
                            str(fleet.folder)], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert again.returncode != 0 and "no certificate was issued to 's9/gw-x'" in again.stderr
