"""PJLink projectors and interactive displays (driver ``pjlink``): status polling, power and input commands.

One TCP connection per poll (``poll_interval_s``) or command, as PJLink devices expect (many accept one controller at
a time and drop idle connections after 30 s): greet, authenticate with the MD5 digest when the device has a
password, ask, close. Each poll gives one telemetry reading (power, input, mute, error status, lamp and
filter hours); the first poll after start and after every outage also asks who the device is (INF1, INF2,
INFO, NAME, CLSS and for class 2 SNUM, SVER) and emits a ``device_info`` event when that changed (the asset
registry keeps it). Class 2 status notifications (UDP, port ``notify_port``) give an immediate reading of
the new power state and a poll.

A device that does not answer, refuses the password or answers garbage is marked and counted (health
counters ``outages``, ``auth_failures``, ``garbled``, ``device_errors``), logged once per cause, and
polled again with back-off; the rest of the gateway keeps running. The password is never logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator

from edugate.common.ratelimit import LogLimiter
from edugate.contract.records import Emit, Event, Reading, Rejected, Value
from edugate.drivers.base import Backoff, CommandError, DeviceConfig, DeviceState, Driver, Outage
from edugate.drivers.pjlink import codec
from edugate.drivers.pjlink.codec import PJLinkAuthError, PJLinkCommandError, PJLinkProtocolError, Response

log = logging.getLogger(__name__)

INFO_QUERIES = (("CLSS", 1, "pjlink_class"), ("INF1", 1, "make"), ("INF2", 1, "model"), ("INFO", 1, "info"),
                ("NAME", 1, "name"))
INFO_QUERIES_2 = (("SNUM", 2, "serial"), ("SVER", 2, "firmware"))


class PJLinkConfig(DeviceConfig):
    """A projector or display with a PJLink network port (class 1 or class 2)."""

    # old names, still read (issue 19)
    renamed: ClassVar[Mapping[str, str]] = {"poll_s": "poll_interval_s", "retry_max_s": "reconnect_max_s"}

    driver: Literal["pjlink"]
    host: str = Field(min_length=1, max_length=253, description="The device's address, e.g. 10.20.1.101.")
    port: int = Field(codec.DEFAULT_PORT, ge=1, le=65535, description="Its PJLink TCP port (4352).")
    password_file: Path | None = Field(None, description="File holding the PJLink password set in the device's "
                                       "network menu (first line; at most 32 characters). Leave out when the "
                                       "device has none.")
    poll_interval_s: float = Field(30.0, ge=1, le=3600, description="Seconds between status polls.")
    timeout_s: float = Field(5.0, ge=0.1, le=60, description="A device that does not answer within this is "
                             "offline.")
    notify_port: int | None = Field(None, ge=1, le=65535, description="Listen for class 2 status notifications "
                                    "(UDP) on this port, normally 4352; leave out for class 1 devices.")
    reconnect_max_s: float = Field(300.0, ge=1, le=3600, description="An offline device is tried again after "
                               "poll_interval_s, then twice as long each time, up to this many seconds apart.")

    @field_validator("password_file")
    @classmethod
    def _password_readable(cls, path: Path | None) -> Path | None:
        if path is not None and not path.is_file():
            raise ValueError(f"{path} does not exist (give a file whose first line is the PJLink password)")
        return path


class _NotifyHub:
    """One UDP socket per notification port, shared by the PJLink devices of a gateway (by sender address)."""

    hubs: dict[int, _NotifyHub] = {}  # noqa: RUF012 - the process-wide registry

    def __init__(self, port: int) -> None:
        self.port = port
        self.listeners: dict[str, Callable[[bytes], None]] = {}
        self.transport: asyncio.DatagramTransport | None = None

    @classmethod
    async def join(cls, port: int, ip: str, listener: Callable[[bytes], None]) -> _NotifyHub:
        hub = cls.hubs.get(port)
        if hub is None:
            hub = cls.hubs[port] = cls(port)
            loop = asyncio.get_running_loop()
            try:
                hub.transport, _ = await loop.create_datagram_endpoint(lambda: _Datagrams(hub),
                                                                       local_addr=("0.0.0.0", port))
            except OSError:
                del cls.hubs[port]
                raise
        hub.listeners[ip] = listener
        return hub

    def leave(self, ip: str) -> None:
        self.listeners.pop(ip, None)
        if not self.listeners and self.transport is not None:
            self.transport.close()
            self.hubs.pop(self.port, None)


class _Datagrams(asyncio.DatagramProtocol):
    def __init__(self, hub: _NotifyHub) -> None:
        self.hub = hub

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        listener = self.hub.listeners.get(str(addr[0]))
        if listener is not None:
            listener(data)


class PJLinkConnection:
    """One authenticated PJLink connection: :meth:`ask` sends a command and returns its answer."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, digest: str | None,
                 timeout: float) -> None:
        self.reader, self.writer, self._digest, self.timeout = reader, writer, digest, timeout

    @classmethod
    async def open(cls, host: str, port: int, password: str | None, timeout_s: float) -> PJLinkConnection:
        try:
            async with asyncio.timeout(timeout_s):
                reader, writer = await asyncio.open_connection(host, port, limit=codec.MAX_LINE)
        except TimeoutError:
            raise TimeoutError(f"no connection within {timeout_s:g} s") from None
        try:
            greeting = codec.parse_greeting(await cls._line(reader, timeout_s, "greeting"))
            digest = None
            if greeting.auth:
                if password is None:
                    raise PJLinkAuthError("the device asks for a PJLink password and none is configured "
                                          "(password_file)")
                assert greeting.salt is not None
                digest = codec.auth_digest(greeting.salt, password)
        except BaseException:
            writer.close()
            raise
        return cls(reader, writer, digest, timeout_s)

    @staticmethod
    async def _line(reader: asyncio.StreamReader, timeout_s: float, what: str) -> bytes:
        try:
            async with asyncio.timeout(timeout_s):
                line = await reader.readuntil(b"\r")
        except asyncio.IncompleteReadError as exc:
            if exc.partial:
                raise PJLinkProtocolError(f"the connection closed in the middle of {what}: "
                                          f"{codec.excerpt(exc.partial)}") from None
            raise ConnectionResetError(f"the device closed the connection instead of sending {what}") from None
        except asyncio.LimitOverrunError:
            raise PJLinkProtocolError(f"{what}: no line end within {codec.MAX_LINE} bytes") from None
        except TimeoutError:
            raise TimeoutError(f"no {what} within {timeout_s:g} s") from None
        return line

    async def ask(self, body: str, param: str = "?", cls: int = 1) -> Response:
        frame = codec.encode_command(body, param, cls)
        if self._digest is not None:
            frame, self._digest = self._digest.encode() + frame, None
        self.writer.write(frame)
        await self.writer.drain()
        response = codec.parse_response(await self._line(self.reader, self.timeout, f"answer to {body}"), body)
        return response

    async def value(self, body: str, cls: int = 1) -> str:
        response = await self.ask(body, "?", cls)
        if response.error:
            raise PJLinkCommandError(body, response.error)
        return response.param

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError):
            await self.writer.wait_closed()


