"""edugate.common.mqtt without a broker: the config model, the jittered back-off, failover order, the gateway's
``uplink:`` section converted to it, and that every MQTT client of the package is built by the builder."""

from __future__ import annotations

import ast
import random
from collections import Counter
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from edugate.common.mqtt import (
    Backoff,
    BrokerAddress,
    BrokerConfig,
    Failover,
    MqttTls,
    ReconnectPolicy,
)
from edugate.common.yamlconfig import ConfigError
from edugate.gateway.config import UplinkConfig, parse_config

REPO = Path(__file__).resolve().parents[2]
PACKAGE_FOLDERS = ["contract", "common", "gateway", "central", "drivers", "simulators", "ml_models",
                   "firmware_bridge", "cli"]  # setup.py's FOLDERS
BUILDER = REPO / "common" / "mqtt.py"


# ---------------------------------------------------------------------- config model


def test_broker_list_in_failover_order() -> None:
    cfg = BrokerConfig(brokers=["mq-1.school.vn:8883", "10.0.0.2", "[fd00::1]:1884"])
    assert cfg.addresses == [BrokerAddress("mq-1.school.vn", 8883), BrokerAddress("10.0.0.2", 1883),
                             BrokerAddress("fd00::1", 1884)]
    assert [str(a) for a in cfg.addresses] == ["mq-1.school.vn:8883", "10.0.0.2:1883", "[fd00::1]:1884"]
    assert BrokerConfig().brokers == ["127.0.0.1:1883"]


@pytest.mark.parametrize(("text", "message"), [
    ("host:0", "the port must be a number from 1 to 65535"),
    ("host:http", "the port must be a number from 1 to 65535"),
    (":1883", "the host is missing"),
    ("fd00::1", "write an IPv6 address as '[address]:port'"),
])
def test_bad_broker_address_is_named(text: str, message: str) -> None:
    with pytest.raises(ValidationError) as info:
        BrokerConfig(brokers=["ok:1883", text])
    [error] = info.value.errors()
    assert error["loc"] == ("brokers", 1) and message in error["msg"] and repr(text) in error["msg"]


def test_config_rules() -> None:
    with pytest.raises(ValidationError, match="at least 1 item"):
        BrokerConfig(brokers=[])
    with pytest.raises(ValidationError, match="key_file is given without cert_file"):
        MqttTls(key_file=Path("client.key"))
    with pytest.raises(ValidationError, match="session_expiry_s needs protocol '5'"):
        BrokerConfig(session_expiry_s=60)
    assert BrokerConfig(protocol="5", session_expiry_s=60, clean_session=False).session_expiry_s == 60
    with pytest.raises(ValidationError, match=r"first_delay_s \(2.0\) is above max_delay_s \(1.0\)"):
        ReconnectPolicy(first_delay_s=2, max_delay_s=1)
    with pytest.raises(ValidationError, match="password"):  # only password_file: never the password itself
        BrokerConfig.model_validate({"password": "secret"})


def test_password_comes_from_its_file(tmp_path: Path) -> None:
    (tmp_path / "mqtt.pass").write_text("s3cret\n")
    assert BrokerConfig(password_file=tmp_path / "mqtt.pass").password() == "s3cret"
    assert BrokerConfig().password() is None


# ---------------------------------------------------------------------- back-off with full jitter


def test_backoff_ceiling_doubles_to_the_cap_and_resets() -> None:
    backoff = Backoff(ReconnectPolicy(first_delay_s=0.1, max_delay_s=1.0, jitter="none"))
    assert [round(backoff.next(), 3) for _ in range(7)] == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0]
    backoff.reset()
    assert backoff.next() == pytest.approx(0.1)


def test_full_jitter_delays_are_random_within_zero_and_the_ceiling() -> None:
    policy = ReconnectPolicy(first_delay_s=0.1, max_delay_s=1.0)
    backoff = Backoff(policy, random.Random(7))
    ceilings, delays = [], []
    for _ in range(200):
        ceilings.append(backoff.ceiling())
        delays.append(backoff.next())
    assert all(0 <= d <= c for d, c in zip(delays, ceilings, strict=True))
    assert len(set(delays)) == len(delays)
    # the same seed gives the same sequence: what the tests below rely on
    again = Backoff(policy, random.Random(7))
    assert [again.next() for _ in range(200)] == delays


def test_fifty_gateways_never_share_a_reconnect_sequence() -> None:
    policy = ReconnectPolicy(first_delay_s=0.1, max_delay_s=1.0)
    sequences = set()
    for gateway in range(50):
        backoff = Backoff(policy, random.Random(gateway))
        sequences.add(tuple(backoff.next() for _ in range(8)))
    assert len(sequences) == 50
    # without jitter they all do: the lock-step herd after a broker restart
    lockstep = {tuple(Backoff(policy.model_copy(update={"jitter": "none"})).next() for _ in range(8))
                for _ in range(50)}
    assert len(lockstep) == 1


def test_a_thousand_reconnects_spread_over_the_window() -> None:
    """1000 gateways lose the broker at once and retry at the cap (1 s): the attempts spread evenly over
    [0, 1 s] (ten 100 ms slots, about 100 each) instead of arriving together."""
    policy = ReconnectPolicy(first_delay_s=0.1, max_delay_s=1.0)
    rng = random.Random(2026)
    delays = []
    for _ in range(1000):
        backoff = Backoff(policy, rng)
        for _ in range(4):
            backoff.next()  # 0.1, 0.2, 0.4, 0.8: the next ceiling is the cap
        delays.append(backoff.next())
    slots = Counter(min(int(d * 10), 9) for d in delays)
    assert sorted(slots) == list(range(10))
    assert all(60 <= n <= 140 for n in slots.values()), slots
    assert 0.45 <= sum(delays) / len(delays) <= 0.55  # back within about half a second on average


