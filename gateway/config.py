"""One YAML file configures one gateway. This module defines its schema and loads it.

Every problem is reported with its place in the file, e.g.
``site.yaml:14: devices[2].port: Input should be less than or equal to 65535``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Literal, Union
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator, model_validator

from edugate.common.card_identity import CardIdentityRule, check_readers
from edugate.common.mqtt import BrokerAddress, BrokerConfig, BrokerText, MqttTls, ReconnectPolicy, parse_address
from edugate.common.syslog5424 import SyslogConfig
from edugate.common.yamlconfig import ConfigError, Problem, format_path, parse_mapping, read_text
from edugate.common.yamlconfig import line_of as _line_of
from edugate.drivers.base import ID_PATTERN, DeviceConfig
from edugate.drivers.registry import broken_drivers, driver_classes, driver_names, load_drivers
from edugate.gateway.downlink.config import DownlinkConfig
from edugate.gateway.services.registry import (
    broken_services,
    config_sections,
    optional_service_names,
    service_classes,
)
from edugate.gateway.web.config import WebConfig

SCHEMA_VERSION = 1


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


TlsConfig = MqttTls  # the uplink's tls: section (CA, client certificate for mTLS, verify_hostname)


class UplinkConfig(StrictModel):
    """The connection part converts to the shared :class:`BrokerConfig` (:meth:`broker_config`)."""

    host: str = Field("127.0.0.1", description="MQTT broker host name or address (one broker; see brokers).")
    port: int = Field(1883, ge=1, le=65535)
    brokers: list[BrokerText] | None = Field(None, description="'host:port' of each broker, in failover order "
                                             "(instead of host and port).")
    client_id: str | None = Field(None, description="Defaults to 'edugate-<school>-<gateway>'.")
    username: str | None = None
    password_file: Path | None = Field(None, description="File holding the MQTT password (not the password).")
    tls: TlsConfig | None = None
    keepalive_s: int = Field(15, ge=2, le=3600, description="MQTT keepalive; the broker declares the "
                             "gateway offline (last will) after 1.5x this without traffic.")
    batch_max_records: int = Field(1000, ge=1, le=100_000, description="Records per MQTT message at most.")
    batch_max_bytes: int = Field(256_000, ge=1024, le=16_000_000, description="Payload bytes per message.")
    batch_linger_ms: int = Field(20, ge=0, le=5000, description="Wait this long for a small telemetry batch "
                                 "to fill before sending it (events are never held back).")
    inflight_window: int = Field(8, ge=1, le=1000, description="Messages published and not yet PUBACKed.")
    reconnect_max_s: float = Field(1.0, gt=0, le=300, description="Cap of the reconnect back-off; each delay is "
                                   "random in [0, cap] (full jitter) so that a fleet does not reconnect in lock-step.")
    health_interval_s: float = Field(30.0, gt=0, description="Period of the gateway health record.")
    end_to_end_ack: bool = Field(True, description="Keep each record after the broker's PUBACK until central's "
                                 "ingest confirms it stored it (on .../stored), so that a broker crash loses "
                                 "nothing. Takes effect once central has confirmed anything (a central that never "
                                 "confirms leaves the gateway deleting at the PUBACK); false: always at the PUBACK.")
    confirm_timeout_s: float = Field(60.0, ge=1, le=86400, description="A record the broker acknowledged and "
                                     "central has not confirmed this long after confirming later ones is sent "
                                     "again (central stores it once); a reconnect sends every unconfirmed record.")

    @model_validator(mode="after")
    def _brokers_or_host(self) -> UplinkConfig:
        if self.brokers is not None and self.model_fields_set & {"host", "port"}:
            raise ValueError("give either brokers or host/port, not both")
        return self

    @property
    def broker_list(self) -> list[str]:
        """``brokers``, or the one ``host:port``."""
        return self.brokers or [str(BrokerAddress(self.host, self.port))]

    @property
    def first_broker(self) -> BrokerAddress:
        return parse_address(self.broker_list[0])

    def broker_config(self, default_client_id: str) -> BrokerConfig:
        """The connection settings as the shared MQTT builder's config (edugate.common.mqtt)."""
        return BrokerConfig(
            brokers=self.broker_list,
            tls=self.tls, username=self.username, password_file=self.password_file,
            client_id=self.client_id or default_client_id, keepalive_s=self.keepalive_s, clean_session=True,
            reconnect=ReconnectPolicy(first_delay_s=min(0.1, self.reconnect_max_s), max_delay_s=self.reconnect_max_s),
        )