class PJLinkDriver(Driver[PJLinkConfig]):
    config_model = PJLinkConfig

    def __init__(self, config: PJLinkConfig) -> None:
        super().__init__(config)
        self.where = f"{config.id} (PJLink at {config.host}:{config.port})"
        self.outage = Outage(self.health, log, self.where)
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._limiter = LogLimiter()
        self.info: dict[str, Any] | None = None  # what the device said it is, as last emitted
        self._info_due = True
        self.pjlink_class = 1
        self._notified: list[Response] = []
        self._hub: _NotifyHub | None = None
        self._hub_ip: str | None = None

    def _password(self) -> str | None:
        path = self.config.password_file
        if path is None:
            return None
        lines = path.read_text(encoding="utf-8").splitlines()
        return lines[0].strip() if lines else ""

    async def _connect(self) -> PJLinkConnection:
        cfg = self.config
        return await PJLinkConnection.open(cfg.host, cfg.port, self._password(), cfg.timeout_s)

    async def run(self, emit: Emit) -> None:
        cfg = self.config
        backoff = Backoff(cfg.poll_interval_s, cfg.reconnect_max_s)
        if cfg.notify_port is not None:
            await self._listen(cfg.notify_port)
        while True:
            try:
                async with self._lock:
                    values, info = await self._poll()
            except PJLinkAuthError as exc:
                self.health.count("auth_failures")
                self.outage.down(str(exc), key="auth")
                self._info_due = True
                await self._pause(backoff)
                continue
            except PJLinkProtocolError as exc:
                self._garbled(str(exc))
                await self._pause(backoff)
                continue
            except (OSError, TimeoutError) as exc:
                self.outage.down(_why(exc), key=type(exc).__name__)
                self._info_due = True
                await self._pause(backoff)
                continue
            backoff.reset()
            self.outage.up()
            if info is not None and info != self.info:
                if await self._emit(emit, Event(cfg.id, "device_info", info)):
                    self.info = info
            if await self._emit(emit, Reading(cfg.id, values)):
                self.health.ok()
            self._log_notifications()
            await self._pause(None)

    async def _pause(self, backoff: Backoff | None) -> None:
        """Until the next poll is due, a notification or a command asks for one sooner."""
        delay = self.config.poll_interval_s if backoff is None else backoff.delay
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await self._wake.wait()
        if backoff is not None:
            backoff.delay = min(backoff.cap, backoff.delay * 2)
        self._wake.clear()

    async def _emit(self, emit: Emit, item: Reading | Event) -> bool:
        try:
            await emit(item)
        except Rejected as exc:
            self.health.count("rejected")
            log.warning("%s: %s rejected: %s", self.where, type(item).__name__.lower(), exc)
            return False
        return True

    def _garbled(self, message: str) -> None:
        self.health.count("garbled")
        self.health.error(f"{self.where}: {message}", offline=False)
        held = self._limiter.allow("garbled")
        if held is not None:
            log.warning("%s: %s; polling again%s", self.where, message,
                        f" ({held} more not logged)" if held else "")

    async def _poll(self) -> tuple[dict[str, Value], dict[str, Any] | None]:
        conn = await self._connect()
        try:
            values: dict[str, Value] = {}
            power = codec.parse_power(await conn.value("POWR"))  # the first command carries the password digest
            values["power"] = power
            values["power_on"] = power in (1, 3)
            info = await self._info(conn) if self._info_due else None
            await self._optional(conn, "INPT", lambda p: values.update(input=codec.parse_input(p)))
            await self._optional(conn, "AVMT", lambda p: values.update(zip(("video_mute", "audio_mute"),
                                                                           codec.parse_mute(p), strict=True)))
            await self._optional(conn, "ERST", lambda p: values.update(_errors(codec.parse_errors(p))))
            await self._optional(conn, "LAMP", lambda p: values.update(_lamps(codec.parse_lamps(p))))
            if self.pjlink_class >= 2:
                await self._optional(conn, "FILT", lambda p: values.update(
                    filter_hours=codec.parse_hours("FILT", p)), cls=2)
        finally:
            await conn.close()
        return values, info

    async def _optional(self, conn: PJLinkConnection, body: str, take: Callable[[str], object], cls: int = 1) -> None:
        """A query some devices do not answer (a flat panel has no lamp; none during warm-up): skipped, counted."""
        try:
            take(await conn.value(body, cls))
        except PJLinkCommandError as exc:
            if exc.code == "ERR4":
                self.health.count("device_errors")
                self.health.error(f"{self.where}: {exc}", offline=False)
            else:
                self.health.count(f"unanswered.{body}")

    async def _info(self, conn: PJLinkConnection) -> dict[str, Any]:
        info: dict[str, Any] = {"protocol": "pjlink", "host": self.config.host}
        for body, cls, key in INFO_QUERIES:
            with contextlib.suppress(PJLinkCommandError):
                info[key] = (await conn.value(body, cls)).strip()
        clss = str(info.get("pjlink_class", "1"))
        self.pjlink_class = 2 if clss == "2" else 1
        info["pjlink_class"] = self.pjlink_class
        if self.pjlink_class >= 2:
            for body, cls, key in INFO_QUERIES_2:
                with contextlib.suppress(PJLinkCommandError):
                    info[key] = (await conn.value(body, cls)).strip()
        self._info_due = False
        return info

    async def _listen(self, port: int) -> None:
        loop = asyncio.get_running_loop()
        try:
            addrs = await loop.getaddrinfo(self.config.host, None, family=socket.AF_INET)
            self._hub_ip = str(addrs[0][4][0])
            self._hub = await _NotifyHub.join(port, self._hub_ip, self._on_datagram)
        except OSError as exc:
            self.health.count("notify_unavailable")
            log.warning("%s: cannot listen for status notifications on UDP port %d: %s; polling only",
                        self.where, port, exc)

    def _on_datagram(self, data: bytes) -> None:
        try:
            response = codec.parse_notification(data)
        except PJLinkProtocolError as exc:
            self._garbled(f"status notification: {exc}")
            return
        self.health.count("notifications")
        self._notified.append(response)
        if response.body == "LKUP":
            self._info_due = True
        self._wake.set()

    def _log_notifications(self) -> None:
        """The notifications that led to this poll (its reading carries the new state)."""
        pending, self._notified = self._notified, []
        for response in pending:
            log.info("%s: status notification %s=%s", self.where, response.body, response.param)

    async def command(self, name: str, args: Mapping[str, Any]) -> Mapping[str, Any]:
        value = args.get("value")
        if name == "power":
            if value not in ("on", "off"):
                raise CommandError(f"{self.device_id}: power takes 'on' or 'off', not {value!r}")
            body, param, cls = "POWR", "1" if value == "on" else "0", 1
        elif name == "input":
            if not isinstance(value, str):
                raise CommandError(f"{self.device_id}: input takes a PJLink input code such as '31' (DIGITAL 1)")
            try:
                param = codec.parse_input(value.upper())
            except PJLinkProtocolError as exc:
                raise CommandError(f"{self.device_id}: {exc}") from None
            body, cls = "INPT", 2 if (self.pjlink_class >= 2 or not param[1].isdigit()) else 1
        else:
            raise CommandError(f"{self.device_id} (pjlink) accepts the commands power and input, not {name!r}")
        try:
            async with self._lock:
                conn = await self._connect()
                try:
                    response = await conn.ask(body, param, cls)
                finally:
                    await conn.close()
        except PJLinkAuthError as exc:
            self.health.count("auth_failures")
            raise CommandError(f"{self.where}: {exc}") from None
        except PJLinkProtocolError as exc:
            self._garbled(str(exc))
            raise CommandError(f"{self.where}: {exc}") from None
        except (OSError, TimeoutError) as exc:
            raise CommandError(f"{self.where}: {_why(exc)}") from None
        self._wake.set()  # poll now: the new state as telemetry
        if response.error:
            self.health.count("commands_refused")
            raise CommandError(f"{self.where} refused {name} {value}: {response.error} "
                               f"({codec.ERRORS[response.error]})")
        self.health.count("commands")
        return {"command": name, "value": value if name == "power" else param, "result": response.param}

    async def close(self) -> None:
        self.health.state = DeviceState.STOPPED
        if self._hub is not None and self._hub_ip is not None:
            self._hub.leave(self._hub_ip)
            self._hub = None


def _why(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return f"no answer ({exc})" if str(exc) else "no answer (timed out)"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused (is PJLink enabled in the device's network menu?)"
    return f"unreachable: {exc.strerror or exc}" if isinstance(exc, OSError) else str(exc)


def _errors(errors: dict[str, int]) -> dict[str, Value]:
    out: dict[str, Value] = {f"error_{name}": level for name, level in errors.items()}
    out["errors"] = max(errors.values())
    return out


def _lamps(lamps: list[tuple[int, bool]]) -> dict[str, Value]:
    if not lamps:
        return {}
    out: dict[str, Value] = {"lamp_hours": lamps[0][0], "lamp_on": lamps[0][1]}
    for i, (hours, _) in enumerate(lamps[1:], start=2):
        out[f"lamp{i}_hours"] = hours
    return out
