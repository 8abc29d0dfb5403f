"""The doctor's checks. Each returns :class:`Result` objects: a name (``config``, ``device:<id>``, ``broker``,
``tls``, ``clock``, ``disk``, ``outbox``, ``keys``, ``web-users``), a verdict, a message saying what was found
and a fix in plain words. Nothing here writes to the gateway's files: the outbox is only read.

Access is judged for the account the gateway runs as (:class:`Account`): run as root, the doctor asks whether
the ``edugate`` service user (if it exists) could open a port or read a key, not whether root could.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import enum
import grp
import os
import pwd
import shutil
import sqlite3
import ssl
import stat
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from pydantic import BaseModel

from edugate.common.yamlconfig import ConfigError
from edugate.gateway.config import GatewayConfigBase, load_config, load_warnings

SERVICE_USER = "edugate"
CERT_WARN_DAYS = 30  # a certificate expiring sooner than this is a warning
OUTBOX_WARN_HOURS = 72.0  # the budget should hold a long weekend without uplink
BACKLOG_WARN_S = 3600.0  # records waiting longer than this: the uplink is not draining
ROW_OVERHEAD_BYTES = 16  # SQLite's per-row cost beyond the payload: 14.7 bytes measured with 144-byte readings
DEFAULT_RECORD_BYTES = 160  # a reading's payload when the outbox holds too few to measure
RATE_FIELDS = ("poll_interval_s", "interval_s", "poll_s")  # per-device periods of periodic readings
NO_RATE_DRIVERS = {"pn532", "em4100", "wedge", "wiegand"}  # their poll fields are looks for a card, not readings
SERIAL_FIELDS = ("port", "serial_port", "device_path", "chip")  # device files a driver opens
DEFAULT_TCP_PORTS = {"pjlink": 4352}


class Verdict(enum.IntEnum):
    OK = 0
    WARN = 1
    FAIL = 2

    def __str__(self) -> str:
        return self.name.lower()


@dataclass
class Result:
    check: str
    verdict: Verdict
    message: str
    fix: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"check": self.check, "verdict": str(self.verdict), "message": self.message, "fix": self.fix,
                "details": self.details}


@dataclass(frozen=True)
class Account:
    """Whose access the doctor judges: a user id and its group ids."""

    name: str
    uid: int
    gids: frozenset[int]

    @classmethod
    def current(cls) -> Account:
        uid = os.geteuid()
        try:
            name = pwd.getpwuid(uid).pw_name
        except KeyError:
            name = str(uid)
        return cls(name, uid, frozenset({os.getegid(), *os.getgroups()}))

    @classmethod
    def named(cls, name: str) -> Account:
        entry = pwd.getpwnam(name)  # KeyError when there is no such user
        gids = {entry.pw_gid} | {g.gr_gid for g in grp.getgrall() if name in g.gr_mem}
        return cls(name, entry.pw_uid, frozenset(gids))

    @classmethod
    def default(cls) -> Account:
        """The service user when the doctor runs as root and it exists; else whoever runs the doctor."""
        if os.geteuid() == 0:
            with contextlib.suppress(KeyError):
                return cls.named(SERVICE_USER)
        return cls.current()

    def may(self, st: os.stat_result, read: bool = True, write: bool = False) -> bool:
        if self.uid == 0:
            return True
        if st.st_uid == self.uid:
            bits = (st.st_mode >> 6) & 7
        elif st.st_gid in self.gids:
            bits = (st.st_mode >> 3) & 7
        else:
            bits = st.st_mode & 7
        return (not read or bool(bits & 4)) and (not write or bool(bits & 2))


@dataclass
class DoctorOptions:
    timeout_s: float = 3.0
    account: Account | None = None  # None: Account.default()
    bluetooth_root: Path = Path("/sys/class/bluetooth")  # where the kernel lists Bluetooth adapters
    now: Callable[[], float] = time.time


def _owner(st: os.stat_result) -> str:
    try:
        user = pwd.getpwuid(st.st_uid).pw_name
    except KeyError:
        user = str(st.st_uid)
    try:
        group = grp.getgrgid(st.st_gid).gr_name
    except KeyError:
        group = str(st.st_gid)
    return f"{user}:{group}, mode {stat.filemode(st.st_mode)}"


def _worst(results: list[Result]) -> Verdict:
    return max((r.verdict for r in results), default=Verdict.OK)


# ---------------------------------------------------------------- config


def check_config(path: Path) -> tuple[GatewayConfigBase | None, Result]:
    try:
        cfg = load_config(path)
    except ConfigError as exc:
        return None, Result("config", Verdict.FAIL, f"{path}: {len(exc.problems)} problem(s):\n" + str(exc),
                            "correct each line named above (the same messages as 'edugate check'), then run the "
                            "doctor again", {"problems": [str(p) for p in exc.problems]})
    warnings = load_warnings(path, cfg)
    if warnings:
        return cfg, Result("config", Verdict.WARN, f"{path}: valid, with warnings:\n" +
                           "\n".join(str(w) for w in warnings),
                           "read each warning: it names something valid that is probably not meant",
                           {"warnings": [str(w) for w in warnings]})
    return cfg, Result("config", Verdict.OK, f"{path}: valid ({len(cfg.devices)} devices)")


# ---------------------------------------------------------------- devices


def _fields(model: BaseModel, prefix: str = "") -> Iterator[tuple[str, str, Any, BaseModel]]:
    """(dotted name, field name, value, owning model) of a device's fields and those of its sub-blocks."""
    for name in type(model).model_fields:
        value = getattr(model, name)
        yield prefix + name, name, value, model
        if isinstance(value, BaseModel):
            yield from _fields(value, f"{prefix}{name}.")