class StorageConfig(StrictModel):
    path: Path = Field(Path("/var/lib/edugate/outbox.sqlite"), description="The outbox database file.")
    budget_mb: float = Field(256.0, gt=0, description="Disk budget for queued records; telemetry is thinned, "
                             "then dropped (counted) beyond it. Events are never dropped.")
    sync: Literal["full", "normal"] = Field("full", description="'full' survives power loss; 'normal' only "
                                            "a crash of the process.")
    telemetry_commit_delay_ms: float = Field(
        10.0, ge=0, le=1000, description="Readings of different devices arriving less than 1 ms apart share one "
        "transaction and fsync, for up to this long; 0 commits each group at once. Events never wait.")


class PrivacyConfig(StrictModel):
    secret_file: Path = Field(Path("/var/lib/edugate/school.key"), description="The school's pseudonymisation "
                              "key (mode 0600), created on first run. Back it up: it is needed to re-identify.")
    card_identity: CardIdentityRule | None = Field(None, description="The school's card identity rule, the same "
                                                   "on every gateway of the school: which part of a card's number "
                                                   "its pseudonym is taken over, so that one card gives one "
                                                   "pseudonym at every reader (docs/drivers/cards.md). Without it, "
                                                   "cards are pseudonymised as each reader reads them.")


class ClockConfig(StrictModel):
    synced: Literal["auto", "always", "never"] = Field(
        "auto", description="'auto' asks the kernel whether NTP has synchronised the clock.")


def _device_union(drivers: frozenset[str] | None) -> Any:
    classes = driver_classes() if drivers is None else load_drivers(drivers)
    models = [cls.config_model for cls in classes.values()]
    if not models:
        return DeviceConfig
    if len(models) == 1:
        return models[0]
    return Annotated[Union[tuple(models)], Field(discriminator="driver")]  # noqa: UP007


class GatewayConfigBase(StrictModel):
    schema_version: Literal[1] = Field(SCHEMA_VERSION, description="Version of this file's schema.")
    school: str = Field(pattern=ID_PATTERN, description="School id, e.g. 'thpt-le-quy-don'.")
    gateway: str = Field(pattern=ID_PATTERN, description="Gateway id, unique within the school.")
    district: str | None = Field(None, max_length=64)
    name: str | None = Field(None, max_length=200, description="Human-readable site name.")
    uplink: UplinkConfig = Field(default_factory=UplinkConfig)
    storage: StorageConfig = Field(default_factory=StorageConfig)
    clock: ClockConfig = Field(default_factory=ClockConfig)
    privacy: PrivacyConfig = Field(default_factory=PrivacyConfig)
    downlink: DownlinkConfig = Field(default_factory=DownlinkConfig)
    timezone: str = Field("Asia/Ho_Chi_Minh", description="IANA time zone of the school (timetable, bus routes).")
    web: WebConfig = Field(default_factory=WebConfig, description="The local status and live-readings pages.")
    syslog: SyslogConfig | None = Field(None, description="Send security events (failed logins, refused "
                                        "commands, ACL refusals, admin actions) to syslog as RFC 5424 "
                                        "lines (docs/security.md).")
    devices: list[DeviceConfig] = Field(default_factory=list)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r} (e.g. 'Asia/Ho_Chi_Minh')") from None
        return value

    @model_validator(mode="after")
    def _unique_device_ids(self) -> GatewayConfigBase:
        seen: dict[str, int] = {}
        for i, dev in enumerate(self.devices):
            if dev.id in seen:
                raise ValueError(f"duplicate device id {dev.id!r} (devices[{seen[dev.id]}] and devices[{i}])")
            seen[dev.id] = i
        self.web.check_devices(set(seen))
        return self

    @model_validator(mode="after")
    def _card_readers_fit_the_rule(self) -> GatewayConfigBase:
        if problems := check_readers(self.privacy.card_identity, self.devices):
            raise ValueError("; ".join(problems))
        return self


def _service_fields(keys: frozenset[str] | None) -> dict[str, Any]:
    """One top-level key per config section the registered services declare (``timetable:``, ``bus:``...);
    an optional service's (``models:``) only when ``keys`` has it or is None."""
    fields: dict[str, Any] = {}
    for key, section in config_sections(reserved=GatewayConfigBase.model_fields, keys=keys).items():
        if section.required:
            fields[key] = (section.model, Field(default_factory=section.model, description=section.description))
        else:
            fields[key] = (section.model | None, Field(None, description=section.description))
    return fields


