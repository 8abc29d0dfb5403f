"""One YAML file configures central (``central.yaml``): broker, store, ingest workers, event store, pages, keys.

Validated like the gateway's config: every problem as ``file:line: path: message`` (``edugate central-check``).
Every section has defaults equal to the command-line defaults, so no file at all is a valid (local) setup; the
command-line flags override single values of the file. Relative file paths are relative to the file's folder.
Example: ``config/central.yaml``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from edugate.central.assets.config import AssetsSection
from edugate.central.urls import check_push_url, check_store_url, parse_broker_url
from edugate.common.mqtt import BrokerAddress, BrokerConfig, MqttTls, parse_address
from edugate.common.yamlconfig import default_message, format_path, load_model

LOCAL_STORE = "http://127.0.0.1:8428"
GROUP_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _resolve(path: Path | None, base: Path) -> Path | None:
    return path if path is None or path.is_absolute() else (base / path).resolve()


def _resolved_broker(broker: BrokerConfig, base: Path) -> BrokerConfig:
    tls = broker.tls
    if tls is not None:
        tls = tls.model_copy(update={name: _resolve(getattr(tls, name), base)
                                     for name in ("ca_file", "cert_file", "key_file")})
    return broker.model_copy(update={"password_file": _resolve(broker.password_file, base), "tls": tls})


def override_broker(broker: BrokerConfig, *, url: str | None = None, host: str | None = None,
                    port: int | None = None, username: str | None = None, password_file: Path | None = None,
                    ca_file: Path | None = None, cert_file: Path | None = None,
                    key_file: Path | None = None) -> BrokerConfig:
    """The file's broker section with the command-line flags applied (a flag given wins; ValueError if bad).

    ``url`` (``mqtt://host:port`` or ``mqtts://``) replaces the broker list with that one broker, TLS on or off
    as its scheme says; ``host``/``port`` then replace its host or port; a CA file, client certificate or key
    turns TLS on.
    """
    updates: dict[str, Any] = {}
    tls = broker.tls
    if url is not None:
        url_host, url_port, url_tls = parse_broker_url(url)
        updates["brokers"] = [str(BrokerAddress(url_host, url_port))]
        tls = (tls or MqttTls()) if url_tls else None
    if host is not None or port is not None:
        first = broker.addresses[0] if url is None else parse_address(updates["brokers"][0])
        updates["brokers"] = [str(BrokerAddress(host or first.host, port or first.port))]
    tls_updates = {name: value for name, value in (("ca_file", ca_file), ("cert_file", cert_file),
                                                   ("key_file", key_file)) if value is not None}
    if tls_updates:
        tls = (tls or MqttTls()).model_copy(update=tls_updates)
    updates["tls"] = tls
    if username is not None:
        updates["username"] = username
    if password_file is not None:
        updates["password_file"] = password_file
    try:
        return BrokerConfig.model_validate(broker.model_dump() | updates)
    except ValidationError as exc:
        raise ValueError("; ".join(f"{format_path(tuple(e['loc']))}: {default_message(e)}"
                                   for e in exc.errors())) from None


class StoreSection(StrictModel):
    """The time-series store (InfluxDB-compatible write API; VictoriaMetrics with -dedup.minScrapeInterval=1ms)."""

    url: str = Field(LOCAL_STORE, description="http(s)://host:port[/prefix] of the store.")
    bucket: str = Field("edugate", min_length=1, description="Bucket (InfluxDB 2/3; ignored by VictoriaMetrics).")
    org: str = Field("", description="Organisation (InfluxDB 2; ignored by VictoriaMetrics).")
    token_file: Path | None = Field(None, description="File holding the store's API token.")

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return check_store_url(value)


class AmqpSection(StrictModel):
    """The RabbitMQ cluster the workers consume from with ``ingest.transport: amqp`` (docs/central.md, section 8)."""

    servers: list[str] = Field(["amqp://guest:guest@127.0.0.1:5672/"], min_length=1,
                               description="amqp://user:password@host:port/ of each node (tried in turn).")
    password_file: Path | None = Field(None, description="File holding the AMQP password (replaces the one in "
                                       "the URLs, which then carry only the user).")
    queue: str = Field("edugate-ingest", pattern=r"^[A-Za-z0-9_.-]{1,128}$", description="The quorum queue the "
                       "gateways' messages are routed to (declared by the first worker).")
    replicas: int = Field(3, ge=1, le=7, description="Replicas of the quorum queue (one per node).")
    prefetch: int = Field(2000, ge=1, le=65535, description="Deliveries a worker holds unacknowledged at most.")

    @field_validator("servers")
    @classmethod
    def _servers(cls, value: list[str]) -> list[str]:
        for i, url in enumerate(value):
            if not url.startswith(("amqp://", "amqps://")):
                raise ValueError(f"servers[{i}] {url!r}: use amqp://user@host:port/ (or amqps://)")
        return value


class NatsSection(StrictModel):
    """The NATS JetStream cluster the workers pull from with ``ingest.transport: nats`` (docs/central.md)."""

    servers: list[str] = Field(["nats://127.0.0.1:4222"], min_length=1, description="nats://host:port of each node.")
    source: Literal["auto", "mqtt", "stream"] = Field(
        "auto", description="Where workers pull from: 'mqtt' = nats-server's own MQTT stream $MQTT_msgs (stored "
        "before the gateway's PUBACK: nothing acknowledged is lost; Debian's 2.9 and later); 'stream' = a stream of "
        "our own capturing the MQTT subjects, only to drain one left by an older setup (it gets an unconfirmed copy "
        "and can lose what a dying stream leader acknowledged); 'auto' = mqtt (docs/central.md section 6).")
    stream: str = Field("EDUGATE", pattern=r"^[A-Za-z0-9_-]{1,64}$", description="With source 'stream' only: the "
                        "stream gateways' messages are copied to (created by the first worker).")
    durable: str = Field("edugate-ingest", pattern=r"^[A-Za-z0-9_-]{1,64}$", description="The durable consumer "
                         "every worker pulls from (competing consumers).")
    replicas: int = Field(3, ge=1, le=5, description="Copies of the stream (one per node; 3 for a 3-node cluster).")
    max_bytes_mb: int = Field(1024, ge=1, description="With source 'stream' only: the stream's disk budget on "
                              "each node (MiB). $MQTT_msgs is sized by nats-server's JetStream limits "
                              "(max_file_store in its config).")
    ack_wait_s: float = Field(30.0, gt=0, description="A message a worker took and did not acknowledge goes to "
                              "another worker after this.")


class IngestSection(StrictModel):
    """One ingest worker (``edugate ingest``); run several with distinct client ids and the same group."""

    client_id: str | None = Field(None, min_length=1, max_length=128, pattern=r"^[^/+#]+$",
                                  description="Fixed MQTT client id of this worker (its persistent session). "
                                  "Required here or as --client-id.")
    group: str = Field("", max_length=64, description="'' (default) = one worker with a plain subscription, which "
                       "Mosquitto restores after its restart; a name = a shared-subscription group several workers "
                       "split the load in (only on a broker that restores it: see docs/central.md).")
    batch_lines: int = Field(10_000, ge=1, description="Lines per store write at most.")
    batch_ms: int = Field(50, ge=0, description="Wait this long for a batch to fill.")
    queue_mb: int = Field(64, ge=1, description="In-memory queue bound (MiB); when full, reading pauses.")
    stats_file: Path | None = Field(None, description="Write counters and the fleet table here (JSON).")
    stats_interval_s: float = Field(1.0, ge=0.01, description="Seconds between two writes of stats_file.")
    summary_interval_s: float = Field(10.0, ge=0, description="Seconds between INFO summaries (0: none).")
    confirm_stored: bool = Field(True, description="Tell each gateway what was stored, on its .../stored topic "
                                 "(the end-to-end acknowledgement: gateways keep a record until then). false: "
                                 "gateways delete at the broker's PUBACK, and a broker crash can lose what it had "
                                 "not saved (docs/central.md). The nats and amqp transports never confirm.")
    transport: Literal["mqtt", "nats", "amqp"] = Field(
        "mqtt", description="'mqtt': subscribe at the broker (Mosquitto); 'nats': pull from a NATS JetStream stream "
        "(see nats); 'amqp': consume a RabbitMQ quorum queue (see amqp; the cluster setup that keeps every "
        "acknowledged message, docs/central.md).")
    amqp: AmqpSection = Field(default_factory=AmqpSection)
    nats: NatsSection = Field(default_factory=NatsSection)

    @field_validator("group")
    @classmethod
    def _group(cls, value: str) -> str:
        if not set(value) <= GROUP_CHARS:
            raise ValueError(f"group {value!r}: use letters, digits, '-' and '_' ('' = not shared)")
        return value


class EventsSection(StrictModel):
    """The central event log (card taps, alarms, summaries), queried with ``edugate events``."""

    db: Path | None = Field(None, description="SQLite file the ingest workers also write every event to "
                            "(none: events go to the time-series store only).")
    postgres_dsn: str | None = Field(None, description="PostgreSQL instead of the SQLite file "
                                     "(postgresql://user@host:port/db; password in ~/.pgpass): for several workers.")

    @field_validator("postgres_dsn")
    @classmethod
    def _dsn(cls, value: str | None) -> str | None:
        """A connection string libpq can read; the message never repeats it (it may hold a password)."""
        if value is None:
            return None
        try:
            from psycopg.conninfo import conninfo_to_dict  # the [central] extra's PostgreSQL driver
        except ImportError:
            return value  # checked when the database is opened
        try:
            conninfo_to_dict(value)
        except Exception:  # psycopg.ProgrammingError; its text quotes the string: not shown
            raise ValueError("not a PostgreSQL connection string (postgresql://user@host:port/db, or "
                             "'host=... dbname=...'); the value is not shown, it may hold a password") from None
        return value


class PagesSection(StrictModel):
    """Central's fleet pages (``edugate central``)."""

    host: str = Field("127.0.0.1", min_length=1, description="Address to serve the pages on.")
    port: int = Field(8090, ge=1, le=65535, description="Port of the pages.")
    data_dir: Path = Field(Path("/var/lib/edugate-central"), description="Session secret and (by default) the "
                           "users file.")
    users_file: Path | None = Field(None, description="Who may log in (default: web-users.json in data_dir); "
                                    "edit with 'edugate web-user ... --users-file'.")
    timezone: str = Field("Asia/Ho_Chi_Minh", description="IANA time zone of the times shown.")
    client_id: str = Field("edugate-central", min_length=1, max_length=128, pattern=r"^[^/+#]+$",
                           description="MQTT client id of the pages' state follower.")

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r} (use an IANA name like Asia/Ho_Chi_Minh)") from None
        return value

    def users_path(self) -> Path:
        return self.users_file or self.data_dir / "web-users.json"