def device_files(dev: BaseModel) -> list[tuple[str, str]]:
    """(field, path) of each device file the device's driver opens (serial ports, input devices, GPIO chips)."""
    return [(dotted, value) for dotted, name, value, _ in _fields(dev)
            if name in SERIAL_FIELDS and isinstance(value, str) and value.startswith("/")]


def tcp_endpoints(dev: BaseModel) -> list[tuple[str, str, int]]:
    """(field, host, port) of each TCP server the device's driver connects to."""
    out = []
    driver = getattr(dev, "driver", "")
    for dotted, name, value, owner in _fields(dev):
        if name != "host" or not isinstance(value, str):
            continue
        if getattr(owner, "transport", "tcp") != "tcp":
            continue
        port = getattr(owner, "port", None)
        if not isinstance(port, int):
            port = DEFAULT_TCP_PORTS.get(driver)
        if port is not None:
            out.append((dotted, value, port))
    return out


def check_device_file(path: str, account: Account) -> Result:
    """A serial port (or input device, GPIO chip): present, a device, open-able by the gateway's user."""
    name = f"device file {path}"
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return Result(name, Verdict.FAIL, f"{path} is not there",
                      "plug the device (or its USB adapter) in and check the cable; 'ls -l /dev/serial/by-id/' "
                      "lists serial adapters: put that stable name in the config")
    except OSError as exc:
        return Result(name, Verdict.FAIL, f"{path}: cannot look at it: {exc.strerror}", "check the path")
    if not stat.S_ISCHR(st.st_mode):
        return Result(name, Verdict.FAIL, f"{path} is not a device (it is a {stat.filemode(st.st_mode)[0]} file)",
                      "give the device's path, e.g. /dev/serial/by-id/usb-..., not an ordinary file")
    if not account.may(st, read=True, write=True):
        return Result(name, Verdict.FAIL, f"user {account.name} may not open {path} ({_owner(st)})",
                      f"add the user to the device's group: 'sudo usermod -aG {_group_name(st.st_gid)} "
                      f"{account.name}', then restart the gateway (the package's edugate.service already has it)")
    try:
        fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
    except OSError as exc:
        return Result(name, Verdict.FAIL, f"{path}: cannot open: {exc.strerror}",
                      "another program may hold the port (stop it: 'sudo fuser -v " + path + "'), or the device "
                      "failed: unplug and plug it in again")
    os.close(fd)
    return Result(name, Verdict.OK, f"{path} is present and opens ({_owner(st)})")


def _group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def streaming_port(dev: Any) -> str | None:
    """The serial port of a device that sends on its own (a GPS receiver, a serial thermometer), or None.

    A driver says so on its config model, naming the field that holds the port:
    ``streams_on: ClassVar[str] = "port"``; the doctor then listens there."""
    field_name = getattr(type(dev), "streams_on", None)
    if not isinstance(field_name, str):
        return None
    path = getattr(dev, field_name, None)
    return path if isinstance(path, str) else None


