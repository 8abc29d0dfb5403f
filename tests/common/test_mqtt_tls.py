"""The MQTT builder against a real Mosquitto with TLS: a test CA made here with ``cryptography``, a server
certificate for Mosquitto, a client certificate for mTLS (``require_certificate true``); aiomqtt and paho
clients built by edugate.common.mqtt connect with the client certificate and are refused without it; the
broker's host name is checked unless ``verify_hostname`` is false; a gateway publishes through mTLS."""

from __future__ import annotations

import asyncio
import datetime
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from edugate.common.mqtt import BrokerConfig, MqttTls, aiomqtt_client, paho_client, ssl_context
from edugate.simulators.servers import Mosquitto, free_port
from tests.helpers import Collector, GatewayProcess, wait_for

# ---------------------------------------------------------------------- a test CA


@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_cert: Path  # signed by another CA: the broker must refuse it
    other_key: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> Path:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    path.chmod(0o600)
    return path


def _write_cert(cert: x509.Certificate, path: Path) -> Path:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


def _ca(common_name: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(_name(common_name)).issuer_name(_name(common_name))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False),
                           critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    return cert, key


def _leaf(ca: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey, common_name: str, *, server: bool,
          names: list[x509.GeneralName]) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    builder = (x509.CertificateBuilder().subject_name(_name(common_name)).issuer_name(ca.subject)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH if server
                                                     else ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False))
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(ca_key, hashes.SHA256()), key


def make_pki(folder: Path) -> Pki:
    """A CA, a server certificate for ``localhost`` only (not 127.0.0.1: the host-name check can be seen),
    a client certificate for gateway ``gw-1``, and a client certificate from another CA."""
    folder.mkdir(parents=True, exist_ok=True)
    ca, ca_key = _ca("EduGate test CA")
    server, server_key = _leaf(ca, ca_key, "localhost", server=True, names=[x509.DNSName("localhost")])
    client, client_key = _leaf(ca, ca_key, "test-school/gw-1", server=False, names=[])
    rogue_ca, rogue_key = _ca("Someone else's CA")
    other, other_key = _leaf(rogue_ca, rogue_key, "test-school/gw-1", server=False, names=[])
    return Pki(ca=_write_cert(ca, folder / "ca.pem"),
               server_cert=_write_cert(server, folder / "server.pem"),
               server_key=_write_key(server_key, folder / "server.key"),
               client_cert=_write_cert(client, folder / "gw-1.pem"),
               client_key=_write_key(client_key, folder / "gw-1.key"),
               other_cert=_write_cert(other, folder / "other.pem"),
               other_key=_write_key(other_key, folder / "other.key"))


@dataclass
class TlsBroker:
    broker: Mosquitto
    tls_port: int
    pki: Pki

    def config(self, host: str = "localhost", *, client_cert: bool = True, **tls: Any) -> BrokerConfig:
        cert = {"cert_file": self.pki.client_cert, "key_file": self.pki.client_key} if client_cert else {}
        return BrokerConfig(brokers=[f"{host}:{self.tls_port}"], tls=MqttTls(ca_file=self.pki.ca, **cert | tls))


@pytest.fixture
def tls_broker(tmp_path: Path) -> Iterator[TlsBroker]:
    """Mosquitto with a plain listener (for the test's own collector) and an mTLS listener."""
    pki = make_pki(tmp_path / "pki")
    tls_port = free_port()
    broker = Mosquitto(tmp_path / "mosquitto", extra_conf="\n".join([
        f"listener {tls_port} 127.0.0.1",
        f"cafile {pki.ca}",
        f"certfile {pki.server_cert}",
        f"keyfile {pki.server_key}",
        "require_certificate true",
        "use_identity_as_username true",
    ]))
    broker.start()
    yield TlsBroker(broker, tls_port, pki)
    broker.stop()


# ---------------------------------------------------------------------- aiomqtt


async def _round_trip(cfg: BrokerConfig, topic: str, connect_timeout: float = 10) -> bytes:
    async with aiomqtt_client(cfg, identifier="tls-test", timeout=connect_timeout) as client:
        await client.subscribe(topic, qos=1)
        await client.publish(topic, b"hello over mTLS", qos=1)
        async with asyncio.timeout(10):
            async for message in client.messages:
                return bytes(message.payload)  # type: ignore[arg-type]
    raise AssertionError("no message")


def test_aiomqtt_client_with_a_client_certificate(tls_broker: TlsBroker) -> None:
    assert asyncio.run(_round_trip(tls_broker.config(), "edu/v1/test-school/gw-1/event")) == b"hello over mTLS"


