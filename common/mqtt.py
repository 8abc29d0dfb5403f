"""One way to build an MQTT client: broker list (failover order), TLS and client certificates (mTLS),
credentials from a file, client id, keepalive, session, last will, and a reconnect policy with full jitter.

Every MQTT client of the project (gateway uplink, ingest worker, central pages, ``edugate send``) is built
here, so that a change to how EduGate connects (per-gateway certificates, another broker) is made once.

- :class:`BrokerConfig` is the configuration model (the gateway's ``uplink:`` section converts to it,
  ``central.yaml`` embeds it).
- :func:`ssl_context` builds the TLS context; :func:`aiomqtt_client` and :func:`paho_client` build clients.
- :class:`Backoff` gives reconnect delays with *full jitter*: each delay is uniform in
  ``[0, min(cap, first * 2**attempt)]``, so that after a broker restart a fleet does not reconnect in lock-step.
- :class:`Failover` walks the broker list for a reconnect loop: it moves to the next broker after a failed
  attempt and starts again from the first (preferred) one after a connection that worked.
"""

from __future__ import annotations

import asyncio
import random
import ssl
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

DEFAULT_PORT = 1883


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class BrokerAddress:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_address(text: str, default_port: int = DEFAULT_PORT) -> BrokerAddress:
    """``host``, ``host:port``, ``[v6-address]:port`` -> :class:`BrokerAddress`; ValueError if malformed."""
    text = text.strip()
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(f"{text!r}: expected '[address]:port'")
        port_text = rest[1:]
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    elif ":" in text:
        raise ValueError(f"{text!r}: write an IPv6 address as '[address]:port'")
    else:
        host, port_text = text, ""
    if not host:
        raise ValueError(f"{text!r}: the host is missing")
    if not port_text:
        return BrokerAddress(host, default_port)
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ValueError(f"{text!r}: the port must be a number from 1 to 65535")
    return BrokerAddress(host, int(port_text))


def _check_address(text: str) -> str:
    parse_address(text)
    return text


BrokerText = Annotated[str, AfterValidator(_check_address)]


class MqttTls(_Model):
    ca_file: Path | None = Field(None, description="CA certificate(s) that signed the broker's certificate; "
                                 "the system's CAs if omitted.")
    cert_file: Path | None = Field(None, description="This client's certificate (mTLS).")
    key_file: Path | None = Field(None, description="This client's private key (mode 0600); omit if it is "
                                  "in cert_file.")
    verify_hostname: bool = Field(True, description="Check that the broker's certificate names the host "
                                  "connected to. The certificate chain is always verified.")

    @model_validator(mode="after")
    def _key_needs_cert(self) -> MqttTls:
        if self.key_file is not None and self.cert_file is None:
            raise ValueError("key_file is given without cert_file")
        return self


class ReconnectPolicy(_Model):
    first_delay_s: float = Field(0.1, gt=0, le=60, description="Ceiling of the first reconnect delay.")
    max_delay_s: float = Field(1.0, gt=0, le=300, description="Cap of the reconnect delay; the ceiling doubles "
                               "from first_delay_s up to it.")
    jitter: Literal["full", "none"] = Field("full", description="'full': every delay is random in [0, ceiling], "
                                            "so a fleet does not reconnect in lock-step after a broker restart.")

    @model_validator(mode="after")
    def _first_below_cap(self) -> ReconnectPolicy:
        if self.first_delay_s > self.max_delay_s:
            raise ValueError(f"first_delay_s ({self.first_delay_s}) is above max_delay_s ({self.max_delay_s})")
        return self


class BrokerConfig(_Model):
    """How to reach the MQTT broker(s)."""

    brokers: list[BrokerText] = Field(default_factory=lambda: [f"127.0.0.1:{DEFAULT_PORT}"], min_length=1,
                                      description="'host:port' of each broker, in failover order.")
    tls: MqttTls | None = Field(None, description="Connect with TLS (and mTLS with cert_file).")
    username: str | None = None
    password_file: Path | None = Field(None, description="File holding the MQTT password (not the password).")
    client_id: str | None = Field(None, description="MQTT client id; the program's default if omitted.")
    keepalive_s: int = Field(15, ge=2, le=3600, description="MQTT keepalive; the broker declares the client gone "
                             "(last will) after 1.5x this without traffic.")
    protocol: Literal["3.1.1", "5"] = Field("3.1.1", description="MQTT protocol version.")
    clean_session: bool = Field(True, description="False: the broker keeps the session (subscriptions, QoS 1 "
                                "messages) while the client is away (needs a fixed client_id).")
    session_expiry_s: int | None = Field(None, ge=0, description="MQTT 5 only: how long the broker keeps the "
                                         "session after a disconnect.")
    reconnect: ReconnectPolicy = Field(default_factory=ReconnectPolicy)

    @model_validator(mode="after")
    def _session_expiry_needs_v5(self) -> BrokerConfig:
        if self.session_expiry_s is not None and self.protocol != "5":
            raise ValueError("session_expiry_s needs protocol '5'")
        return self

    @property
    def addresses(self) -> list[BrokerAddress]:
        return [parse_address(b) for b in self.brokers]

    def password(self, option: str = "password_file") -> str | None:
        """The password, read from ``password_file`` (stripped), or None. A file that cannot be used raises
        :class:`PasswordFileError` naming ``option`` (what the caller calls it: ``uplink.password_file``,
        ``--password-file``...) and the file."""
        return read_password_file(self.password_file, option) if self.password_file else None