def check_sends(path: str, baudrate: int, seconds: float) -> Result:
    """Listen to a device that sends on its own (a GPS receiver, a serial thermometer) for up to ``seconds``.
    The port is taken exclusively, as the drivers take it: while the gateway holds it, nothing is read (the
    doctor never steals its bytes). Only counts are reported, never the bytes themselves."""
    import serial

    name = f"sends {path}"
    try:
        port = serial.Serial(path, baudrate, timeout=0.1, exclusive=True)
    except (OSError, serial.SerialException) as exc:
        if "lock" in str(exc).lower():
            return Result(name, Verdict.WARN, f"{path} is in use (by the running gateway?): not listened to",
                          "stop the gateway ('sudo systemctl stop edugate') to let the doctor listen, or read the "
                          "device's state on the status page")
        return Result(name, Verdict.FAIL, f"{path}: cannot open at {baudrate} baud: {exc}",
                      "check the port and the baudrate in the config")
    received, lines = 0, 0
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline and lines < 2:
            chunk = port.read(256)
            received += len(chunk)
            lines += chunk.count(b"\n")
    except (OSError, serial.SerialException) as exc:
        return Result(name, Verdict.FAIL, f"{path}: reading failed: {exc}", "unplug and plug the device in again")
    finally:
        port.close()
    if not received:
        return Result(name, Verdict.FAIL, f"{path}: nothing received in {seconds:g} s",
                      "check that the device is powered and wired (TX of the device to RX of the adapter) and "
                      "that the baudrate in the config is the device's")
    if not lines:
        return Result(name, Verdict.FAIL, f"{path}: {received} bytes in {seconds:g} s but no line end: the "
                      "baudrate is probably wrong", f"set the device's baudrate in the config (now {baudrate})")
    return Result(name, Verdict.OK, f"{path} sends ({received} bytes, {lines} lines)")


async def check_tcp(host: str, port: int, timeout_s: float) -> Result:
    name = f"tcp {host}:{port}"
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout_s)
    except TimeoutError:
        return Result(name, Verdict.FAIL, f"{host}:{port} does not answer within {timeout_s:g} s",
                      "check that the device is powered and on the school network, its address, and that no "
                      "firewall blocks the port")
    except OSError as exc:
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        return Result(name, Verdict.FAIL, f"{host}:{port}: {reason}",
                      "check the address and port in the config, and that the device (or its service) is running")
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return Result(name, Verdict.OK, f"{host}:{port} accepts connections")


async def check_modbus_unit(dev: Any, timeout_s: float) -> Result:
    """One poll of the device's registers, as the gateway would do it."""
    from edugate.drivers.modbus.driver import ModbusDriver, ModbusError

    name = f"modbus unit {dev.unit}"
    driver = ModbusDriver(dev)
    try:
        reading = await asyncio.wait_for(driver.poll(), timeout_s + dev.timeout_s * max(1, len(driver.blocks)))
    except ModbusError as exc:
        return Result(name, Verdict.FAIL, f"unit {dev.unit} at {dev.endpoint_label}: {exc.describe(exc.reading)}",
                      "check the unit id (the device's address setting), the wiring (A/B, termination), "
                      "and for RTU the baudrate/parity/stopbits, which must match the device's")
    except TimeoutError:
        return Result(name, Verdict.FAIL, f"unit {dev.unit} at {dev.endpoint_label}: no answer",
                      "check the unit id, the wiring and the serial settings")
    finally:
        await driver.close()
    return Result(name, Verdict.OK, f"unit {dev.unit} answers: {len(reading.values)} values read")


def check_ble_adapter(adapter: str, root: Path) -> Result:
    name = f"bluetooth {adapter}"
    if (root / adapter).exists():
        return Result(name, Verdict.OK, f"Bluetooth adapter {adapter} is present")
    present = sorted(p.name for p in root.glob("hci*")) if root.is_dir() else []
    return Result(name, Verdict.FAIL, f"no Bluetooth adapter {adapter} (present: {', '.join(present) or 'none'})",
                  "plug in a USB Bluetooth adapter or enable the built-in one ('rfkill unblock bluetooth'; "
                  "'bluetoothctl list' shows them), or name a present adapter in the config")


