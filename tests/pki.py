"""Shared test fixtures for identity and ACLs: a CA made by ``edugate.common.provisioning``, gateway bundles,
central identities, and a real Mosquitto with an mTLS listener and the ACL rendered from the CA's records."""

from __future__ import annotations

import datetime
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from edugate.common.mqtt import BrokerConfig, MqttTls
from edugate.common.provisioning import (
    Bundle,
    CertificateAuthority,
    Role,
    gateway_bundle,
    new_key,
    render_acl,
    render_tls_conf,
    write_pem,
    write_private_key,
)
from edugate.simulators.servers import Mosquitto, free_port


@dataclass(frozen=True)
class Identity:
    cert: Path
    key: Path


def central_identity(ca: CertificateAuthority, folder: Path, name: str, role: Role) -> Identity:
    key = new_key()
    return Identity(write_pem(ca.issue(name, key.public_key(), role=role), folder / f"{name}.pem"),
                    write_private_key(key, folder / f"{name}.key"))


def stray_identity(folder: Path, name: str, *, ca: CertificateAuthority | None = None, expired: bool = False,
                   identity: str = "s1/gw-a") -> Identity:
    """A client certificate the broker must refuse: self-signed (``ca`` None), from ``ca`` (another CA), or
    ``expired`` (issued by ``ca`` ten days ago for one day)."""
    if ca is None:  # self-signed: a CA certificate of its own, used as a client certificate
        own = CertificateAuthority.create(folder / name, identity)
        return Identity(own.folder / "ca.pem", own.folder / "ca.key")
    key = new_key()
    start = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=10) if expired else None
    cert = ca.issue(identity, key.public_key(), days=1, not_before=start)
    return Identity(write_pem(cert, folder / f"{name}.pem"), write_private_key(key, folder / f"{name}.key"))


@dataclass
class ProvisionedBroker:
    """Mosquitto whose TLS listener requires a certificate from ``ca`` and applies the generated ACL."""

    broker: Mosquitto
    tls_port: int
    ca: CertificateAuthority
    folder: Path
    gateways: dict[str, Bundle] = field(default_factory=dict)  # "school/gateway" -> its bundle
    central: dict[str, Identity] = field(default_factory=dict)  # "ingest-1", "sender-1"

    def config(self, who: Identity | Bundle, *, protocol: str = "5", client_id: str | None = None) -> BrokerConfig:
        cert = who.cert
        assert cert is not None
        return BrokerConfig(brokers=[f"localhost:{self.tls_port}"], protocol=protocol,
                            client_id=client_id,
                            tls=MqttTls(ca_file=self.ca.folder / "ca.pem", cert_file=cert, key_file=who.key))

    def identity(self, name: str) -> Identity:
        if name in self.central:
            return self.central[name]
        bundle = self.gateways[name]
        assert bundle.cert is not None
        return Identity(bundle.cert, bundle.key)

    def log(self) -> str:
        return self.broker.log_path.read_text(errors="replace")


@contextmanager
def provisioned_broker(folder: Path, gateways: list[tuple[str, str]]) -> Iterator[ProvisionedBroker]:
    """A CA, ``gateways`` provisioned from it, ``ingest-1`` (role ingest), ``sender-1`` (role sender), the
    broker's server certificate for ``localhost``, and Mosquitto with the rendered TLS listener and ACL.
    Mosquitto's own plain listener (the test helpers') allows anonymous clients, which the ACL gives nothing."""
    ca = CertificateAuthority.create(folder / "ca", "EduGate test district CA")
    port = free_port()
    bundles = {f"{s}/{g}": gateway_bundle(folder / "gateways" / s / g, s, g, brokers=[f"localhost:{port}"], ca=ca)
               for s, g in gateways}
    central = {"ingest-1": central_identity(ca, folder / "central", "ingest-1", "ingest"),
               "sender-1": central_identity(ca, folder / "central", "sender-1", "sender")}
    broker_dir = folder / "broker"
    cert, key = ca.issue_server(["localhost"])
    write_pem(cert, broker_dir / "server.pem")
    write_private_key(key, broker_dir / "server.key")
    write_pem(ca.cert, broker_dir / "ca.pem")
    (broker_dir / "acl").write_text(render_acl(ca.records()))
    ca.write_crl(broker_dir / "crl.pem")  # the listener reads it (crlfile): empty until a revocation
    # the helpers' plain listener needs anonymous clients for its readiness check; the ACL gives them nothing
    conf = render_tls_conf(broker_dir, port).replace("allow_anonymous false", "allow_anonymous true")
    broker = Mosquitto(folder / "mosquitto", extra_conf=conf)
    broker.start()
    try:
        yield ProvisionedBroker(broker, port, ca, broker_dir, bundles, central)
    finally:
        broker.stop()
