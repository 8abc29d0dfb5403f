"""Failover along the broker list and the jittered back-off, in the clients themselves (real Mosquitto):
paho's own reconnect loop waits the builder's delays and moves to the next broker; a gateway's uplink
(aiomqtt) starts on the second broker when the first is down and moves over when its broker stops."""

from __future__ import annotations

import random
import threading
from pathlib import Path

from edugate.common.mqtt import Backoff, BrokerAddress, BrokerConfig, ReconnectPolicy, paho_client
from edugate.simulators.servers import Mosquitto, free_port
from tests.helpers import Collector, GatewayProcess, wait_for

POLICY = {"first_delay_s": 0.05, "max_delay_s": 0.4}


def test_paho_fails_over_to_the_second_broker(mosquitto: Mosquitto) -> None:
    dead = free_port()
    cfg = BrokerConfig(brokers=[f"127.0.0.1:{dead}", f"127.0.0.1:{mosquitto.port}"], reconnect=POLICY)
    connected = threading.Event()
    tried: list[BrokerAddress] = []
    client = paho_client(cfg, identifier="failover-test")
    client.on_connect = lambda *_: connected.set()
    client.on_connect_fail = lambda c, _u: tried.append(c.broker)
    client.connect_async_first()
    client.loop_start()
    try:
        assert connected.wait(10)
        assert client.broker == BrokerAddress("127.0.0.1", mosquitto.port)
        assert tried == [BrokerAddress("127.0.0.1", dead)]  # the first broker once, then the second
        assert client.delays and all(0 <= d <= 0.4 for d in client.delays)  # jittered waits in between
    finally:
        client.disconnect()
        client.loop_stop()


def test_paho_reconnect_loop_waits_the_jittered_delays() -> None:
    cfg = BrokerConfig(brokers=[f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"], reconnect=POLICY)
    tried: list[BrokerAddress] = []
    client = paho_client(cfg, identifier="jitter-test", rng=random.Random(11))
    client.on_connect_fail = lambda c, _u: tried.append(c.broker)
    client.connect_async_first()
    client.loop_start()
    try:
        wait_for(lambda: len(client.delays) >= 6, 15, "six reconnect attempts")
    finally:
        client.loop_stop()
    expected = Backoff(ReconnectPolicy(**POLICY), random.Random(11))
    assert client.delays[:6] == [expected.next() for _ in range(6)]
    assert len(set(client.delays)) == len(client.delays)  # not paho's fixed doubling
    first, second = cfg.addresses
    assert tried[:4] == [first, second, first, second]


def _gateway(tmp_path: Path, brokers: list[str]) -> GatewayProcess:
    return GatewayProcess(tmp_path / "gw", {
        "school": "test-school", "gateway": "gw-1",
        "uplink": {"brokers": brokers, "reconnect_max_s": 0.5},
        "devices": [{"id": "door", "driver": "synthetic", "interval_s": 0.05, "values": 0, "event_every": 1}],
    })


def _online(collector: Collector) -> bool:
    return bool(collector.states) and collector.states[-1]["status"] == "online"


def test_gateway_starts_on_the_second_broker_when_the_first_is_down(mosquitto: Mosquitto, tmp_path: Path) -> None:
    collector = Collector(mosquitto.port).start()
    gw = _gateway(tmp_path, [f"127.0.0.1:{free_port()}", f"127.0.0.1:{mosquitto.port}"]).start()
    try:
        wait_for(lambda: _online(collector), 20, "the gateway's birth on the second broker")
        wait_for(lambda: len(collector.records["event"]) >= 5, 20, "events on the second broker")
    finally:
        assert gw.stop() == 0
        collector.stop()
    assert "uplink cannot reach the broker 127.0.0.1:" in gw.log()


def test_gateway_moves_to_the_second_broker_when_its_broker_stops(mosquitto: Mosquitto, tmp_path: Path) -> None:
    second = Mosquitto(tmp_path / "mosquitto-2")
    second.start()
    first_seen, second_seen = Collector(mosquitto.port).start(), Collector(second.port, client_id="c2").start()
    gw = _gateway(tmp_path, [f"127.0.0.1:{mosquitto.port}", f"127.0.0.1:{second.port}"]).start()
    try:
        wait_for(lambda: _online(first_seen) and first_seen.records["event"], 20, "events on the first broker")
        assert not second_seen.states, "connected to the second broker while the first was up"
        first_seen.stop()
        mosquitto.stop()
        wait_for(lambda: _online(second_seen), 20, "the gateway's birth on the second broker")
        before = len(second_seen.records["event"])
        wait_for(lambda: len(second_seen.records["event"]) > before + 5, 20, "new events on the second broker")
    finally:
        assert gw.stop() == 0
        second_seen.stop()
        second.stop()
    assert "uplink lost the broker" in gw.log() and f"uplink connected to 127.0.0.1:{second.port}" in gw.log()