async def check_device(dev: Any, opts: DoctorOptions, account: Account) -> Result:
    name = f"device:{dev.id}"
    if not dev.enabled:
        return Result(name, Verdict.OK, f"{dev.id} ({dev.driver}) is disabled: not checked")
    parts: list[Result] = [check_device_file(path, account) for _, path in device_files(dev)]
    listen_on = streaming_port(dev)
    if listen_on and all(p.verdict is Verdict.OK for p in parts):
        parts.append(await asyncio.to_thread(check_sends, listen_on, dev.baudrate, max(opts.timeout_s, 1.0)))
    for _, host, port in tcp_endpoints(dev):
        parts.append(await check_tcp(host, port, opts.timeout_s))
    if dev.driver == "modbus" and all(p.verdict is Verdict.OK for p in parts):
        parts.append(await check_modbus_unit(dev, opts.timeout_s))
    if dev.driver == "ble":
        parts.append(check_ble_adapter(dev.adapter, opts.bluetooth_root))
    if not parts:
        return Result(name, Verdict.OK, f"{dev.id} ({dev.driver}): nothing to check before it runs")
    worst = _worst(parts)
    shown = [p for p in parts if p.verdict is worst]
    fixes = [p.fix for p in shown if p.fix]
    return Result(name, worst, f"{dev.id} ({dev.driver}): " + "; ".join(p.message for p in shown),
                  "; ".join(fixes) or None, {"parts": [p.as_dict() for p in parts]})


# ---------------------------------------------------------------- broker and TLS


async def check_broker(cfg: GatewayConfigBase, timeout_s: float) -> list[Result]:
    """Connect to each broker of the list as the gateway would (MQTT CONNECT, with TLS and credentials)."""
    import aiomqtt

    from edugate.common.mqtt import aiomqtt_client, ssl_context

    broker_cfg = cfg.uplink.broker_config(f"edugate-doctor-{cfg.school}-{cfg.gateway}")
    broker_cfg = broker_cfg.model_copy(update={"client_id": f"edugate-doctor-{cfg.school}-{cfg.gateway}"})
    try:
        ssl_context(broker_cfg)
        broker_cfg.password("uplink.password_file")
    except (OSError, ssl.SSLError, ValueError) as exc:
        return [Result("broker", Verdict.FAIL, f"the uplink's TLS or password files cannot be loaded: {exc}",
                       "check the paths under uplink.tls and uplink.password_file and that the files are readable")]
    results = []
    for address in broker_cfg.addresses:
        client = aiomqtt_client(broker_cfg, broker=address, timeout=timeout_s)
        try:
            async with asyncio.timeout(timeout_s + 1):
                async with client:
                    pass
        except (aiomqtt.MqttError, TimeoutError, OSError) as exc:
            text = str(exc) or type(exc).__name__
            results.append(Result(f"broker {address}", Verdict.FAIL, f"cannot connect to {address}: {text}",
                                  "check that the broker runs and the school's firewall lets the gateway out on "
                                  "this port; 'not authorised' means the certificate or user is not known to "
                                  "central (ask central operations); a TLS error: see the tls check"))
        else:
            results.append(Result(f"broker {address}", Verdict.OK, f"{address} accepts this gateway's MQTT login"))
    worst = _worst(results)
    return [Result("broker", worst, "; ".join(r.message for r in results),
                   next((r.fix for r in results if r.fix), None), {"brokers": [r.as_dict() for r in results]})]


def _days_left(not_after: datetime.datetime, now: float) -> float:
    return (not_after.timestamp() - now) / 86400


def _cert_result(what: str, not_after: datetime.datetime, now: float) -> Result:
    days = _days_left(not_after, now)
    when = not_after.strftime("%Y-%m-%d %H:%M UTC")
    if days < 0:
        return Result(what, Verdict.FAIL, f"{what} expired on {when}",
                      "get a new certificate (central operations: 'edugate provision' for a gateway, the "
                      "broker's for the broker) and install it")
    if days < CERT_WARN_DAYS:
        return Result(what, Verdict.WARN, f"{what} expires in {days:.0f} days ({when})",
                      f"renew it before then: with less than {CERT_WARN_DAYS} days left, ask central operations "
                      "for a new one")
    return Result(what, Verdict.OK, f"{what} valid until {when} ({days:.0f} days)")


def _read_bytes(path: Path) -> bytes:
    return path.read_bytes()