class SigningSection(StrictModel):
    """Central's command-signing key pair (``edugate keygen``); used by ``edugate sign`` and ``send``."""

    private_key: Path | None = Field(None, description="The private key (PEM, mode 0600): keep it on the "
                                     "signing host only.")
    public_key: Path | None = Field(None, description="Its public key, the file every gateway lists in "
                                    "downlink.public_keys.")


class ApiSection(StrictModel):
    """The operations centre's open API (``edugate api``, ``edugate api-key``, ``edugate report``): docs/api."""

    host: str = Field("127.0.0.1", min_length=1, description="Address to serve the API on.")
    port: int = Field(8095, ge=1, le=65535, description="Port of the API.")
    keys_file: Path = Field(Path("/var/lib/edugate-central/api-keys.json"), description="The consumers' API keys "
                            "(hashed); edit with 'edugate api-key add|remove|list'.")
    k: int = Field(5, ge=2, le=100, description="Counts of children's actions below k are suppressed.")
    round_to: int | None = Field(None, ge=1, le=100, description="Other such counts are rounded to a multiple of "
                                 "this (default: k).")
    rate_per_minute: int = Field(60, ge=1, description="Requests per minute per API key (bursts up to this).")
    health_interval_s: float = Field(30.0, gt=0, description="The gateways' uplink.health_interval_s: what "
                                     "'expected' means for completeness and uptime.")
    cache_s: float = Field(60.0, ge=0, description="Seconds a period's figures are reused between requests.")
    districts: dict[str, list[str]] = Field(default_factory=dict, description="District id -> its school ids "
                                            "(schools not listed are in district 'unassigned').")
    expected_students: dict[str, dict[str, int]] = Field(
        default_factory=dict, description="School id -> room -> the students expected in that room in each "
        "timetable period (its class): what presence_rate_pct divides by (docs/metrics.md).")

    @field_validator("expected_students")
    @classmethod
    def _expected(cls, value: dict[str, dict[str, int]]) -> dict[str, dict[str, int]]:
        for school, rooms in value.items():
            for room, students in rooms.items():
                if students < 1:
                    raise ValueError(f"{school}: room {room!r}: {students} students expected; give 1 or more, or "
                                     "leave the room out")
        return value