@cache
def gateway_config_model(drivers: frozenset[str] | None = None,
                         optional_services: frozenset[str] | None = None) -> type[GatewayConfigBase]:
    """The config model with the services' sections and ``devices`` typed by each driver's own config model.

    ``drivers`` limits it to those drivers (what :func:`parse_config` uses for a config whose devices
    all name installed drivers, so that only those are imported); None means every installed driver.
    ``optional_services`` likewise limits the services registered with an extra (the ``models`` stage and its
    onnxruntime) to those a config has a section for; None means all of them.
    """
    fields: dict[str, Any] = {**_service_fields(optional_services),
                              "devices": (list[_device_union(drivers)], Field(default_factory=list))}  # type: ignore[misc]  # a union built at run time
    model: type[GatewayConfigBase] = create_model("GatewayConfig", __base__=GatewayConfigBase, **fields)
    return model


GatewayConfig = GatewayConfigBase  # the type to annotate with; instances come from gateway_config_model()


def json_schema() -> dict[str, Any]:
    schema = gateway_config_model().model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "EduGate gateway configuration"
    return schema


# ---------------------------------------------------------------- loading with locations


def _clean_loc(loc: tuple[str | int, ...], data: Any) -> tuple[str | int, ...]:
    """Drop the discriminator tags pydantic inserts (``devices.3.modbus.port``) from a location."""
    out: list[str | int] = []
    cursor = data
    for part in loc:
        if isinstance(cursor, dict) and isinstance(part, str) and part not in cursor and part in driver_names():
            continue  # a union tag, not a key of the document
        out.append(part)
        if isinstance(cursor, dict):
            cursor = cursor.get(part)
        elif isinstance(cursor, list) and isinstance(part, int) and part < len(cursor):
            cursor = cursor[part]
        else:
            cursor = None
    return tuple(out)


def _message(err: Any) -> str:
    kind = err["type"]
    if kind == "union_tag_invalid":
        name = err["input"].get("driver")
        if not isinstance(name, str):  # empty, or a list or a mapping where the driver's name belongs
            what = "empty" if name is None else f"a {type(name).__name__}"
            return f"'driver' is {what}: give a driver's name (one of: {', '.join(driver_classes())})"
        if name in broken_drivers():
            return f"driver {name!r} is installed but cannot be loaded: {broken_drivers()[name]}"
        return f"unknown driver {name!r} (known: {', '.join(driver_classes())})"
    if kind == "union_tag_not_found":
        return f"a device needs a 'driver' (one of: {', '.join(driver_classes())})"
    if kind == "literal_error" and tuple(err["loc"]) == ("schema_version",):  # issue 19
        newer = isinstance(err["input"], int) and err["input"] > SCHEMA_VERSION
        return (f"schema version {err['input']!r}: this EduGate reads version {SCHEMA_VERSION}" +
                (", the file was written for a newer EduGate: install that version" if newer else ""))
    if kind == "literal_error" and err["loc"][-1:] == ("driver",):
        return f"unknown driver {err['input']!r} (known: {', '.join(driver_classes())})"
    if kind == "string_pattern_mismatch" and err.get("ctx", {}).get("pattern") == ID_PATTERN:
        return f"{err['input']!r} is not a valid id: use lower-case letters, digits, '-' and '_' (at most 63)"
    if kind == "extra_forbidden":
        broken = broken_services() if len(err["loc"]) == 1 else {}
        if (key := err["loc"][0]) in broken and key in optional_service_names():  # e.g. models: without [ml]
            return f"the {key!r} section's service cannot be loaded: {broken[key]}"
        if broken:  # the key may belong to a service that failed to load
            return "unknown key (a typo?, or the section of a service that cannot be loaded: " + \
                "; ".join(f"{name}: {reason}" for name, reason in broken.items()) + ")"
        return "unknown key (a typo?)"
    msg: str = err["msg"]
    return msg.removeprefix("Value error, ")


def _duplicate_ids(data: dict[str, Any]) -> Iterator[tuple[tuple[str | int, ...], str]]:
    devices = data.get("devices")
    if not isinstance(devices, list):
        return
    seen: dict[Any, int] = {}
    for i, dev in enumerate(devices):
        if isinstance(dev, dict) and isinstance(dev.get("id"), str):
            if dev["id"] in seen:
                first = seen[dev["id"]]
                yield ("devices", i, "id"), f"duplicate device id {dev['id']!r} (first used by devices[{first}])"
            else:
                seen[dev["id"]] = i