async def check_tls(cfg: GatewayConfigBase, opts: DoctorOptions) -> Result:
    from cryptography import x509

    from edugate.common.mqtt import ssl_context

    tls = cfg.uplink.tls
    if tls is None:
        local = all(b.split(":")[0] in {"127.0.0.1", "localhost", "::1"} for b in cfg.uplink.broker_list)
        if local:
            return Result("tls", Verdict.OK, "no TLS: the broker is on this machine")
        return Result("tls", Verdict.WARN, "the uplink is not encrypted: records and credentials cross the "
                      "network in clear", "add an uplink.tls section with the CA and this gateway's certificate "
                      "and key (docs/operators.md)")
    parts: list[Result] = []
    now = opts.now()
    if tls.cert_file is not None:
        try:
            cert = x509.load_pem_x509_certificate(_read_bytes(Path(tls.cert_file)))
        except (OSError, ValueError) as exc:
            parts.append(Result("tls", Verdict.FAIL, f"the gateway's certificate {tls.cert_file} cannot be read: "
                                f"{exc}", "install the certificate central issued for this gateway at that path"))
        else:
            parts.append(_cert_result(f"the gateway's certificate {tls.cert_file}", cert.not_valid_after_utc, now))
    broker_cfg = cfg.uplink.broker_config("edugate-doctor")
    address = broker_cfg.addresses[0]
    try:
        context = ssl_context(broker_cfg)
        assert context is not None
        _, writer = await asyncio.wait_for(asyncio.open_connection(
            address.host, address.port, ssl=context,
            server_hostname=address.host if tls.verify_hostname else None), opts.timeout_s)
    except ssl.SSLCertVerificationError as exc:
        parts.append(Result("tls", Verdict.FAIL, f"the broker's certificate at {address} is refused: "
                            f"{exc.verify_message}", "the broker's certificate must be signed by uplink.tls.ca_file, "
                            "carry the broker's name and be in date; check the gateway's clock too"))
    except (OSError, ssl.SSLError, TimeoutError) as exc:
        parts.append(Result("tls", Verdict.FAIL, f"no TLS handshake with {address}: {exc or type(exc).__name__}",
                            "see the broker check; check that the port is the broker's TLS port"))
    else:
        ssl_object = writer.get_extra_info("ssl_object")
        der = None
        try:
            der = ssl_object.getpeercert(binary_form=True) if ssl_object else None
        except (ValueError, ssl.SSLError) as exc:  # the broker ended the session (it refused our certificate?)
            parts.append(Result("tls", Verdict.FAIL, f"the TLS session with {address} ended during the handshake "
                                f"({exc}): the broker refuses this gateway's certificate?", "see the broker check"))
        writer.close()
        with contextlib.suppress(OSError, ssl.SSLError):
            await writer.wait_closed()
        if der:
            peer = x509.load_der_x509_certificate(der)
            parts.append(_cert_result(f"the broker's certificate at {address}", peer.not_valid_after_utc, now))
    worst = _worst(parts)
    return Result("tls", worst, "; ".join(p.message for p in parts),
                  "; ".join(p.fix for p in parts if p.fix and p.verdict is worst) or None)


# ---------------------------------------------------------------- clock


def check_clock(cfg: GatewayConfigBase) -> Result:
    from edugate.gateway.runtime.clock import kernel_clock_synced

    mode = cfg.clock.synced
    fix = ("enable time synchronisation ('sudo timedatectl set-ntp true'; 'timedatectl status' shows it) and let "
           "the gateway reach an NTP server (UDP port 123, or the school's own time server)")
    if mode == "never":
        return Result("clock", Verdict.WARN, "the config says the clock is never synchronised (clock.synced: "
                      "never): every record is marked unsynced", fix + ", then set clock.synced: auto")
    if mode == "always":
        return Result("clock", Verdict.OK, "the config declares the clock synchronised (clock.synced: always)")
    synced = kernel_clock_synced()
    if synced is None:
        return Result("clock", Verdict.WARN, "the kernel cannot be asked whether the clock is synchronised", fix)
    if not synced:
        return Result("clock", Verdict.WARN, "the clock is not synchronised (no NTP): records are marked "
                      "unsynced and their times may be days off (a Raspberry Pi has no battery clock)", fix)
    return Result("clock", Verdict.OK, "the clock is synchronised (NTP)")


# ---------------------------------------------------------------- disk and outbox


def _existing_folder(path: Path) -> Path:
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return folder


def _outbox_files_bytes(path: Path) -> int:
    total = 0
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(OSError):
            total += (path.parent / (path.name + suffix)).stat().st_size
    return total