class PasswordFileError(ValueError):
    """A password file that cannot be used: the message names the option, the file and why."""


def read_password_file(path: Path, option: str = "password_file") -> str:
    """The password in ``path`` (UTF-8 text, surrounding white space stripped); :class:`PasswordFileError`
    naming ``option`` and the file if it is missing, unreadable, not text or empty."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise PasswordFileError(f"{option}: cannot read {path}: {exc.strerror or exc}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PasswordFileError(f"{option}: {path} is not UTF-8 text (byte {data[exc.start]:#04x} at offset "
                                f"{exc.start}): it must hold the password itself") from None
    password = text.strip()
    if not password:
        raise PasswordFileError(f"{option}: {path} is empty: it must hold the password")
    return password


@dataclass(frozen=True)
class LastWill:
    """The message the broker publishes for a client that vanishes."""

    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = True


# ---------------------------------------------------------------------- reconnect policy


class Backoff:
    """Reconnect delays: the ceiling doubles from ``first_delay_s`` to ``max_delay_s``; with full jitter each
    delay is uniform in ``[0, ceiling]``. :meth:`reset` after a connection that worked."""

    def __init__(self, policy: ReconnectPolicy, rng: random.Random | None = None) -> None:
        self.policy = policy
        self._rng = rng or random.Random()
        self._attempt = 0

    @property
    def attempt(self) -> int:
        return self._attempt

    def ceiling(self) -> float:
        return min(self.policy.max_delay_s, self.policy.first_delay_s * 2 ** min(self._attempt, 62))

    def next(self) -> float:
        """The delay before the next attempt."""
        ceiling = self.ceiling()
        self._attempt += 1
        return self._rng.uniform(0, ceiling) if self.policy.jitter == "full" else ceiling

    def reset(self) -> None:
        self._attempt = 0

    async def sleep(self) -> float:
        delay = self.next()
        await asyncio.sleep(delay)
        return delay


class Failover:
    """Which broker to try next: the list in order, moving on after a failed attempt, back to the first
    (preferred) broker after a connection that worked and was lost."""

    def __init__(self, cfg: BrokerConfig) -> None:
        self.addresses = cfg.addresses
        self._index = 0

    @property
    def current(self) -> BrokerAddress:
        return self.addresses[self._index]

    def failed(self) -> BrokerAddress:
        """The attempt on :attr:`current` failed: move on; returns the next broker to try."""
        self._index = (self._index + 1) % len(self.addresses)
        return self.current

    def connected(self) -> None:
        """A connection worked: after losing it, start again from the preferred broker."""
        self._index = 0


# ---------------------------------------------------------------------- TLS


def ssl_context(cfg: BrokerConfig) -> ssl.SSLContext | None:
    """The TLS context for ``cfg`` (None without ``tls``): broker certificate verified against ``ca_file``
    (system CAs if omitted), host name checked unless ``verify_hostname`` is false, client certificate
    loaded for mTLS."""
    tls = cfg.tls
    if tls is None:
        return None
    context = ssl.create_default_context(cafile=str(tls.ca_file) if tls.ca_file else None)
    context.check_hostname = tls.verify_hostname
    if tls.cert_file is not None:
        context.load_cert_chain(str(tls.cert_file), str(tls.key_file) if tls.key_file else None)
    return context


# ---------------------------------------------------------------------- clients


def aiomqtt_client(cfg: BrokerConfig, *, will: LastWill | None = None, identifier: str | None = None,
                   broker: BrokerAddress | None = None, password: str | None = None, **options: Any) -> Any:
    """An ``aiomqtt.Client`` for ``broker`` (default: the first of ``cfg.brokers``; a reconnect loop passes
    :attr:`Failover.current`). ``identifier`` is used when ``cfg.client_id`` is not set; ``password``, when
    given, instead of reading ``cfg.password_file``. ``options`` go to ``aiomqtt.Client`` as they are
    (``timeout``, ``max_inflight_messages``...)."""
    import aiomqtt
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    address = broker or cfg.addresses[0]
    v5 = cfg.protocol == "5"
    if v5:
        options.setdefault("clean_start", cfg.clean_session)
        if cfg.session_expiry_s is not None:
            properties = Properties(PacketTypes.CONNECT)
            properties.SessionExpiryInterval = cfg.session_expiry_s
            options.setdefault("properties", properties)
    else:
        options.setdefault("clean_session", cfg.clean_session)
    return aiomqtt.Client(
        address.host, address.port,
        identifier=cfg.client_id or identifier,
        protocol=aiomqtt.ProtocolVersion.V5 if v5 else aiomqtt.ProtocolVersion.V311,
        username=cfg.username, password=password if password is not None else cfg.password(),
        tls_context=ssl_context(cfg),
        keepalive=cfg.keepalive_s,
        will=aiomqtt.Will(will.topic, will.payload, qos=will.qos, retain=will.retain) if will else None,
        **options,
    )


def paho_client(cfg: BrokerConfig, *, will: LastWill | None = None, identifier: str | None = None,
                password: str | None = None, manual_ack: bool = False, userdata: Any = None,
                rng: random.Random | None = None) -> Any:
    """A paho ``Client`` (callback API 2) that fails over along ``cfg.brokers`` and waits a jittered
    :class:`Backoff` between reconnect attempts. Start it with ``client.connect_async_first()`` (or
    ``client.connect_first()``) and ``loop_start()``/``loop_forever()``. ``identifier`` and ``password`` as
    for :func:`aiomqtt_client`."""
    return _failover_paho_class()(cfg, will=will, identifier=identifier, password=password, manual_ack=manual_ack,
                                  userdata=userdata, rng=rng)


_PAHO_CLASS: type | None = None


def _failover_paho_class() -> type:
    global _PAHO_CLASS
    if _PAHO_CLASS is not None:
        return _PAHO_CLASS
    import paho.mqtt.client as mqtt
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    class FailoverPahoClient(mqtt.Client):
        """paho's client with broker failover and a jittered back-off (paho's own doubles with no jitter).

        paho's network loop calls ``reconnect()`` and ``_reconnect_wait()``; both are overridden: the first
        picks the broker from :class:`Failover`, the second sleeps a :class:`Backoff` delay. paho marks a
        working connection by clearing ``_reconnect_delay`` on CONNACK, which resets the back-off and the
        failover (it starts at 0.0 here, so that failures before any connection do not reset them).
        """

        def __init__(self, cfg: BrokerConfig, *, will: LastWill | None, identifier: str | None,
                     password: str | None, manual_ack: bool, userdata: Any, rng: random.Random | None) -> None:
            v5 = cfg.protocol == "5"
            super().__init__(mqtt.CallbackAPIVersion.VERSION2, client_id=cfg.client_id or identifier or "",
                             clean_session=None if v5 else cfg.clean_session, userdata=userdata,
                             protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311, manual_ack=manual_ack)
            self.broker_config = cfg
            self.failover = Failover(cfg)
            self.backoff = Backoff(cfg.reconnect, rng)
            self._edugate_tried = self.failover.current
            self._reconnect_delay = 0.0  # type: ignore[assignment]  # None means "a CONNACK came": see below
            self.delays: list[float] = []  # the reconnect delays waited so far (the last 100)
            self._edugate_connect_properties: Properties | None = None
            if v5 and cfg.session_expiry_s is not None:
                self._edugate_connect_properties = Properties(PacketTypes.CONNECT)
                self._edugate_connect_properties.SessionExpiryInterval = cfg.session_expiry_s
            if cfg.username:
                self.username_pw_set(cfg.username, password if password is not None else cfg.password())
            context = ssl_context(cfg)
            if context is not None:
                self.tls_set_context(context)
            if will is not None:
                self.will_set(will.topic, will.payload, qos=will.qos, retain=will.retain)

        @property
        def broker(self) -> BrokerAddress:
            """The broker connected to, or tried last."""
            return self._edugate_tried

        def connect_async_first(self) -> None:
            """Connect from ``loop_start()``'s thread, failing over along the broker list."""
            address = self.failover.current
            self.connect_async(address.host, address.port, keepalive=self.broker_config.keepalive_s,
                               clean_start=self.broker_config.clean_session,
                               properties=self._edugate_connect_properties)

        def connect_first(self) -> mqtt.MQTTErrorCode:
            """Connect now, trying each broker of the list once in order; OSError of the last if none answers."""
            last: OSError | None = None
            for _ in self.failover.addresses:
                self.connect_async_first()
                try:
                    return self.reconnect()
                except OSError as exc:
                    last = exc
            assert last is not None
            raise last

        def reconnect(self) -> mqtt.MQTTErrorCode:
            address = self._edugate_tried = self.failover.current
            self._host, self._port = address.host, address.port
            try:
                return super().reconnect()
            except OSError:
                self.failover.failed()
                raise

        def _reconnect_wait(self) -> None:
            with self._reconnect_delay_mutex:
                if self._reconnect_delay is None:  # paho clears it on a successful CONNACK
                    self.backoff.reset()
                    self.failover.connected()
                delay = self.backoff.next()
                self._reconnect_delay = delay  # type: ignore[assignment]  # paho types it int; a float works
            self.delays = [*self.delays[-99:], delay]
            deadline = time.monotonic() + delay
            while (self._state not in (mqtt._ConnectionState.MQTT_CS_DISCONNECTING,
                                       mqtt._ConnectionState.MQTT_CS_DISCONNECTED)
                   and not self._thread_terminate and (remaining := deadline - time.monotonic()) > 0):
                time.sleep(min(remaining, 1))

    _PAHO_CLASS = FailoverPahoClient
    return FailoverPahoClient