def _shared_ports(data: dict[str, Any]) -> Iterator[tuple[tuple[str | int, ...], str]]:
    """Two enabled devices naming one serial port (a serial driver opens its port exclusively: the second would
    retry for ever with 'the port is in use'). A symlink and its target (/dev/serial/by-id/... and /dev/ttyUSB0)
    count as one port where both exist. TCP ports (numbers) and Modbus RS485 buses (shared by design) are not
    ``port`` strings and are not checked here."""
    devices = data.get("devices")
    if not isinstance(devices, list):
        return
    seen: dict[str, int] = {}
    for i, dev in enumerate(devices):
        port = dev.get("port") if isinstance(dev, dict) and dev.get("enabled") is not False else None
        if not isinstance(port, str) or not port.startswith("/"):
            continue  # a TCP port ("4352") or no port: not a serial device
        if "\0" not in port:  # a NUL is the port check's to report
            port = os.path.realpath(port)
        if port in seen:
            first = seen[port]
            yield ("devices", i, "port"), (f"serial port {dev['port']!r} is already used by devices[{first}] "
                                           f"({devices[first].get('id')!r}): one device per serial port (it is "
                                           "opened exclusively)")
        else:
            seen[port] = i


def _named_drivers(data: dict[str, Any]) -> frozenset[str] | None:
    """The drivers the devices name, if each names an installed, importable one; else None (every driver,
    so that the errors list what is known)."""
    devices = data.get("devices", [])
    if not isinstance(devices, list):
        return None
    names = [dev.get("driver") if isinstance(dev, dict) else None for dev in devices]  # any YAML: a list, a map
    if not all(isinstance(name, str) and name in driver_names() for name in names):
        return None
    drivers = frozenset(name for name in names if isinstance(name, str))
    return drivers if len(load_drivers(drivers)) == len(drivers) else None


def _optional_sections(data: dict[str, Any]) -> frozenset[str]:
    """The optional services (registered with an extra) whose section the config has."""
    return optional_service_names().intersection(data)


def parse_config(text: str, filename: str = "<config>") -> GatewayConfigBase:
    """Validate YAML text; raise :class:`ConfigError` listing every problem with its line."""
    root, data, problems = parse_mapping(text, filename)
    problems += [Problem(filename, _line_of(root, loc), format_path(loc), msg)
                 for loc, msg in (*_duplicate_ids(data), *_shared_ports(data))]
    try:
        cfg = gateway_config_model(_named_drivers(data), _optional_sections(data)).model_validate(data)
    except ValidationError as exc:
        for err in exc.errors():
            msg = _message(err)
            if msg.startswith("duplicate device id"):
                continue  # reported above, with the place of the second entry
            loc = _clean_loc(err["loc"], data)
            if err["type"] == "union_tag_invalid":
                loc = (*loc, "driver")
            line = _line_of(root, loc) if root is not None else 1  # an empty file: its first line
            problems.append(Problem(filename, line, format_path(loc), msg))
        raise ConfigError(sorted(problems, key=lambda p: p.line or 0)) from None
    if problems:
        raise ConfigError(problems)
    return cfg


def config_warnings(cfg: GatewayConfigBase) -> list[tuple[tuple[str | int, ...], str]]:
    """What the services find valid but probably not meant (e.g. an attendance reader without a timetable)."""
    found: list[tuple[tuple[str | int, ...], str]] = []
    for i, dev in enumerate(cfg.devices):  # issue 19: one name per setting across drivers
        found += [(("devices", i, old), f"{old!r} is the old name of {new!r}: rename it (the old name is still "
                   f"read, and will not be in EduGate 1.0)") for old, new in dev.deprecated_names()]
    for cls in service_classes(type(cfg).model_fields).values():
        section = getattr(cfg, cls.section.key, None) if cls.section is not None else None
        found += cls.config_warnings(section, cfg.devices)
    return found


def load_warnings(path: str | Path, cfg: GatewayConfigBase) -> list[Problem]:
    """:func:`config_warnings` of a valid config file, each at its line (``file:line: path: warning: ...``)."""
    warnings = config_warnings(cfg)
    if not warnings:
        return []
    root, _, _ = parse_mapping(read_text(Path(path)), str(path))
    return [Problem(str(path), _line_of(root, loc), format_path(loc), f"warning: {message}")
            for loc, message in warnings]


def load_config(path: str | Path) -> GatewayConfigBase:
    path = Path(path)
    cfg = parse_config(read_text(path), str(path))
    return _resolve_relative_paths(cfg, path.parent)


def _resolve_relative_paths(cfg: GatewayConfigBase, base: Path) -> GatewayConfigBase:
    """Relative file paths in the config are relative to the config file's folder."""
    updates: dict[str, Any] = {}
    if not cfg.storage.path.is_absolute():
        updates["storage"] = cfg.storage.model_copy(update={"path": (base / cfg.storage.path).resolve()})
    if not cfg.privacy.secret_file.is_absolute():
        updates["privacy"] = cfg.privacy.model_copy(update={"secret_file": (base / cfg.privacy.secret_file).resolve()})
    updates["downlink"] = cfg.downlink.resolved(base)
    updates["web"] = cfg.web.resolved(base)
    return cfg.model_copy(update=updates)