def check_disk(cfg: GatewayConfigBase, account: Account) -> Result:
    path = Path(cfg.storage.path)
    folder = _existing_folder(path)
    usage = shutil.disk_usage(folder)
    budget = int(cfg.storage.budget_mb * 1024 * 1024)
    still_needed = max(0, budget - _outbox_files_bytes(path))
    details = {"free_bytes": usage.free, "total_bytes": usage.total, "outbox_budget_bytes": budget,
               "outbox_may_still_grow_bytes": still_needed}
    mb = 1024 * 1024
    if folder != path.parent:
        parent_st = folder.stat()
        if not account.may(parent_st, read=True, write=True):
            return Result("disk", Verdict.FAIL, f"{path.parent} does not exist and user {account.name} may not "
                          f"create it in {folder} ({_owner(parent_st)})",
                          f"create it for the gateway: 'sudo install -d -o {account.name} -m 0750 {path.parent}'",
                          details)
    elif not account.may(folder.stat(), read=True, write=True):
        return Result("disk", Verdict.FAIL, f"user {account.name} may not write in {folder} ({_owner(folder.stat())})",
                      f"'sudo chown {account.name} {folder}' (the package makes /var/lib/edugate the user's)",
                      details)
    if usage.free < still_needed:
        return Result("disk", Verdict.FAIL, f"{usage.free / mb:.0f} MB free on {folder}, but the outbox may still "
                      f"grow by {still_needed / mb:.0f} MB (budget {cfg.storage.budget_mb:g} MB): a long uplink "
                      "outage would fill the disk", "free space (old logs: 'sudo journalctl --vacuum-size=100M') or "
                      "lower storage.budget_mb to fit", details)
    if usage.free < still_needed + usage.total // 10:
        return Result("disk", Verdict.WARN, f"{usage.free / mb:.0f} MB free on {folder}: with the outbox full "
                      f"(+{still_needed / mb:.0f} MB) less than a tenth of the disk would be left",
                      "free space, or lower storage.budget_mb", details)
    return Result("disk", Verdict.OK, f"{usage.free / mb:.0f} MB free on {folder}; the outbox may grow by "
                  f"{still_needed / mb:.0f} MB more", details=details)


def configured_rate_per_hour(cfg: GatewayConfigBase) -> float:
    """Readings per hour the config asks for: each periodic device's period, plus the health records."""
    rate = 3600.0 / cfg.uplink.health_interval_s
    for dev in cfg.devices:
        if not dev.enabled or dev.driver in NO_RATE_DRIVERS:
            continue
        for name in RATE_FIELDS:
            period = getattr(dev, name, None)
            if isinstance(period, int | float) and period > 0:
                rate += 3600.0 / period
                break
    return rate


def _read_outbox(path: Path) -> dict[str, Any]:
    from edugate.gateway.runtime.outbox import read_schema_version

    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    try:
        (integrity,) = conn.execute("PRAGMA quick_check").fetchone()
        if integrity != "ok":
            raise sqlite3.DatabaseError(f"integrity check: {integrity}")
        version = read_schema_version(conn)
        out: dict[str, Any] = {"schema_version": version}
        for table in ("telemetry", "events"):
            rows, size, first, last = conn.execute(
                f"SELECT count(*), coalesce(sum(length(payload)), 0), min(seq), max(seq) FROM {table}").fetchone()
            out[table] = {"rows": rows, "payload_bytes": size}
            for key, seq in (("oldest_ts", first), ("newest_ts", last)):
                if seq is not None:
                    (payload,) = conn.execute(f"SELECT payload FROM {table} WHERE seq=?", (seq,)).fetchone()
                    ts = orjson.loads(payload).get("ts")
                    out[table][key] = ts if isinstance(ts, int) else None
        return out
    finally:
        conn.close()