# ---------------------------------------------------------------------- failover order


def test_failover_moves_on_after_a_failure_and_back_to_the_first_after_a_connection() -> None:
    failover = Failover(BrokerConfig(brokers=["a:1", "b:2", "c:3"]))
    assert failover.current == BrokerAddress("a", 1)
    assert failover.failed() == BrokerAddress("b", 2)
    assert failover.failed() == BrokerAddress("c", 3)
    assert failover.failed() == BrokerAddress("a", 1)
    failover.failed()
    failover.connected()
    assert failover.current == BrokerAddress("a", 1)


# ---------------------------------------------------------------------- the gateway's uplink section


def test_uplink_host_and_port_convert_to_a_broker_config(tmp_path: Path) -> None:
    up = UplinkConfig(host="mq.school.vn", port=8883, username="gw-1", password_file=tmp_path / "pass",
                      tls={"ca_file": "ca.pem", "cert_file": "gw.pem", "key_file": "gw.key"}, keepalive_s=20,
                      reconnect_max_s=5)
    cfg = up.broker_config("edugate-s-g")
    assert cfg.brokers == ["mq.school.vn:8883"] and cfg.client_id == "edugate-s-g" and cfg.clean_session
    assert cfg.username == "gw-1" and cfg.password_file == tmp_path / "pass" and cfg.keepalive_s == 20
    assert cfg.tls == MqttTls(ca_file=Path("ca.pem"), cert_file=Path("gw.pem"), key_file=Path("gw.key"))
    assert cfg.reconnect == ReconnectPolicy(first_delay_s=0.1, max_delay_s=5, jitter="full")
    assert UplinkConfig(client_id="mine").broker_config("default").client_id == "mine"
    assert UplinkConfig(host="::1").broker_config("x").addresses == [BrokerAddress("::1", 1883)]


def test_uplink_brokers_list() -> None:
    up = UplinkConfig(brokers=["mq-1:1883", "mq-2:1883"])
    assert up.broker_config("x").brokers == ["mq-1:1883", "mq-2:1883"]
    with pytest.raises(ValidationError, match="give either brokers or host/port, not both"):
        UplinkConfig(host="mq-1", brokers=["mq-2:1883"])


def test_uplink_errors_keep_their_place_in_the_file(tmp_path: Path) -> None:
    path = tmp_path / "site.yaml"
    path.write_text("school: s\ngateway: g\nuplink:\n  brokers:\n    - mq-1:1883\n    - mq-2:99999\n")
    with pytest.raises(ConfigError) as info:
        parse_config(path.read_text(), path)
    assert str(info.value) == f"{path}:6: uplink.brokers[1]: 'mq-2:99999': the port must be a number from 1 to 65535"


@pytest.mark.parametrize("path", [*sorted((REPO / "config").glob("*.yaml")), REPO / "cli" / "demo-school.yaml"],
                         ids=lambda p: p.name)
def test_shipped_gateway_configs_convert(path: Path) -> None:
    doc = yaml.safe_load(path.read_text())
    if not isinstance(doc, dict) or "gateway" not in doc:
        pytest.skip("not a gateway config")
    cfg = parse_config(path.read_text(), path)
    broker = cfg.uplink.broker_config(f"edugate-{cfg.school}-{cfg.gateway}")
    assert broker.addresses[0] == BrokerAddress(cfg.uplink.host, cfg.uplink.port) or cfg.uplink.brokers


# ---------------------------------------------------------------------- one builder for every client


def client_constructions(source: str) -> list[int]:
    """Lines that build an MQTT client directly: ``aiomqtt.Client(...)``, ``mqtt.Client(...)`` (paho),
    ``paho.mqtt.client.Client(...)``, or ``Client(...)`` imported from aiomqtt or paho."""
    tree = ast.parse(source)
    imported = {alias.asname or alias.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
                and node.module in ("aiomqtt", "paho.mqtt.client") for alias in node.names if alias.name == "Client"}
    lines = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if isinstance(func, ast.Name) and func.id in imported:
            lines.append(node.lineno)
        elif isinstance(func, ast.Attribute) and func.attr == "Client":
            owner = ast.unparse(func.value)
            if owner in ("aiomqtt", "mqtt") or owner.endswith("mqtt.client"):
                lines.append(node.lineno)
    return lines


def test_the_scanner_finds_direct_constructions() -> None:
    source = ("import aiomqtt\nimport paho.mqtt.client as mqtt\nfrom aiomqtt import Client as C\n"
              "a = aiomqtt.Client('h')\nb = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)\nc = C('h')\n"
              "import paho\nd = paho.mqtt.client.Client()\nok = some.Client()\n")
    assert client_constructions(source) == [4, 5, 6, 8]


def test_every_mqtt_client_is_built_by_the_builder() -> None:
    found = []
    for folder in PACKAGE_FOLDERS:
        for path in sorted((REPO / folder).rglob("*.py")):
            if path == BUILDER:
                continue
            found += [f"{path.relative_to(REPO)}:{line}" for line in client_constructions(path.read_text())]
    assert not found, ("MQTT clients built outside edugate.common.mqtt (use aiomqtt_client/paho_client): "
                       + ", ".join(found))