@pytest.mark.parametrize(("cert", "alert"), [("none", "CERTIFICATE_REQUIRED"), ("another CA's", "UNKNOWN_CA")])
def test_aiomqtt_client_without_a_valid_client_certificate_is_refused(tls_broker: TlsBroker, cert: str, alert: str,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    pki = tls_broker.pki
    cfg = tls_broker.config(client_cert=False) if cert == "none" else \
        tls_broker.config(client_cert=False, cert_file=pki.other_cert, key_file=pki.other_key)
    with pytest.raises(aiomqtt.MqttError):  # TLS 1.3: the broker's alert comes after the client's handshake
        asyncio.run(_round_trip(cfg, "edu/v1/test-school/gw-1/event", connect_timeout=3))
    assert any(alert in r.getMessage() for r in caplog.records), [r.getMessage() for r in caplog.records]


def test_the_broker_host_name_is_checked_unless_told_otherwise(tls_broker: TlsBroker) -> None:
    # the server certificate names localhost, not 127.0.0.1
    with pytest.raises(aiomqtt.MqttError, match=r"(?i)hostname|IP address mismatch|certificate"):
        asyncio.run(_round_trip(tls_broker.config("127.0.0.1"), "t/1"))
    unchecked = tls_broker.config("127.0.0.1", verify_hostname=False)
    assert asyncio.run(_round_trip(unchecked, "t/1")) == b"hello over mTLS"
    # the chain is still verified: a CA that did not sign the broker's certificate is refused
    wrong_ca = unchecked.model_copy(update={"tls": unchecked.tls.model_copy(  # type: ignore[union-attr]
        update={"ca_file": tls_broker.pki.client_cert})})
    with pytest.raises(aiomqtt.MqttError):
        asyncio.run(_round_trip(wrong_ca, "t/1"))


def test_ssl_context() -> None:
    assert ssl_context(BrokerConfig()) is None
    context = ssl_context(BrokerConfig(tls=MqttTls()))  # system CAs
    assert context is not None and context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert not ssl_context(BrokerConfig(tls=MqttTls(verify_hostname=False))).check_hostname  # type: ignore[union-attr]


# ---------------------------------------------------------------------- paho


def _paho_connect(cfg: BrokerConfig) -> tuple[Any, threading.Event, list[str]]:
    connected, outcome = threading.Event(), []

    def on_connect(_c: Any, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        outcome.append("refused" if reason.is_failure else "connected")
        connected.set()

    client = paho_client(cfg, identifier="paho-tls-test")
    client.on_connect = on_connect
    return client, connected, outcome


def test_paho_client_with_and_without_a_client_certificate(tls_broker: TlsBroker) -> None:
    client, connected, outcome = _paho_connect(tls_broker.config())
    client.connect_first()
    client.loop_start()
    try:
        assert connected.wait(10) and outcome == ["connected"]
        info = client.publish("edu/v1/test-school/gw-1/event", b"x", qos=1)
        info.wait_for_publish(10)
        assert info.is_published()
    finally:
        client.disconnect()
        client.loop_stop()

    client, connected, outcome = _paho_connect(tls_broker.config(client_cert=False))
    disconnected = threading.Event()
    client.on_disconnect = lambda *_: disconnected.set()
    try:
        client.connect_first()
    except (OSError, ssl.SSLError):  # TLS 1.2: refused in the handshake
        return
    client.loop_start()  # TLS 1.3: the broker checks the certificate after the client's handshake is done
    try:
        assert disconnected.wait(10), "the connection without a certificate was not closed"
        assert "connected" not in outcome
    finally:
        client.disconnect()
        client.loop_stop()


# ---------------------------------------------------------------------- a gateway through mTLS


def test_gateway_uplink_through_mtls(tls_broker: TlsBroker, tmp_path: Path) -> None:
    pki = tls_broker.pki
    collector = Collector(tls_broker.broker.port).start()  # on the plain listener
    gw = GatewayProcess(tmp_path / "gw", {
        "school": "test-school", "gateway": "gw-1",
        "uplink": {"host": "localhost", "port": tls_broker.tls_port,
                   "tls": {"ca_file": str(pki.ca), "cert_file": str(pki.client_cert), "key_file": str(pki.client_key)}},
        "devices": [{"id": "door", "driver": "synthetic", "interval_s": 0.05, "values": 0, "event_every": 1}],
    }).start()
    try:
        wait_for(lambda: collector.states and collector.states[0]["status"] == "online", 20, "the gateway's birth")
        wait_for(lambda: len(collector.records["event"]) >= 5, 20, "events through mTLS")
    finally:
        assert gw.stop() == 0
        collector.stop()