def check_outbox(cfg: GatewayConfigBase, opts: DoctorOptions) -> Result:
    from edugate.gateway.runtime.outbox import DATA_SHARE, SCHEMA_VERSION

    path = Path(cfg.storage.path)
    budget = cfg.storage.budget_mb * 1024 * 1024
    capacity = budget * DATA_SHARE
    details: dict[str, Any] = {"path": str(path), "budget_bytes": int(budget)}
    found: dict[str, Any] = {}
    if path.exists():
        try:
            found = _read_outbox(path)
        except sqlite3.Error as exc:
            return Result("outbox", Verdict.FAIL, f"{path} cannot be read as an outbox: {exc}",
                          "stop the gateway, move the file aside (keep it: it may hold records not yet sent) and "
                          "start the gateway again, which makes a new one; ask the project to recover the old one",
                          details)
        details |= found
        if found["schema_version"] > SCHEMA_VERSION:
            return Result("outbox", Verdict.FAIL, f"{path} has schema version {found['schema_version']}, written "
                          f"by a newer EduGate; this one reads up to version {SCHEMA_VERSION}",
                          "install the newer EduGate again (an update was rolled back?), or move the file aside",
                          details)
    tele = found.get("telemetry", {"rows": 0, "payload_bytes": 0})
    events = found.get("events", {"rows": 0, "payload_bytes": 0})
    per_record = (tele["payload_bytes"] / tele["rows"] if tele["rows"] >= 20 else DEFAULT_RECORD_BYTES)
    per_record += ROW_OVERHEAD_BYTES
    rate, basis = configured_rate_per_hour(cfg), "the config's polling periods"
    oldest, newest = tele.get("oldest_ts"), tele.get("newest_ts")
    if oldest and newest and tele["rows"] >= 50 and newest - oldest >= 600_000:
        rate, basis = tele["rows"] / ((newest - oldest) / 3_600_000), "the readings queued in the outbox"
    used = (tele["payload_bytes"] + events["payload_bytes"]) + (tele["rows"] + events["rows"]) * ROW_OVERHEAD_BYTES
    hours = capacity / (rate * per_record) if rate > 0 else float("inf")
    details |= {"readings_per_hour": round(rate, 1), "rate_from": basis, "bytes_per_reading": round(per_record),
                "budget_hours": round(hours, 1) if hours != float("inf") else None}
    holds = (f"the budget ({cfg.storage.budget_mb:g} MB) holds about {hours:.0f} hours of telemetry at "
             f"{rate:.0f} readings/hour ({basis}, ~{per_record:.0f} bytes each) before old readings are thinned")
    queued = f"{tele['rows']} readings and {events['rows']} events queued"
    if events["payload_bytes"] + events["rows"] * ROW_OVERHEAD_BYTES > capacity:
        return Result("outbox", Verdict.FAIL, f"{queued}: the events alone exceed the budget; {holds}",
                      "the uplink has been down a long time: fix the broker check first; raise storage.budget_mb "
                      "if the disk allows", details)
    oldest_any = min((t for t in (oldest, events.get("oldest_ts")) if t), default=None)
    if oldest_any is not None and opts.now() - oldest_any / 1000 > BACKLOG_WARN_S:
        age_h = (opts.now() - oldest_any / 1000) / 3600
        return Result("outbox", Verdict.WARN, f"{queued}, the oldest waiting {age_h:.1f} hours: the uplink is not "
                      f"draining; {holds}", "see the broker and tls checks: records leave once the broker "
                      "accepts them", details)
    if hours < OUTBOX_WARN_HOURS:
        return Result("outbox", Verdict.WARN, f"{queued}; {holds}: less than {OUTBOX_WARN_HOURS:.0f} hours (a "
                      "long weekend without uplink)", "raise storage.budget_mb (see the disk check for room) or "
                      "poll the devices less often", details)
    fill = f" ({used / capacity:.0%} full)" if capacity else ""
    return Result("outbox", Verdict.OK, f"{queued}{fill}; {holds}", details=details)


# ---------------------------------------------------------------- keys and web users


def _secret_files(cfg: GatewayConfigBase) -> list[tuple[str, Path, bool]]:
    """(what, path, created by the gateway if missing) of each file that must stay private."""
    files: list[tuple[str, Path, bool]] = [("the school's pseudonymisation key (privacy.secret_file)",
                                            Path(cfg.privacy.secret_file), True)]
    if cfg.uplink.tls is not None and cfg.uplink.tls.key_file is not None:
        files.append(("the gateway's TLS key (uplink.tls.key_file)", Path(cfg.uplink.tls.key_file), False))
    elif cfg.uplink.tls is not None and cfg.uplink.tls.cert_file is not None:
        files.append(("the gateway's TLS certificate with its key (uplink.tls.cert_file)",
                      Path(cfg.uplink.tls.cert_file), False))
    if cfg.uplink.password_file is not None:
        files.append(("the MQTT password (uplink.password_file)", Path(cfg.uplink.password_file), False))
    return files