class PushRetry(StrictModel):
    """How a failed delivery is retried: after attempt n, wait min(max_s, initial_s x factor^(n-1))."""

    max_attempts: int = Field(8, ge=1, le=100, description="Attempts before a batch goes to the dead letters.")
    initial_s: float = Field(30.0, gt=0, description="Wait after the first failed attempt.")
    factor: float = Field(2.0, ge=1, description="Each further wait is this many times the previous one.")
    max_s: float = Field(3600.0, gt=0, description="No wait longer than this.")
    timeout_s: float = Field(30.0, gt=0, description="An attempt with no answer after this has failed.")


class PushSection(StrictModel):
    """Signed, idempotent deliveries of the anonymised figures to the department's warehouse (``edugate push``):
    docs/operations-centre.md."""

    url: str | None = Field(None, description="http(s):// URL the batches are POSTed to (none: no push).")
    secret_file: Path | None = Field(None, description="File holding the shared HMAC-SHA256 secret (at least "
                                     "32 characters; 'openssl rand -hex 32'). Required with url.")
    schedule: str = Field("30 2 * * *", description="Cron expression (minute hour day month weekday, in "
                          "pages.timezone) of the runs of 'edugate push run'.")
    periods: list[Literal["day", "week", "month", "half"]] = Field(
        ["day", "month"], min_length=1, description="Each run sends the last complete period of each of these.")
    batch_rows: int = Field(500, ge=1, le=100_000, description="Figure rows per delivery at most.")
    state_db: Path = Field(Path("/var/lib/edugate-central/push.sqlite"), description="SQLite file of the batches "
                           "made, their deliveries and the dead letters.")
    retry: PushRetry = Field(default_factory=PushRetry)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        return None if value is None else check_push_url(value)

    @field_validator("schedule")
    @classmethod
    def _schedule(cls, value: str) -> str:
        from croniter import croniter  # type: ignore[import-untyped]  # central extra only

        if len(value.split()) != 5 or not croniter.is_valid(value):
            raise ValueError(f"{value!r} is not a cron expression (5 fields: minute hour day month weekday, "
                             "e.g. '30 2 * * *' for 02:30 every day)")
        return value

    @model_validator(mode="after")
    def _secret_with_url(self) -> PushSection:
        if self.url is not None and self.secret_file is None:
            raise ValueError("secret_file is required with url: every delivery is signed")
        return self


