"""The session settings of the builder reach the broker (real Mosquitto): a persistent session keeps a QoS 1
message published while the client was away (MQTT 3.1.1 ``clean_session: false``; MQTT 5 ``session_expiry_s``);
a clean session, or an MQTT 5 session without expiry, does not."""

from __future__ import annotations

import asyncio

import pytest

from edugate.common.mqtt import BrokerConfig, aiomqtt_client
from edugate.simulators.servers import Mosquitto

TOPIC = "edu/v1/test-school/gw-1/cmd/ping"


async def _first_message_after_coming_back(cfg: BrokerConfig, port: int) -> bytes:
    publisher = BrokerConfig(brokers=[f"127.0.0.1:{port}"])
    async with aiomqtt_client(cfg, timeout=10) as client:
        await client.subscribe(TOPIC, qos=1)
    async with aiomqtt_client(publisher, identifier="publisher", timeout=10) as other:
        await other.publish(TOPIC, b"while away", qos=1)
    async with aiomqtt_client(cfg, timeout=10) as client:
        await client.subscribe(TOPIC, qos=1)  # again: a session that was kept has it already
        async with aiomqtt_client(publisher, identifier="publisher", timeout=10) as other:
            await other.publish(TOPIC, b"after", qos=1)
        async with asyncio.timeout(10):
            async for message in client.messages:
                return bytes(message.payload)  # type: ignore[arg-type]
    raise AssertionError("no message")


@pytest.mark.parametrize(("settings", "first"), [
    ({"clean_session": False}, b"while away"),
    ({"clean_session": True}, b"after"),
    ({"protocol": "5", "clean_session": False, "session_expiry_s": 60}, b"while away"),
    ({"protocol": "5", "clean_session": False}, b"after"),  # MQTT 5: no expiry, the session ends with the connection
], ids=["3.1.1-persistent", "3.1.1-clean", "5-expiry", "5-no-expiry"])
def test_session_settings(mosquitto: Mosquitto, settings: dict, first: bytes) -> None:
    cfg = BrokerConfig(brokers=[f"127.0.0.1:{mosquitto.port}"], client_id="session-test", **settings)
    assert asyncio.run(_first_message_after_coming_back(cfg, mosquitto.port)) == first