def check_keys(cfg: GatewayConfigBase, account: Account) -> Result:
    parts: list[Result] = []
    for what, path, created in _secret_files(cfg):
        try:
            st = path.stat()
        except FileNotFoundError:
            if created:
                parts.append(Result("keys", Verdict.WARN, f"{what} {path} does not exist yet: the gateway creates "
                                    "it on first run", "after the first run, back it up somewhere safe: without it "
                                    "pseudonyms cannot be re-identified, and a new key gives every card a new one"))
            else:
                parts.append(Result("keys", Verdict.FAIL, f"{what} {path} is missing",
                                    "install the file central issued for this gateway at that path"))
            continue
        if st.st_mode & 0o077:
            parts.append(Result("keys", Verdict.FAIL, f"{what} {path} can be read by others ({_owner(st)})",
                                f"'sudo chmod 600 {path}' and 'sudo chown {account.name} {path}'"))
        elif not account.may(st, read=True):
            parts.append(Result("keys", Verdict.FAIL, f"user {account.name} may not read {what} {path} "
                                f"({_owner(st)})", f"'sudo chown {account.name} {path}'"))
        else:
            parts.append(Result("keys", Verdict.OK, f"{what} {path}: private ({_owner(st)})"))
    worst = _worst(parts)
    shown = [p for p in parts if p.verdict is worst]
    return Result("keys", worst, "; ".join(p.message for p in shown),
                  "; ".join(p.fix for p in shown if p.fix) or None)


def check_web_users(cfg: GatewayConfigBase) -> Result:
    from edugate.common.web.auth import UsersFileError, UserStore

    path = cfg.web.users_path(Path(cfg.storage.path).parent)
    if not cfg.web.enabled:
        return Result("web-users", Verdict.OK, "the local pages are off (web.enabled: false)")
    add = "'edugate web-user add --config CONFIG NAME --role admin'"
    try:
        users = UserStore(path).users()
    except UsersFileError as exc:
        return Result("web-users", Verdict.FAIL, str(exc), f"move the file aside and add the users again: {add}")
    if not users:
        return Result("web-users", Verdict.FAIL, f"the local pages are on but nobody can log in ({path} has no "
                      "users)", f"add an administrator: {add}")
    if path.stat().st_mode & 0o077:
        return Result("web-users", Verdict.FAIL, f"{path} (password hashes) can be read by others",
                      f"'sudo chmod 600 {path}'")
    admins = sorted(u.name for u in users.values() if u.role == "admin")
    if not admins:
        return Result("web-users", Verdict.WARN, f"{len(users)} users, none an admin: nobody can change settings "
                      "from the pages", f"add one: {add}")
    return Result("web-users", Verdict.OK, f"{len(users)} users ({len(admins)} admin: {', '.join(admins)})")


# ---------------------------------------------------------------- all of it


async def run_doctor(path: Path, opts: DoctorOptions | None = None) -> list[Result]:
    """Every check, in the order an operator reads them. A config that does not load stops there."""
    opts = opts or DoctorOptions()
    account = opts.account or Account.default()
    cfg, config_result = check_config(Path(path))
    results = [config_result]
    if cfg is None:
        return results
    for dev in cfg.devices:
        results.append(await check_device(dev, opts, account))
    results += await check_broker(cfg, opts.timeout_s)
    results.append(await check_tls(cfg, opts))
    results.append(check_clock(cfg))
    results.append(check_disk(cfg, account))
    results.append(check_outbox(cfg, opts))
    results.append(check_keys(cfg, account))
    results.append(check_web_users(cfg))
    return results


def worst(results: list[Result]) -> Verdict:
    return _worst(results)


def format_text(results: list[Result]) -> str:
    lines = []
    for r in results:
        head, *rest = r.message.splitlines() or [""]
        lines.append(f"{str(r.verdict).upper():<5} {r.check}: {head}")
        lines += [f"      {line}" for line in rest]
        if r.fix and r.verdict is not Verdict.OK:
            lines.append(f"      fix: {r.fix}")
    counts = {v: sum(r.verdict is v for r in results) for v in Verdict}
    lines.append(f"{str(worst(results)).upper()}: {counts[Verdict.OK]} ok, {counts[Verdict.WARN]} warn, "
                 f"{counts[Verdict.FAIL]} fail")
    return "\n".join(lines)


def as_json(path: Path, results: list[Result]) -> dict[str, Any]:
    return {"config": str(path), "verdict": str(worst(results)), "checked_at": int(time.time() * 1000),
            "checks": [r.as_dict() for r in results]}