class CentralConfig(StrictModel):
    """``central.yaml``."""

    broker: BrokerConfig = Field(default_factory=BrokerConfig, description="The MQTT broker(s): the same section "
                                 "as a gateway's (edugate.common.mqtt.BrokerConfig).")
    store: StoreSection = Field(default_factory=StoreSection)
    ingest: IngestSection = Field(default_factory=IngestSection)
    events: EventsSection = Field(default_factory=EventsSection)
    pages: PagesSection = Field(default_factory=PagesSection)
    signing: SigningSection = Field(default_factory=SigningSection)
    api: ApiSection = Field(default_factory=ApiSection)
    push: PushSection = Field(default_factory=PushSection)
    assets: AssetsSection = Field(default_factory=AssetsSection)  # issue 16: the central asset registry
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="Logging level.")

    @field_validator("broker")
    @classmethod
    def _client_ids_per_process(cls, broker: BrokerConfig) -> BrokerConfig:
        if broker.client_id is not None:
            raise ValueError("client_id is not used by central: each central process has its own, set "
                             "ingest.client_id (one per worker) and pages.client_id")
        return broker

    def resolved(self, base: Path) -> CentralConfig:
        """Relative file paths taken relative to ``base`` (the config file's folder)."""
        return self.model_copy(update={
            "broker": _resolved_broker(self.broker, base),
            "store": self.store.model_copy(update={"token_file": _resolve(self.store.token_file, base)}),
            "ingest": self.ingest.model_copy(update={
                "stats_file": _resolve(self.ingest.stats_file, base),
                "amqp": self.ingest.amqp.model_copy(update={"password_file": _resolve(self.ingest.amqp.password_file,
                                                                                     base)})}),
            "events": self.events.model_copy(update={"db": _resolve(self.events.db, base)}),
            "pages": self.pages.model_copy(update={"data_dir": _resolve(self.pages.data_dir, base),
                                                   "users_file": _resolve(self.pages.users_file, base)}),
            "signing": self.signing.model_copy(update={"private_key": _resolve(self.signing.private_key, base),
                                                       "public_key": _resolve(self.signing.public_key, base)}),
            "api": self.api.model_copy(update={"keys_file": _resolve(self.api.keys_file, base)}),
            "push": self.push.model_copy(update={"secret_file": _resolve(self.push.secret_file, base),
                                                 "state_db": _resolve(self.push.state_db, base)}),
        })


def load_central_config(path: Path | None) -> CentralConfig:
    """``central.yaml`` validated, paths resolved; the defaults when ``path`` is None. Raises ``ConfigError``."""
    if path is None:
        return CentralConfig()
    return load_model(path, CentralConfig).resolved(path.parent)
